"""The three headers `find` searches, decoded at backup time (pyzmail36 does the decoding).

A first backup decodes the headers of every message, so the header block is not given to
the email package's parser when it need not be: for the plain case (ASCII, LF or CRLF line ends,
every line a header or its continuation) the raw values of From, Subject and Date are cut out with
one regular expression, exactly as the parser (compat32, which ends lines at CR, LF or CRLF) would give them; anything else goes
through the parser. Either way the same pyzmail and email.utils calls decode the values, so
the results are the same (tests/unit/mailstore/test_backup_headers.py compares the two).
"""
import email.parser
import email.policy
import email.utils
import re

from pyzmail.parse import decode_mail_header, get_mail_addresses

# Headers longer than this are not worth parsing for a search index.
_HEADER_LIMIT = 64 * 1024
_parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)

# The plain header block: lines that the parser's headerRE takes for a header (a name of
# printable characters but ':', then ':') or a continuation (space or tab first), each ended
# by LF. The parser ends its header section at the first line that is neither; such a block
# (and one with a "From " line, a line without a name, or a continuation first) goes to it.
_PLAIN_BLOCK = re.compile(rb"(?:[\x21-\x39\x3b-\x7e]+:[^\n]*\n|[ \t][^\n]*\n)*")
# A From, Subject or Date line and its continuation lines, in a plain block.
_WANTED = re.compile(rb"^(from|subject|date):[ \t]*([^\n]*\n(?:[ \t][^\n]*\n)*)",
                     re.IGNORECASE | re.MULTILINE)


class _Plain:
    """The part of email.message.Message that decode() uses, for a plain header block."""

    __slots__ = ("_values",)

    def __init__(self, values):
        self._values = values          # lower-case name -> raw values, in order

    def get(self, name, failobj=None):
        got = self._values.get(name.lower())
        return got[0] if got else failobj

    def get_all(self, name, failobj=None):
        return list(self._values.get(name.lower(), ())) or failobj


def _plain(head):
    """A _Plain of `head` if it is a plain header block, else None."""
    # decode() cuts a CRLF block after its last line's CR; one with CRLF line ends only is
    # read as LF, and its values get their CRLFs back
    crlf = head.endswith(b"\r")
    if crlf:
        lines = head.count(b"\n")
        if head.count(b"\r\n") != lines or head.count(b"\r") != lines + 1:
            return None
        head = head[:-1].replace(b"\r\n", b"\n") + b"\n"
    if not head.endswith(b"\n") or not head.isascii() or b"\r" in head \
            or head[:1] in (b" ", b"\t") or b"\nFrom " in head or head.startswith(b"From ") \
            or _PLAIN_BLOCK.fullmatch(head) is None:
        return None
    values = {}
    for name, value in _WANTED.findall(head):
        # compat32's header_source_parse: the value without the blanks after the colon, the
        # continuation lines with their line ends, then the last line end removed
        value = value.decode("ascii").rstrip("\n")
        values.setdefault(name.lower().decode("ascii"), []).append(
            value.replace("\n", "\r\n") if crlf else value)
    return _Plain(values)


def decode(data):
    """(From, Subject, Date as unix time) of a message; any of them None when absent or bad.

    Never raises: a message with broken headers is still backed up, just harder to find.
    """
    # the header block ends at the first empty line, LF or CRLF. The CRLF one is looked for
    # first: a search for LF LF through CRLF text stops at every line end (tens of
    # microseconds through a message), then only up to it.
    crlf = data.find(b"\r\n\r\n", 0, _HEADER_LIMIT)
    lf = data.find(b"\n\n", 0, crlf + 1 if crlf >= 0 else _HEADER_LIMIT)
    ends = [i for i in (lf, crlf) if i >= 0]
    head = data[:min(ends) + 1] if ends else data[:_HEADER_LIMIT]
    msg = _plain(head)
    if msg is None:
        try:
            msg = _parser.parsebytes(head)
        except Exception:
            return None, None, None
    sender = subject = date = None
    try:
        addresses = get_mail_addresses(msg, "from")
        if addresses:
            sender = ", ".join("{} <{}>".format(n, a) if n else a for n, a in addresses)
    except Exception:
        sender = None
    try:
        raw = msg.get("subject")
        if raw is not None:
            subject = decode_mail_header(str(raw)).strip()
    except Exception:
        subject = None
    try:
        raw = msg.get("date")
        if raw is not None:
            date = int(email.utils.parsedate_to_datetime(str(raw)).timestamp())
    except Exception:
        date = None
    return sender, subject, date
