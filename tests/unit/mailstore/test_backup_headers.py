"""The headers `find` searches: the plain-block reading gives what the email parser gives."""
import random

import pytest

from mailstore.backup import headers


def _by_parser(data, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(headers, "_plain", lambda head: None)
        return headers.decode(data)


PLAIN = [
    b"From: Alice <alice@example.org>\nSubject: hello\nDate: Mon, 30 Nov 2026 10:00:00 +0100"
    b"\n\nbody\n",
    b"From: Alice <alice@example.org>\r\nSubject: hello\r\nDate: Mon, 30 Nov 2026 10:00:00"
    b" +0100\r\n\r\nbody\r\n",
    # folded, with the blanks after the colon and at the end of lines kept as the parser does
    b"Subject:   a long\n\tsubject  \n  folded twice\nfrom: \"Doe, J.\" <j@example.org>,\n"
    b" bob@example.net\nDATE:\tTue, 1 Dec 2026 08:00:00 GMT\n\nx",
    b"Subject:\r\n folded from an empty first line\r\nDate: \r\n\r\n",
    # encoded words, repeated headers (the first counts, From lists them all)
    b"Subject: =?iso-8859-1?q?Courrier_=E8lectronique?=\nSubject: second\nFrom: =?utf-8?b?w4lt"
    b"aWxl?= <e@example.org>\nFrom: other@example.org\n\n",
    b"Received: from x\n\tby y\nX-Empty:\nSubject: no date, no from\n\nbody",
    b"Date: not a date\nFrom: not an address\nSubject: =?bogus?q?x?=\n\n",
]

ODD = [
    b"", b"\n\nbody", b"no headers at all", b"Subject: no blank line and no end",
    b"Subject: only headers\n",
    b"From sender@example.org Mon Nov 30 10:00:00 2026\nSubject: mbox\n\nbody",
    b"Subject: a\nFrom x\nDate: Mon, 30 Nov 2026 10:00:00 +0100\n\n",
    b" continuation first\nSubject: a\n\n", b":no name\nSubject: a\n\n",
    b"Subject : space before the colon\nFrom: a@example.org\n\n",
    b"Subject: 8-bit \xe9t\xe9\nFrom: J\xf6rg <j@example.org>\n\n",
    b"Subject: lone\rCR\nFrom: a@example.org\n\n",
    b"Subject: mixed\r\nFrom: a@example.org\n\r\n\r\n",
    b"Subject: a\r\n\r\n\nbody", b"Subject: a\n\r\n\r\n",
    b"Subject: control \x00\x0b\x0c\x1c chars\nDate: Mon, 30 Nov 2026 10:00:00 +0100\n\n",
    b"Subject: body without separator\nthis line is not a header\n\n",
    b"Subject: " + b"x" * 70000 + b"\n\n",
]


@pytest.mark.parametrize("data", PLAIN + ODD)
def test_decode_is_what_the_parser_gives(data, monkeypatch):
    assert headers.decode(data) == _by_parser(data, monkeypatch)


@pytest.mark.parametrize("data", PLAIN)
def test_plain_blocks_are_not_parsed(data, monkeypatch):
    def refuse(head):
        raise AssertionError("parsed")
    monkeypatch.setattr(headers._parser, "parsebytes", refuse)
    assert headers.decode(data) != (None, None, None)


def test_decode_matches_the_parser_on_random_blocks(monkeypatch):
    rng = random.Random(7)
    names = [b"From", b"from", b"Subject", b"SUBJECT", b"Date", b"date", b"To", b"Received",
             b"X-Odd", b"From ", b" ", b"\t", b"", b"Sub ject", b"Dat\xe9"]
    values = [b"", b" ", b"plain text", b" Alice <a@example.org>", b"a@example.org, b@x.net",
              b"=?utf-8?q?caf=C3=A9?= and more", b"=?utf-8?b?w6k=?=", b"\xe9\xe8",
              b"Mon, 30 Nov 2026 10:00:00 +0100", b"Tue, 1 Dec 2026 08:00:00 GMT  ",
              b"\"Doe, J.\" <j@example.org>", b"x\x00y", b"tab\there"]
    ends = [b"\n", b"\n", b"\n", b"\r\n", b"\r\n", b"\r"]
    read_plain = []
    real_plain = headers._plain
    monkeypatch.setattr(headers, "_plain",
                        lambda head: read_plain.append(real_plain(head)) or read_plain[-1])
    for _ in range(3000):
        eol = rng.choice(ends[:3] if rng.random() < 0.4 else ends[3:5] if rng.random() < 0.6
                         else ends)
        lines = []
        for _ in range(rng.randint(0, 8)):
            line = rng.choice(names) + (b":" if rng.random() < 0.95 else b"") \
                + rng.choice(values)
            lines.append(line + (eol if rng.random() < 0.9 else rng.choice(ends)))
        data = b"".join(lines) + rng.choice([eol, b"", b"\n", b"\r\n"]) + b"body" + eol
        assert headers.decode(data) == _by_parser(data, monkeypatch), data
    # both ways were exercised
    assert 100 < sum(p is not None for p in read_plain) < 2900
