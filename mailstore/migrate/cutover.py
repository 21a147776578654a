"""The cut-over: what runs while delivery is deferred.

For each copied user a final pass (the source looked at again, only what changed since the
live copy; plan; execute), then the target file system is flushed while every user is
verified (mailstore.migrate.verify). A user on the same file system whose target does not
exist yet is instead moved with one rename(2) of the user directory (``rename_user``).
"""
import os
import time
from typing import Dict, List, Optional

from mailstore import maildir
from mailstore.migrate import delta as md
from mailstore.migrate import execute as mx
from mailstore.migrate import plan as mp
from mailstore.migrate.dirwatch import DirWatch
from mailstore.migrate.passes import execute_plan
from mailstore.migrate.results import UserResult, anomaly_lines
from mailstore.migrate.verify import verify_copy


TARGET_QUEUE_DRAIN_AT = 256 << 10     # bytes, ~3000 events; the kernel keeps 16384 by default


def cut_over(source_root, target_root, results: List[UserResult], copied: Dict[str, set],
             progress: mx.Progress, live_state: Dict[str, tuple],
             watch: Optional[DirWatch] = None, target_watch: Optional[DirWatch] = None
             ) -> Dict[str, float]:
    """Final pass for each user, then the target file system is flushed while every user
    is verified (verification looks at the names and metadata the file system shows, not
    at the disk: both may run side by side; a user counts as verified only when both
    succeeded). Sets r.verified; returns the time of each phase."""
    phases = {}
    t0 = time.monotonic()
    finals = {}
    progress.start("cut-over", 0, 0)
    for r in results:
        if r.errors:
            continue
        try:
            finals[r.user] = final_pass(source_root, target_root, r, copied[r.user],
                                         progress, live_state.get(r.user), watch)
        except (OSError, maildir.MaildirError) as e:
            r.errors.append("cut-over: %s" % e)
        # the target's events are read by the verification; before that only if the
        # kernel's queue fills up (an overflow would make every target directory listed)
        if target_watch is not None and target_watch.queued() > TARGET_QUEUE_DRAIN_AT:
            target_watch.drain()
    progress.finish()
    phases["cutover.delta"] = time.monotonic() - t0
    if not finals:
        return phases
    # durability before any user is declared migrated (mailstore.migrate.execute); the journal lives on
    # the target file system too
    sync = mx.thread_pool().submit(_timed, mx.sync_filesystem, target_root)
    t1 = time.monotonic()
    for r in results:
        if r.user in finals:
            try:
                verify_copy(source_root, target_root, r, finals[r.user], target_watch)
            except (OSError, maildir.MaildirError) as e:
                r.errors.append("verification: %s" % e)
    phases["cutover.verify"] = time.monotonic() - t1
    try:
        phases["cutover.sync"] = sync.result()
    except OSError as e:
        for r in results:
            if r.user in finals:
                r.verified = False
                r.errors.append("flushing the target file system: %s" % e)
    return phases


def _timed(fn, *args) -> float:
    t0 = time.monotonic()
    fn(*args)
    return time.monotonic() - t0


def final_pass(source_root, target_root, r: UserResult, copied: set,
               progress: mx.Progress, previous: Optional[tuple],
               watch: Optional[DirWatch] = None):
    """The cut-over's delta for one user: look again at both trees (only what changed since
    the live copy, mailstore.migrate.delta), plan, execute. Returns (source state, target state,
    plan, the names that may differ between the two states or None), the states as they
    were before executing."""
    prev_src, prev_tgt, differed = previous if previous is not None else (None, None, None)
    hints = None
    if prev_tgt is not None:
        # The target as the live copy left it (full lstat scan): nothing but this migration
        # writes below TARGET_ROOT/<user> (claimed in the journal), so it is planned against
        # as it is. The verification looks at it again (verify_copy).
        target = prev_tgt
        source = md.refresh(source_root, r.user, prev_src, watch=watch)
        # only names that changed in the source since, or differed then, can differ now
        hints = md.candidates(differed, source)
    else:
        target_f = mx.thread_pool().submit(md.refresh_optional, target_root, r.user, None)
        try:
            source = md.refresh(source_root, r.user, prev_src)
        finally:
            target = target_f.result()
    plan = mp.plan_dirs(source.tree, source.dirs, target and target.tree,
                        target.dirs if target else {}, refresh_control=True,
                        candidates=hints)
    execute_plan(source_root, target_root, r, copied, progress, plan, live=False)
    r.anomalies = anomaly_lines(source.tree)
    return source, target, plan, hints


def rename_user(source_root, target_root, r: UserResult, journal) -> None:
    src = os.path.join(source_root, r.user)
    dst = os.path.join(target_root, r.user)
    if os.path.lexists(src):
        tree = maildir.scan_user(source_root, r.user)
        r.messages, r.bytes = len(tree.messages), tree.message_bytes
        r.anomalies = anomaly_lines(tree)
        journal.record("rename", r.user, messages=r.messages, bytes=r.bytes)
        mx.KILL.tick()
        os.rename(src, dst)            # fails (ENOTEMPTY/EEXIST) rather than merge
        mx.KILL.tick()
        mx.fsync_dir(target_root)
        mx.fsync_dir(source_root)
    else:
        tree = maildir.scan_user(target_root, r.user)
        r.messages, r.bytes = len(tree.messages), tree.message_bytes
    r.verified = os.path.isdir(dst) and not os.path.lexists(src)
    if r.verified:
        journal.record("done", r.user, mode="rename", messages=r.messages, bytes=r.bytes)
        r.done = True
