"""``mailstore check backup-copy DIR``: is the off-host copy of the backup recent and verified?

Runs on the backup host, where the nightly copy job (operations/backup_host.py) keeps one
directory per night in DIR and records its last result in ``DIR/state.json``:
``{"copy", "copied", "seconds", "files_transferred", "bytes_received", "copies", "verified",
"verify_ok"}`` (times in unix seconds). Only that file is read: no catalog, no key (the
copies of an encrypted repository hold their catalog sealed: mailstore/backup/offhost.py).

- ``age``: seconds since the last copy ended (``-w 93600 -c 180000``: one missed night warns,
  two are critical). No state file (no copy made yet) is CRITICAL.
- last verify of a copy: failed is CRITICAL; ``verify_age`` seconds since it ran
  (``--verify-warning 180000``).
- ``copies``: copies kept (``--copies-critical 1:``), ``bytes``: received by the last copy.
An unreadable or malformed state file is UNKNOWN.
"""
import json
import os
import time

import nagiosplugin

from mailstore.checks.plugin import Fact, Headline

NAME = "BACKUP COPY"
STATE = "state.json"


def read_state(directory):
    """The copy job's state in `directory` as a dict, None if it has made no copy yet."""
    path = os.path.join(directory, STATE)
    if not os.path.isdir(directory):
        raise nagiosplugin.CheckError("%s is not a directory" % directory)
    try:
        with open(path) as f:
            state = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise nagiosplugin.CheckError("cannot read %s: %s" % (path, e))
    if not isinstance(state, dict) or not isinstance(state.get("copied"), (int, float)) \
            or not isinstance(state.get("verify_ok"), bool):
        raise nagiosplugin.CheckError("%s is malformed (no copied time or verify_ok)" % path)
    return state


def _ago(seconds):
    if seconds < 3600:
        return "%dm ago" % (seconds // 60)
    if seconds < 2 * 86400:
        return "%.1fh ago" % (seconds / 3600.0)
    return "%.1fd ago" % (seconds / 86400.0)


class BackupCopy(nagiosplugin.Resource):
    def __init__(self, directory, now=None):
        self.directory = directory
        self.now = now
        self.notes = []

    @property
    def name(self):
        return NAME

    def probe(self):
        state = read_state(self.directory)
        now = self.now if self.now is not None else time.time()
        if state is None:
            yield nagiosplugin.Metric("made", (False, "no copy in %s yet" % self.directory),
                                      context="made")
            return
        age = max(0, int(now - state["copied"]))
        self.notes.append("copy %s %s" % (state.get("copy") or "?", _ago(age)))
        yield nagiosplugin.Metric("age", age, "s", min=0, context="age")
        if isinstance(state.get("copies"), int):
            yield nagiosplugin.Metric("copies", state["copies"], min=0, context="copies")
        if isinstance(state.get("bytes_received"), int):
            yield nagiosplugin.Metric("bytes", state["bytes_received"], "B", min=0,
                                      context="bytes")
        verified = state.get("verified")
        if not isinstance(verified, (int, float)):
            yield nagiosplugin.Metric("verified", (False, "never verified"), context="never")
            return
        vage = max(0, int(now - verified))
        yield nagiosplugin.Metric("verified", (state["verify_ok"], "verify of copy %s (%s) "
                                               "FAILED" % (state.get("copy"), _ago(vage))),
                                  context="verify")
        yield nagiosplugin.Metric("verify_age", vage, "s", min=0, context="verify_age")
        if state["verify_ok"]:
            self.notes.append("verified %s" % _ago(vage))

    def headline(self):
        return ", ".join(self.notes)


def make_check(directory, warning="93600", critical="180000", verify_warning="180000",
               verify_critical=None, copies_warning=None, copies_critical="1:", now=None):
    resource = BackupCopy(directory, now)
    return nagiosplugin.Check(
        resource,
        nagiosplugin.ScalarContext("age", warning, critical,
                                   fmt_metric="last copy is {value}s old"),
        nagiosplugin.ScalarContext("copies", copies_warning, copies_critical,
                                   fmt_metric="{value} copies"),
        nagiosplugin.ScalarContext("verify_age", verify_warning, verify_critical,
                                   fmt_metric="last verify is {value}s old"),
        nagiosplugin.ScalarContext("bytes"),
        Fact("made"), Fact("verify"), Fact("never", bad_state=nagiosplugin.Warn),
        Headline(resource.headline))
