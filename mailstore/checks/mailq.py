"""``mailstore check mailq``: Postfix queue size and age of the oldest deferred message.

Reads ``postqueue -j`` (Postfix >= 3.1): one JSON object per queued message, e.g.
``{"queue_name": "deferred", "queue_id": "4D4F2...", "arrival_time": 1700000000,
"message_size": 1234, "sender": "...", "recipients": [{"address": "...",
"delay_reason": "..."}]}``. Any user may run it (``authorized_mailq_users`` defaults to
anyone), so the agent's own user is enough.

Metrics: ``queue`` (all messages; ``-w/-c``), ``deferred``, ``active``, ``hold`` (perfdata),
``oldest_deferred`` (seconds; ``--age-warning/--age-critical``; 0 when none is deferred).
``postqueue`` failing (Postfix down: "mail system is down") or printing something that is not
this JSON is UNKNOWN with postqueue's own message.

``--held FILE``: the file the migration's mail-quiesce writes while it holds delivery on
purpose (``defer_transports``, Dovecot stopped) and mail-resume removes (files/migration/).
While it exists the check is CRITICAL with the file's one line, which says what the operator
does next: a migration that stopped half-way (some users cut over, or the deploy failed before
Dovecot read the new root) would otherwise defer all mail silently until the age threshold
(a day) noticed it.
"""
import os
import json
import subprocess
import time

import nagiosplugin

from mailstore.checks.plugin import Fact, Headline

NAME = "MAILQ"
QUEUES = ("active", "deferred", "hold", "incoming", "maildrop")


def read_queue(postqueue="postqueue", timeout=None):
    """The parsed ``postqueue -j`` entries (list of dicts)."""
    try:
        proc = subprocess.run([postqueue, "-j"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, timeout=timeout or None)
    except FileNotFoundError:
        raise nagiosplugin.CheckError("%s: command not found" % postqueue)
    except PermissionError:
        raise nagiosplugin.CheckError("%s: permission denied" % postqueue)
    except subprocess.TimeoutExpired:
        raise nagiosplugin.CheckError("%s -j did not answer within %ss" % (postqueue, timeout))
    if proc.returncode != 0:
        why = proc.stderr.decode("utf-8", "replace").strip() or "no message"
        raise nagiosplugin.CheckError("%s -j failed (exit %d): %s"
                                      % (postqueue, proc.returncode, why))
    entries = []
    for number, line in enumerate(proc.stdout.decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError as e:
            raise nagiosplugin.CheckError("%s -j line %d is not JSON (%s): %.60s"
                                          % (postqueue, number, e, line))
        if not isinstance(entry, dict) or "queue_name" not in entry:
            raise nagiosplugin.CheckError("%s -j line %d has no queue_name: %.60s"
                                          % (postqueue, number, line))
        entries.append(entry)
    return entries


class Queue(nagiosplugin.Resource):
    def __init__(self, postqueue="postqueue", timeout=None, now=None):
        self.postqueue = postqueue
        self.timeout = timeout
        self.now = now
        self.summary = ""

    @property
    def name(self):
        return NAME

    def probe(self):
        entries = read_queue(self.postqueue, self.timeout)
        now = self.now if self.now is not None else time.time()
        counts = {q: 0 for q in QUEUES}
        oldest = None
        for entry in entries:
            queue = entry.get("queue_name")
            counts[queue] = counts.get(queue, 0) + 1
            arrival = entry.get("arrival_time")
            if queue == "deferred" and isinstance(arrival, (int, float)):
                oldest = arrival if oldest is None else min(oldest, arrival)
        age = max(0, int(now - oldest)) if oldest is not None else 0
        self.summary = "%d queued (%d deferred, %d active, %d hold)" % (
            len(entries), counts["deferred"], counts["active"], counts["hold"])
        if oldest is not None:
            self.summary += ", oldest deferred %s old" % _duration(age)
        yield nagiosplugin.Metric("queue", len(entries), min=0, context="queue")
        for queue in ("active", "deferred", "hold"):
            yield nagiosplugin.Metric(queue, counts[queue], min=0, context="count")
        yield nagiosplugin.Metric("oldest_deferred", age, "s", min=0, context="oldest_deferred")

    def headline(self):
        return self.summary


class Held(nagiosplugin.Resource):
    """Is delivery held on purpose (the held FILE exists), since when, and why."""

    def __init__(self, path, now=None):
        self.path = path
        self.now = now

    @property
    def name(self):
        return NAME

    def probe(self):
        try:
            with open(self.path, "rb") as f:
                line = f.readline(1000).decode("utf-8", "replace")
                since = os.fstat(f.fileno()).st_mtime
        except FileNotFoundError:
            yield nagiosplugin.Metric("held", (True, ""), context="held")
            return
        now = self.now if self.now is not None else time.time()
        why = " ".join(line.split()).replace("|", "/") or "(no reason given)"
        yield nagiosplugin.Metric(
            "held", (False, "delivery held for %s (%s): %s"
                     % (_duration(max(0, int(now - since))), self.path, why)), context="held")


def _duration(seconds):
    if seconds < 3600:
        return "%dm" % (seconds // 60)
    if seconds < 86400:
        return "%dh%02dm" % (seconds // 3600, seconds % 3600 // 60)
    return "%dd%02dh" % (seconds // 86400, seconds % 86400 // 3600)


def make_check(postqueue="postqueue", warning="100", critical="500", age_warning="21600",
               age_critical="86400", timeout=None, now=None, held=None):
    queue = Queue(postqueue, timeout, now)
    resources = [queue] + ([Held(held, now)] if held else [])
    return nagiosplugin.Check(
        *resources,
        Fact("held"),
        nagiosplugin.ScalarContext("queue", warning, critical,
                                   fmt_metric="{value} messages queued"),
        nagiosplugin.ScalarContext("count"),
        nagiosplugin.ScalarContext("oldest_deferred", age_warning, age_critical,
                                   fmt_metric="oldest deferred message is {value}s old"),
        Headline(queue.headline))
