"""``mailstore check crl FILE...``: are the installed CRLs being kept fresh?

The CRL refresh job (cacert-crl-refresh, run by a systemd timer) rewrites every per-URL CRL
file on each successful run and leaves them alone when any download or check fails. A refresh
that keeps failing is silent to the users until the CRLs pass their nextUpdate: then OpenSSL
consumers (the self-service API) refuse every client certificate, or a revoked certificate
keeps working. This check notices it first.

Metrics:

- ``refresh_age`` (s): time since the oldest FILE was last written, i.e. since the refresh last
  succeeded for every CRL; thresholds ``-w/-c`` (default 3 h / 24 h, for an hourly timer).
- ``next_update`` (s): time left until the earliest nextUpdate among the FILEs; thresholds
  ``--next-update-warning/--next-update-critical`` (default warn under 6 h, critical when
  passed). A CRL without nextUpdate does not count.

A FILE that is missing or not a CRL is UNKNOWN naming it (the check cannot tell).
"""
import datetime
import os
import time

import nagiosplugin

from mailstore.checks.cert import load_crl, crl_next_update
from mailstore.checks.plugin import Headline

NAME = "CRL"
_UTC = datetime.timezone.utc
DEFAULTS = {"warning": "10800", "critical": "86400",
            "next_update_warning": "21600:", "next_update_critical": "0:"}


def _duration(seconds):
    seconds = abs(seconds)
    if seconds < 120:
        return "%d s" % seconds
    if seconds < 7200:
        return "%d min" % (seconds // 60)
    if seconds < 172800:
        return "%.1f h" % (seconds / 3600.0)
    return "%.1f days" % (seconds / 86400.0)


class Crls(nagiosplugin.Resource):
    def __init__(self, paths, now=None):
        if not paths:
            raise ValueError("give at least one CRL file")
        self.paths = list(paths)
        self.now = now
        self.notes = []

    @property
    def name(self):
        return NAME

    def probe(self):
        now = self.now if self.now is not None else time.time()
        oldest_path, oldest_mtime = None, None
        earliest_path, earliest = None, None
        for path in self.paths:
            mtime = os.stat(path).st_mtime   # OSError -> UNKNOWN naming the file
            crl = load_crl(path)             # not a CRL -> UNKNOWN naming the file
            if oldest_mtime is None or mtime < oldest_mtime:
                oldest_path, oldest_mtime = path, mtime
            due = crl_next_update(crl)
            if due is not None:
                due = due.timestamp()
                if earliest is None or due < earliest:
                    earliest_path, earliest = path, due
        age = max(0.0, now - oldest_mtime)
        self.notes.append("%d CRL%s, refreshed %s ago (oldest: %s)" % (
            len(self.paths), "" if len(self.paths) == 1 else "s", _duration(age),
            os.path.basename(oldest_path)))
        yield nagiosplugin.Metric("refresh_age", int(age), "s", min=0, context="refresh_age")
        if earliest is not None:
            left = earliest - now
            self.notes.append("next update %s %s (%s)" % (
                "due in" if left >= 0 else "was due", _duration(left) +
                ("" if left >= 0 else " ago"), os.path.basename(earliest_path)))
            yield nagiosplugin.Metric("next_update", int(left), "s", context="next_update")

    def headline(self):
        return "; ".join(self.notes)


def make_check(paths, warning=DEFAULTS["warning"], critical=DEFAULTS["critical"],
               next_update_warning=DEFAULTS["next_update_warning"],
               next_update_critical=DEFAULTS["next_update_critical"], now=None):
    crls = Crls(paths, now=now)
    return nagiosplugin.Check(
        crls,
        nagiosplugin.ScalarContext("refresh_age", warning, critical,
                                   fmt_metric="last successful refresh {value} s ago"),
        nagiosplugin.ScalarContext("next_update", next_update_warning, next_update_critical,
                                   fmt_metric="{value} s until the earliest nextUpdate"),
        Headline(crls.headline))
