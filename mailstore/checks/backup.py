"""``mailstore check backup --repo REPO [--key-file F]``: is there a recent, sound backup?

Asks :func:`mailstore.backup.status` (catalog only: cheap, no lock, no data read):

- ``age``: seconds since the last complete snapshot finished (``-w 93600 -c 180000``: a
  nightly job that missed one night warns, two nights is critical). No complete snapshot at
  all is CRITICAL.
- ``snapshots``: number of complete snapshots (``--snapshots-critical 1:``).
- last verify: a verify that found damaged objects is CRITICAL (``damaged`` perfdata);
  ``verify_age`` seconds since it ran (``--verify-warning 691200``, eight days); never
  verified is WARNING.
- damaged snapshots (found by a verify or a run, ``status()["damaged_snapshots"]``): the
  newest snapshot damaged is CRITICAL (nothing new restorable since); an older damaged one
  still in the repository is WARNING (remove it with ``mailstore backup forget``).
A repository that cannot be read (missing, not a repository, bad key) is UNKNOWN.
"""
import time

import nagiosplugin

from mailstore.checks.plugin import Fact, Headline

NAME = "BACKUP"


def _status(repo, key_file):
    # imported here: the check must answer UNKNOWN (not crash) if the backup code is broken
    from mailstore import backup
    try:
        return backup.status(repo, key_file=key_file)
    except backup.BackupError as e:
        raise nagiosplugin.CheckError(str(e))


def _ago(seconds):
    if seconds < 3600:
        return "%dm ago" % (seconds // 60)
    if seconds < 2 * 86400:
        return "%.1fh ago" % (seconds / 3600.0)
    return "%.1fd ago" % (seconds / 86400.0)


class Backup(nagiosplugin.Resource):
    def __init__(self, repo, key_file=None, now=None):
        self.repo = repo
        self.key_file = key_file
        self.now = now
        self.notes = []

    @property
    def name(self):
        return NAME

    def probe(self):
        st = _status(self.repo, self.key_file)
        now = self.now if self.now is not None else time.time()
        yield nagiosplugin.Metric("snapshots", int(st["snapshots"]), min=0, context="snapshots")
        last = st.get("last_complete")
        if last is None:
            yield nagiosplugin.Metric("complete", (False, "no complete snapshot in %s"
                                                   % self.repo), context="complete")
        else:
            age = max(0, int(now - last))
            self.notes.append("last snapshot %s %s" % (st.get("last_snapshot_id") or "?",
                                                       _ago(age)))
            yield nagiosplugin.Metric("age", age, "s", min=0, context="age")
        self.notes.append("%d snapshots" % st["snapshots"])
        damaged = st.get("damaged_snapshots") or []
        newest = [d["id"] for d in damaged if d["newest"]]
        older = [d["id"] for d in damaged if not d["newest"]]
        yield nagiosplugin.Metric("newest_intact", (not newest, "newest snapshot %s is damaged"
                                                    % ", ".join(newest)),
                                  context="newest_intact")
        yield nagiosplugin.Metric("older_intact", (not older, "damaged snapshot(s) %s (remove "
                                                   "with `mailstore backup forget`)"
                                                   % ", ".join(older)), context="older_intact")

        verify = st.get("last_verify")
        if verify is None:
            yield nagiosplugin.Metric("verified", (False, "never verified"), context="never")
            return
        vage = max(0, int(now - verify["time"]))
        damaged = int(verify.get("damaged") or 0)
        good = bool(verify.get("ok"))
        yield nagiosplugin.Metric("verified", (good, "last verify (%s) found %d damaged "
                                               "object(s)" % (_ago(vage), damaged)),
                                  context="verify")
        yield nagiosplugin.Metric("damaged", damaged, min=0, context="damaged")
        yield nagiosplugin.Metric("verify_age", vage, "s", min=0, context="verify_age")
        if good:
            self.notes.append("verified %s" % _ago(vage))

    def headline(self):
        return ", ".join(self.notes)


def make_check(repo, key_file=None, warning="93600", critical="180000",
               verify_warning="691200", verify_critical=None, snapshots_warning=None,
               snapshots_critical="1:", now=None):
    resource = Backup(repo, key_file, now)
    return nagiosplugin.Check(
        resource,
        nagiosplugin.ScalarContext("age", warning, critical,
                                   fmt_metric="last complete snapshot is {value}s old"),
        nagiosplugin.ScalarContext("snapshots", snapshots_warning, snapshots_critical,
                                   fmt_metric="{value} snapshots"),
        nagiosplugin.ScalarContext("verify_age", verify_warning, verify_critical,
                                   fmt_metric="last verify is {value}s old"),
        nagiosplugin.ScalarContext("damaged"),
        Fact("complete"), Fact("verify"), Fact("never", bad_state=nagiosplugin.Warn),
        Fact("newest_intact"), Fact("older_intact", bad_state=nagiosplugin.Warn),
        Headline(resource.headline))
