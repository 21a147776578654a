"""check mailq: a fake `postqueue` prints what the real `postqueue -j` prints.

A stand-in on purpose: these tests need queues of a chosen size and messages of a chosen age
(a day-old deferred message), which a real queue cannot be given in a test. The entries have
the fields and shape Postfix 3.7's `postqueue -j` prints; that output itself, from a real
Postfix instance, is tested in tests/integration/test_check_mailq_postfix.py.
"""
import json
import os
import time

import pytest

from check_fixtures import check, perfdata



def entry(queue, age, qid="4A1B2C3D4E", recipients=1, reason=None):
    """One line of `postqueue -j` (Postfix 3.x, postqueue(1): one JSON object per message)."""
    rcpts = []
    for i in range(recipients):
        r = {"address": "user%d@example.org" % i}
        if reason:
            r["delay_reason"] = reason
        rcpts.append(r)
    return {"queue_name": queue, "queue_id": qid, "arrival_time": int(time.time()) - age,
            "message_size": 2345, "forced_expire": False, "sender": "alice@cacert.test",
            "recipients": rcpts}


def fake_postqueue(tmp_path, entries=(), stdout=None, stderr="", status=0, sleep=0):
    data = tmp_path / "queue.json"
    data.write_text(stdout if stdout is not None else
                    "".join(json.dumps(e) + "\n" for e in entries))
    script = tmp_path / "postqueue"
    script.write_text("#!/bin/sh\n"
                      '[ "$1" = "-j" ] || { echo "usage: postqueue -j" >&2; exit 64; }\n'
                      "sleep %s\ncat '%s'\nprintf '%%s' '%s' >&2\nexit %d\n"
                      % (sleep, data, stderr, status))
    os.chmod(str(script), 0o755)
    return str(script)


def test_empty_queue_is_ok(tmp_path):
    code, line, m = check("mailq", "--postqueue", fake_postqueue(tmp_path))
    assert code == 0 and "0 queued" in line
    perf = perfdata(m)
    assert perf["queue"][:4] == (0, "", "100", "500")
    assert perf["oldest_deferred"][:4] == (0, "s", "21600", "86400")


def test_counts_by_queue_and_oldest_deferred(tmp_path):
    entries = ([entry("active", 5, "A%d" % i) for i in range(3)]
               + [entry("deferred", 3600, "D1", reason="connect to x: Connection timed out"),
                  entry("deferred", 7200, "D2", recipients=3, reason="4.2.2 mailbox full"),
                  entry("hold", 999999, "H1"), entry("incoming", 1, "I1")])
    code, line, m = check("mailq", "--postqueue", fake_postqueue(tmp_path, entries))
    assert code == 0, line
    perf = perfdata(m)
    assert perf["queue"][0] == 7
    assert (perf["active"][0], perf["deferred"][0], perf["hold"][0]) == (3, 2, 1)
    assert 7200 <= perf["oldest_deferred"][0] < 7260    # hold is not "deferred"
    assert "oldest deferred 2h00m old" in line


@pytest.mark.parametrize("count, code", [(100, 0), (101, 1), (500, 1), (501, 2)])
def test_queue_size_edges(tmp_path, count, code):
    entries = [entry("active", 1, "Q%d" % i) for i in range(count)]
    got, line, m = check("mailq", "--postqueue", fake_postqueue(tmp_path, entries))
    assert got == code, line


@pytest.mark.parametrize("age, code", [(21500, 0), (21700, 1), (86300, 1), (86500, 2)])
def test_oldest_deferred_age_edges(tmp_path, age, code):
    got, line, m = check("mailq", "--postqueue",
                         fake_postqueue(tmp_path, [entry("deferred", age, reason="x")]))
    assert got == code, line
    if code:
        assert "oldest deferred message" in line


def test_custom_ranges(tmp_path):
    pq = fake_postqueue(tmp_path, [entry("deferred", 600, reason="x")] * 3)
    assert check("mailq", "--postqueue", pq, "-w", "2", "-c", "10")[0] == 1
    assert check("mailq", "--postqueue", pq, "-w", "1", "-c", "2")[0] == 2
    assert check("mailq", "--postqueue", pq, "--age-warning", "300")[0] == 1
    assert check("mailq", "--postqueue", pq, "--age-warning", "@0:3600")[0] == 1


def test_mail_system_down_is_unknown_with_postfix_message(tmp_path):
    pq = fake_postqueue(tmp_path, stdout="", status=69,
                        stderr="postqueue: fatal: Queue report unavailable - mail system is down")
    code, line, m = check("mailq", "--postqueue", pq)
    assert code == 3 and "mail system is down" in line and "exit 69" in line


def test_garbage_is_unknown(tmp_path):
    code, line, m = check("mailq", "--postqueue",
                          fake_postqueue(tmp_path, stdout="-Queue ID-  --Size--\n"))
    assert code == 3 and "not JSON" in line
    code, line, m = check("mailq", "--postqueue", fake_postqueue(tmp_path, stdout="[1]\n"))
    assert code == 3 and "no queue_name" in line


def test_missing_command_is_unknown(tmp_path):
    code, line, m = check("mailq", "--postqueue", tmp_path / "no-postqueue")
    assert code == 3 and "command not found" in line


def test_hanging_postqueue_hits_the_timeout(tmp_path):
    started = time.monotonic()
    code, line, m = check("mailq", "--postqueue", fake_postqueue(tmp_path, sleep=10), "-t", "1")
    assert code == 3 and "1s" in line
    assert time.monotonic() - started < 5


def test_held_file_is_critical_with_its_line(tmp_path):
    """The migration's mail-quiesce left delivery held (files/migration/): CRITICAL, saying
    why and what to do, even though the queue itself looks harmless."""
    held = tmp_path / "delivery-held"
    held.write_text("only alice of alice, bob cut over to /srv/mail | fix, deploy again\n")
    old = time.time() - 7200
    os.utime(str(held), (old, old))
    pq = fake_postqueue(tmp_path, [entry("deferred", 60, reason="deferred transport")])
    code, line, m = check("mailq", "--postqueue", pq, "--held", held)
    assert code == 2, line
    assert "delivery held for 2h00m" in line and "only alice of alice, bob cut over" in line
    assert "/ fix, deploy again" in line            # a | would start the perfdata
    assert "1 queued" in line


def test_no_held_file_changes_nothing(tmp_path):
    code, line, m = check("mailq", "--postqueue", fake_postqueue(tmp_path),
                          "--held", tmp_path / "delivery-held")
    assert code == 0 and "0 queued" in line and "held" not in line
