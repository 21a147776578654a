"""One user's passes over the two trees: scan both, plan, execute.

``live_copy`` runs the live passes (mail still flows) and leaves what the cut-over needs:
the per-directory state of both trees and the names that differ between them
(mailstore.migrate.delta). ``execute_plan`` carries out one plan and books what it did on the
user's result; the cut-over's final pass uses it too.
"""
import os
import time
from typing import Dict, Optional

from mailstore import maildir
from mailstore.migrate import delta as md
from mailstore.migrate import execute as mx
from mailstore.migrate import plan as mp
from mailstore.migrate.dirwatch import DirWatch
from mailstore.migrate.results import UserResult, anomaly_lines, diff_lines


# Live passes: one, and another while the previous one took long enough for much mail to
# have arrived meanwhile (what arrives now is copied while delivery is still running, not in
# the quiesced window). live_passes=N forces exactly N.
LIVE_REPEAT_AFTER = 30.0
LIVE_MAX_PASSES = 3


def scan_optional(root: str, user: str) -> Optional[maildir.UserTree]:
    try:
        os.lstat(os.path.join(root, user))
    except FileNotFoundError:
        return None
    return maildir.scan_user(root, user)


def live_copy(source_root, target_root, r: UserResult, copied: set, progress: mx.Progress,
              live_passes: Optional[int], watch: Optional[DirWatch] = None,
              target_watch: Optional[DirWatch] = None
              ) -> Optional[tuple]:
    """The live passes for one user; returns (source state, target state, the names that
    differ between them) for the cut-over (mailstore.migrate.delta); None when no pass ran
    (live_passes=0)."""
    passes = 0
    # what this run wrote into the target, as fstat saw each copy (see below)
    known: Dict[str, maildir.Message] = {}
    state = None
    while live_passes is None or passes < live_passes:
        t_pass = time.monotonic()
        md.watch_user(watch, source_root, r.user)      # before the look the cut-over uses
        state = run_pass(source_root, target_root, r, copied, progress, live=True)
        plan, res = state[2], state[3]
        for a in plan.actions:          # touched since: look at it again
            known.pop(a.relpath, None)
            if a.old_relpath is not None:
                known.pop(a.old_relpath, None)
        known.update(res.written or {})
        passes += 1
        if live_passes is None and (passes >= LIVE_MAX_PASSES or
                                    time.monotonic() - t_pass < LIVE_REPEAT_AFTER):
            break
    if state is None:
        return None
    # what the target holds now, stat'ed while mail still flows, kept per directory: the
    # cut-over then only looks at what changed since (mailstore.migrate.delta)
    # (every new/ and cur/ listed afresh; a copy written by this run is taken as its fstat
    # saw it before the rename into place, the rest lstat'ed)
    src_state = md.from_tree(state[0])
    by_dir: md.MessageDirs = {}
    for m in known.values():
        by_dir.setdefault((m.folder, m.subdir), {})[m.name] = m
    md.watch_user(target_watch, target_root, r.user)
    tgt_state = md.adopt_equal(md.listed(target_root, r.user, by_dir), src_state)
    return (src_state, tgt_state, md.differing(src_state, tgt_state))


def scan_both(source_root, target_root, user, previous=None):
    """Scan source and target side by side: lstat releases the GIL, two cores both work."""
    pool = mx.thread_pool()
    if previous is not None and previous[1] is not None:
        target = pool.submit(maildir.rescan_user, target_root, user, previous[1])
        source = maildir.rescan_user(source_root, user, previous[0])
    else:
        target = pool.submit(scan_optional, target_root, user)
        source = maildir.scan_user(source_root, user)
    return source, target.result()


def run_pass(source_root, target_root, r: UserResult, copied: set, progress: mx.Progress,
             live: bool, refresh_control: bool = False, previous: Optional[tuple] = None):
    """Scan (or rescan against ``previous`` scans), plan, execute for one user.
    Returns (source scan, target scan, plan, ExecResult); the scans as they were before
    executing."""
    source, target = scan_both(source_root, target_root, r.user, previous)
    plan = mp.plan_user(source, target, refresh_control=refresh_control)
    res = execute_plan(source_root, target_root, r, copied, progress, plan, live)
    if not live:
        r.anomalies = anomaly_lines(source)
    return source, target, plan, res


def execute_plan(source_root, target_root, r: UserResult, copied: set,
                 progress: mx.Progress, plan: mp.UserPlan, live: bool) -> mx.ExecResult:
    s = plan.summary()
    if live:
        progress.start("live copy %s" % r.user, s["copy_messages"], s["copy_bytes"])
    else:                       # one progress line for the whole cut-over
        progress.add_totals(s["copy_messages"], s["copy_bytes"])
    ex = mx.Executor(os.path.join(source_root, r.user), os.path.join(target_root, r.user),
                     target_root, progress, live=live)
    res = ex.run(plan)
    if live:
        progress.finish()
    copied |= res.copied
    for a in plan.actions:
        if a.op == mp.COPY and a.relpath in res.copied:
            r.copied_bytes += a.entry.size
            r.copied_messages += a.kind == "message"
    r.renamed += s["rename_messages"]
    r.deleted += s["delete_messages"]
    if not live:
        r.errors.extend(diff_lines(res.errors))
    return res
