"""``mailstore check volume PATH``: free space and free inodes of the filesystem holding PATH.

Metrics (all "free" means available to unprivileged writers, ``f_bavail``/``f_favail``:
Dovecot and Postfix deliver as ordinary users, the root reserve is not theirs):

- ``space_free_pct`` (%), thresholds ``-w/-c`` (default 10: / 5:, i.e. warn under 10 %)
- ``inodes_free_pct`` (%), thresholds ``-W/-K`` (default 10: / 5:) — one inode per message
- ``space_free`` (B) and ``inodes_free`` (count), optional absolute thresholds

A filesystem without an inode count (btrfs, some FUSE) reports no inode metrics.
"""
import os

import nagiosplugin

from mailstore.checks.plugin import Headline

NAME = "VOLUME"
DEFAULTS = {"space_warning": "10:", "space_critical": "5:",
            "inodes_warning": "10:", "inodes_critical": "5:"}


def _human(n):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= 1024.0


class Volume(nagiosplugin.Resource):
    def __init__(self, path):
        self.path = path
        self.facts = None

    @property
    def name(self):
        return NAME

    def probe(self):
        st = os.statvfs(self.path)   # OSError -> UNKNOWN naming the path
        if not st.f_blocks:
            raise nagiosplugin.CheckError(
                "%s: filesystem reports no size (not a disk filesystem?)" % self.path)
        size = st.f_blocks * st.f_frsize
        free = st.f_bavail * st.f_frsize
        pct = 100.0 * st.f_bavail / st.f_blocks
        self.facts = {"size": size, "free": free, "pct": pct,
                      "inodes": st.f_files, "ifree": st.f_favail}
        yield nagiosplugin.Metric("space_free_pct", round(pct, 2), "%", min=0, max=100,
                                  context="space_free_pct")
        yield nagiosplugin.Metric("space_free", free, "B", min=0, max=size,
                                  context="space_free")
        if st.f_files:
            ipct = 100.0 * st.f_favail / st.f_files
            self.facts["ipct"] = ipct
            yield nagiosplugin.Metric("inodes_free_pct", round(ipct, 2), "%", min=0, max=100,
                                      context="inodes_free_pct")
            yield nagiosplugin.Metric("inodes_free", st.f_favail, min=0, max=st.f_files,
                                      context="inodes_free")

    def headline(self):
        f = self.facts
        text = "%s: %s free of %s (%.1f%%)" % (self.path, _human(f["free"]), _human(f["size"]),
                                               f["pct"])
        if "ipct" in f:
            text += ", %d inodes free (%.1f%%)" % (f["ifree"], f["ipct"])
        return text


def make_check(path, space_warning=DEFAULTS["space_warning"],
               space_critical=DEFAULTS["space_critical"],
               inodes_warning=DEFAULTS["inodes_warning"],
               inodes_critical=DEFAULTS["inodes_critical"],
               bytes_warning=None, bytes_critical=None,
               ifree_warning=None, ifree_critical=None):
    volume = Volume(path)
    return nagiosplugin.Check(
        volume,
        nagiosplugin.ScalarContext("space_free_pct", space_warning, space_critical,
                                   fmt_metric="free space {valueunit}"),
        nagiosplugin.ScalarContext("space_free", bytes_warning, bytes_critical,
                                   fmt_metric="free space {value} B"),
        nagiosplugin.ScalarContext("inodes_free_pct", inodes_warning, inodes_critical,
                                   fmt_metric="free inodes {valueunit}"),
        nagiosplugin.ScalarContext("inodes_free", ifree_warning, ifree_critical,
                                   fmt_metric="free inodes {value}"),
        Headline(volume.headline))
