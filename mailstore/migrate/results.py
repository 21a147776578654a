"""What a migration reports, and the checks that refuse one before anything changes.

``UserResult`` is one user's outcome (and the shape of one entry of ``--json``),
``MigrationResult`` the whole run's; ``MigrateError`` is raised when a run cannot start
(``check_roots``: bad roots); ``anomaly_lines``/``diff_lines`` turn what a scan skipped and
what a comparison found into the report's lines.
"""
import os
import stat
from typing import Dict, List, NamedTuple, Optional

from mailstore import maildir


class MigrateError(Exception):
    """The migration cannot start (bad roots, bad user names): nothing was changed."""


class UserResult:
    """What happened to one user (also the shape of one entry of the --json summary)."""

    def __init__(self, user: str, mode: str):
        self.user = user
        self.mode = mode              # copy | rename | already-migrated | refused | failed
        self.messages = 0
        self.bytes = 0
        self.copied_messages = 0
        self.copied_bytes = 0
        self.renamed = 0
        self.deleted = 0
        self.verified = False
        self.done = False
        self.differences: List[str] = []
        self.errors: List[str] = []
        self.anomalies: List[str] = []

    @property
    def ok(self) -> bool:
        return (self.mode in ("already-migrated",) or
                (self.done and self.verified and not self.errors and not self.anomalies
                 and not self.differences))

    def as_dict(self) -> dict:
        return {"user": self.user, "mode": self.mode, "ok": self.ok, "messages": self.messages,
                "bytes": self.bytes, "copied_messages": self.copied_messages,
                "copied_bytes": self.copied_bytes, "renamed_messages": self.renamed,
                "deleted_messages": self.deleted, "verified": self.verified,
                "differences": self.differences, "errors": self.errors,
                "anomalies": self.anomalies}


class HookResult(NamedTuple):
    command: str
    exit: int


class MigrationResult:
    def __init__(self, source_root: str, target_root: str, dry_run: bool):
        self.source_root, self.target_root, self.dry_run = source_root, target_root, dry_run
        self.same_filesystem = False
        self.users: List[UserResult] = []
        self.hooks: Dict[str, Optional[HookResult]] = {"quiesce": None, "resume": None}
        self.error: Optional[str] = None
        self.seconds = 0.0
        # wall time per phase; "cutover" is how long delivery was deferred minus the hooks,
        # "cutover.delta"/".sync"/".verify" its parts
        self.phases: Dict[str, float] = {}

    @property
    def ok(self) -> bool:
        hooks_ok = all(h is None or h.exit == 0 for h in self.hooks.values())
        if self.dry_run:       # the plan can be carried out
            return self.error is None and not any(u.errors for u in self.users)
        return self.error is None and hooks_ok and all(u.ok for u in self.users)

    def as_dict(self) -> dict:
        return {"ok": self.ok, "dry_run": self.dry_run, "source_root": self.source_root,
                "target_root": self.target_root, "same_filesystem": self.same_filesystem,
                "error": self.error, "seconds": round(self.seconds, 3),
                "phases": {k: round(v, 3) for k, v in self.phases.items()},
                "hooks": {k: (v._asdict() if v else None) for k, v in self.hooks.items()},
                "totals": {"users": len(self.users),
                           "messages": sum(u.messages for u in self.users),
                           "bytes": sum(u.bytes for u in self.users),
                           "copied_messages": sum(u.copied_messages for u in self.users),
                           "copied_bytes": sum(u.copied_bytes for u in self.users)},
                "users": [u.as_dict() for u in self.users]}


def check_roots(source_root: str, target_root: str, target_may_be_missing: bool = False
                ) -> bool:
    """Validate both roots; return True when they are on the same file system.

    ``target_may_be_missing``: a target root that does not exist yet is fine when its parent
    is a directory (the migration makes it, as `cp -a` and `rsync` do); it then lies on the
    parent's file system."""
    target_dir = target_root
    if target_may_be_missing and not os.path.lexists(target_root):
        target_dir = os.path.dirname(os.path.abspath(target_root))
        if not os.path.isdir(target_dir):
            raise MigrateError("target root %s: its parent directory %s does not exist"
                               % (target_root, target_dir))
    for name, path in (("source", source_root), ("target", target_dir)):
        try:
            st = os.stat(path)
        except OSError as e:
            raise MigrateError("%s root %s: %s" % (name, path, e.strerror or e))
        if not stat.S_ISDIR(st.st_mode):
            raise MigrateError("%s root %s is not a directory" % (name, path))
    src, dst = os.path.realpath(source_root), os.path.realpath(target_root)
    if src == dst or dst.startswith(src.rstrip("/") + "/") or src.startswith(dst.rstrip("/") + "/"):
        raise MigrateError("source %s and target %s overlap" % (source_root, target_root))
    return os.stat(source_root).st_dev == os.stat(target_dir).st_dev


def anomaly_lines(tree: maildir.UserTree) -> List[str]:
    return ["%s: %s (%s)" % (a.relpath, a.kind, a.detail) for a in tree.anomalies
            if a.kind != "vanished"]


def diff_lines(diffs) -> List[str]:
    return ["%s: %s" % (d.relpath, d.problem) for d in diffs]
