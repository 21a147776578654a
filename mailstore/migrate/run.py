"""Move every user's mail from SOURCE_ROOT/<user>/ to TARGET_ROOT/<user>/, live.

``migrate()`` runs the whole procedure of docs/architecture.md; the separate, explicit removal
of the source once the target verifies is :mod:`mailstore.migrate.cleanup`. The decisions are
made by :mod:`mailstore.migrate.plan` (pure), the file operations by
:mod:`mailstore.migrate.execute`; one user's passes are :mod:`mailstore.migrate.passes`, the
cut-over :mod:`mailstore.migrate.cutover`.

Procedure, per run::

    check roots; read the journal; decide each user's mode
    copy mode (different file systems, or --copy), users shared out across worker processes
    (mailstore.migrate.workers; largest first; one process when there is one user):
        live pass(es) (watch every directory of the source user (inotify,
                       mailstore.migrate.dirwatch), scan both, plan, execute; mail keeps arriving,
                       vanishing files are fine; every copy is byte-checked against its
                       source as it is written; another pass if the previous one took
                       longer than 30 s)
        watch the target user, then a full look at the target as the live phase left it
        (every new/ and cur/ listed; what this run copied taken as fstat saw it, the rest
        lstat'ed), kept per directory together with the source's scan and the names
        that differ between the two (delta.differing)
    syncfs(target)   (the live copy's writes reach the disk while mail still flows)
    quiesce hook     (fails -> abort before the cut-over; the resume hook still runs; exit 1)
    per copied user, in the worker that copied it:
        final pass:  look at the source again (a watched directory: the previous look plus
                     the kernel's created/removed/changed names; a name renamed there from
                     an untouched one takes that one's facts, any other that appeared is
                     lstat'ed; an unwatched one: listed unless its old mtime did not move),
                     plan against the target as the live phase left it (renames for flag
                     changes and new->cur, deletions for expunges, copies for new mail,
                     control files; in a directory known name by name, only the names that
                     changed since or differed then are compared), execute (every copy
                     byte-checked)
        then syncfs(target) beside the verification of each user: names, sizes, mtimes,
                     owners, modes of everything, nothing extra (the target looked at
                     again the same way - anybody's change to it is an event; every file
                     the cut-over wrote lstat'ed afresh; names that changed in neither tree
                     and were equal are equal still), and no source directory changed
                     since its final look (delivery really stopped); verified = both
                     succeeded
    per renamed user: (same file system, target absent) journal "rename", one rename(2) of
                     the user directory, fsync both parents -> journal "done"
    one journal record "done" for all verified copied users (main process)
    resume hook      (always, once the quiesce hook has been started; the workers are reaped
                     after it: their exit takes tens of milliseconds)

The journal (``TARGET_ROOT/.mailstore-migrate/journal.jsonl``, one JSON object per line,
fsynced) holds only per-user facts: "claim" (this migration created TARGET_ROOT/<user>, so it
may delete in it), "rename" (about to rename), "done" (verified; later runs leave the user
alone, because mail may already be delivered to the target). A target user directory that
exists without a claim is never touched: the migration refuses that user.

Across file systems the source is never modified (not even atimes where O_NOATIME is
allowed). Files in tmp/ are deliveries in progress and are not copied; anomalies of the scan
(symlinks in new/cur, directories where messages should be, unreadable directories) are not
copied either, and make the run exit non-zero so that an operator looks at them; a copied
user with such entries is not recorded as done (its mail there was never copied), so a later
run, once they are mended, copies the rest.
"""
import os
import stat
import subprocess
import sys
import time
from typing import Dict, List, Optional

from mailstore import maildir
from mailstore.migrate import execute as mx
from mailstore.migrate import passes
from mailstore.migrate import plan as mp
from mailstore.migrate import workers as mw
from mailstore.migrate.cutover import cut_over, rename_user
from mailstore.migrate.dirwatch import PerProcess
from mailstore.migrate.journal import Journal
from mailstore.migrate.results import (HookResult, MigrateError, MigrationResult, UserResult,
                                       anomaly_lines, check_roots)


def run_hook(command: str, out=None) -> HookResult:
    """Run an operator hook with /bin/sh -c; its output goes to stderr (stdout is ours)."""
    out = out if out is not None else sys.stderr
    try:
        out.flush()
    except (AttributeError, ValueError):
        pass
    try:
        fileno = out.fileno()
    except (AttributeError, ValueError, OSError):
        fileno = None
    if fileno is None:
        proc = subprocess.run(["/bin/sh", "-c", command], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
        out.write(proc.stdout.decode("utf-8", "replace"))
    else:
        proc = subprocess.run(["/bin/sh", "-c", command], stdout=fileno, stderr=fileno)
    return HookResult(command, proc.returncode)



def migrate(source_root: str, target_root: str, users: Optional[List[str]] = None,
            dry_run: bool = False, quiesce: Optional[str] = None, resume: Optional[str] = None,
            force_copy: bool = False, progress: Optional[mx.Progress] = None,
            hook_output=None, live_passes: Optional[int] = None,
            processes: Optional[int] = None) -> MigrationResult:
    started = time.monotonic()
    result = MigrationResult(source_root, target_root, dry_run)
    progress = progress or mx.Progress()
    for u in users or []:
        maildir.check_user_name(u)                       # InvalidUserName before anything
    result.same_filesystem = same_fs = check_roots(source_root, target_root,
                                                   target_may_be_missing=True)
    if not dry_run and not os.path.lexists(target_root):
        _make_target_root(source_root, target_root)
    journal = Journal(target_root)
    if users:
        names = list(dict.fromkeys(users))
    else:
        names, root_anomalies = maildir.list_users(source_root)
        names = sorted(set(names) | set(journal.users("done")))
        if root_anomalies:
            result.error = "source root entries skipped: " + "; ".join(
                "%s (%s)" % (a.relpath, a.detail) for a in root_anomalies)

    # decide each user's mode
    copy_users, rename_users = [], []
    for user in names:
        src_path = os.path.join(source_root, user)
        dst_path = os.path.join(target_root, user)
        src_exists = os.path.lexists(src_path)
        dst_exists = os.path.lexists(dst_path)
        if journal.has("done", user) and src_exists and not dst_exists:
            # The target's journal says done, yet the user's copy is gone and the source is
            # back (e.g. an earlier move the other way, then that copy cleaned up): the
            # journal is stale, and trusting it would serve an empty mailbox.
            r = UserResult(user, "refused")
            r.errors.append("%s records %s as migrated, but %s is missing while %s exists: "
                            "the journal is from an earlier migration; move it aside to "
                            "migrate this user again" % (journal.path, user, dst_path,
                                                          src_path))
        elif journal.has("done", user):
            r = UserResult(user, "already-migrated")
        elif journal.has("rename", user) and not src_exists and dst_exists:
            r = UserResult(user, "rename")           # renamed by a run killed just after
            rename_users.append(r)
        elif not src_exists:
            r = UserResult(user, "failed")
            r.errors.append("%s: no such user directory" % src_path)
        elif dst_exists and not journal.has("claim", user):
            r = UserResult(user, "refused")
            r.errors.append("%s exists but was not created by this migration; refusing to "
                            "write into it" % dst_path)
        elif same_fs and not force_copy and not dst_exists:
            r = UserResult(user, "rename")
            rename_users.append(r)
        else:
            r = UserResult(user, "copy")
            copy_users.append(r)
        result.users.append(r)

    if dry_run:
        for r in copy_users + rename_users:
            try:
                tree = passes.scan_optional(source_root, r.user)
            except maildir.MaildirError as e:
                r.errors.append(str(e))
                continue
            if tree is None:
                continue
            r.messages, r.bytes = len(tree.messages), tree.message_bytes
            r.anomalies = anomaly_lines(tree)
            if r.mode == "copy":
                target = passes.scan_optional(target_root, r.user)
                plan = mp.plan_user(tree, target)
                s = plan.summary()
                r.copied_messages, r.copied_bytes = s["copy_messages"], s["copy_bytes"]
                r.renamed, r.deleted = s["rename_messages"], s["delete_messages"]
        result.seconds = time.monotonic() - started
        return result

    if copy_users:
        mx.clear_staging(target_root)
    copied: Dict[str, set] = {r.user: set() for r in copy_users}
    # per user, after the live copy: (source state, target state, names that differ)
    live_state: Dict[str, tuple] = {}

    # inotify, each worker process its own: one queue for the source, one for the target
    # (the target's events - mostly this run's own renames - are read in the verification,
    # not in the final passes)
    watches, target_watches = PerProcess(), PerProcess()

    def live(r: UserResult) -> None:
        try:
            live_state[r.user] = passes.live_copy(source_root, target_root, r,
                                                  copied[r.user], progress, live_passes,
                                                  watches.get(), target_watches.get())
        except (OSError, maildir.MaildirError) as e:
            r.errors.append("live copy: %s" % e)

    def cutover(results: List[UserResult]) -> Dict[str, float]:
        return cut_over(source_root, target_root, results, copied, progress, live_state,
                         watches.get(), target_watches.get())

    try:
        # live passes: nothing is quiesced yet, the source changes while we read it
        t0 = time.monotonic()
        try:
            journal.record_many("claim", [r.user for r in copy_users
                                          if not journal.has("claim", r.user)])
        except OSError as e:
            # before anything is written into a user's target directory
            raise MigrateError("cannot write the journal %s: %s" % (journal.path,
                                                                   e.strerror or e))
        count = processes if processes is not None else mw.default_count()
        workers = None
        if count > 1 and len(copy_users) > 1:
            # largest first: the users taken last are then small, and the workers finish
            # (the live copy, and so also the cut-over of the users each one took) together
            order = sorted(range(len(copy_users)),
                           key=lambda i: -_size_hint(source_root, copy_users[i].user))
            workers = mw.Workers(copy_users, count, live, cutover, progress,
                                 idle=lambda: (watches.get().drain(),
                                               target_watches.get().drain()),
                                 order=order)
            try:
                workers.wait_live()
            except BaseException:
                workers.close()
                raise
        else:
            for r in copy_users:
                live(r)
        result.phases["live_copy"] = time.monotonic() - t0
        if copy_users:
            # the live copy's last ~30 s of writes are still in memory: writing them out now,
            # while mail flows, keeps them out of the window in which delivery is deferred
            # (the cut-over's flush then holds only its own changes)
            t0 = time.monotonic()
            try:
                mx.sync_filesystem(target_root)
            except OSError:
                pass        # not fatal here: the cut-over's flush decides, and reports
            result.phases["live_flush"] = time.monotonic() - t0
        work = [r for r in copy_users + rename_users if not r.errors]
        if not work and not rename_users and not copy_users:
            result.seconds = time.monotonic() - started
            return result

        quiesce_started = False
        try:
            if quiesce:
                quiesce_started = True
                t0 = time.monotonic()
                h = run_hook(quiesce, hook_output)
                result.phases["quiesce"] = time.monotonic() - t0
                result.hooks["quiesce"] = h
                if h.exit != 0:
                    result.error = "quiesce hook failed (exit %d): no cut-over done" % h.exit
                    return result
            t0 = time.monotonic()
            if workers is not None:
                workers.begin_cutover()
            for r in work:
                if r.mode == "rename":
                    try:
                        rename_user(source_root, target_root, r, journal)
                    except (OSError, maildir.MaildirError) as e:
                        r.errors.append("cut-over: %s" % e)
            if workers is not None:
                result.phases.update(workers.end_cutover())
            else:
                result.phases.update(cutover([r for r in work if r.mode == "copy"]))
            for r in copy_users:
                if r.verified and r.anomalies and not r.errors:
                    # what the scan skipped was never copied: "done" would make every later
                    # run leave the user alone, and that mail would stay behind
                    r.errors.append("not recorded as migrated: the source has entries that "
                                    "were not copied (skipped); run again once they are "
                                    "mended")
            verified = [r for r in copy_users if r.verified and not r.errors]
            # one journal write and fsync for every verified user
            try:
                journal.record_many("done", [r.user for r in verified], mode="copy",
                                    per_user={r.user: {"messages": r.messages,
                                                       "bytes": r.bytes}
                                              for r in verified})
            except OSError as e:
                # e.g. the target disk full: nobody is recorded, so a later run verifies
                # these users again (their claims let it) instead of trusting a torn record
                result.error = ("recording the verified users as migrated in %s failed: %s; "
                                "none is recorded, run again" % (journal.path,
                                                                  e.strerror or e))
                verified = []
            for r in verified:
                r.done = True
            result.phases["cutover"] = time.monotonic() - t0
        finally:
            if workers is not None and workers.writing():
                workers.close()           # nobody writes into the target once mail flows
            try:
                if resume and (quiesce_started or not quiesce):
                    t0 = time.monotonic()
                    result.hooks["resume"] = run_hook(resume, hook_output)
                    result.phases["resume"] = time.monotonic() - t0
            finally:
                # reaping waits for each worker's exit (the kernel freeing its memory, tens
                # of milliseconds): after the resume hook, not while delivery is deferred
                if workers is not None:
                    workers.close()
            result.seconds = time.monotonic() - started
        return result
    finally:
        watches.close()
        target_watches.close()


def _make_target_root(source_root: str, target_root: str) -> None:
    """TARGET_ROOT with the source root's mode and (as root) owner, as `cp -a` makes it."""
    st = os.stat(source_root)
    os.mkdir(target_root, 0o700)
    if os.geteuid() == 0:
        os.chown(target_root, st.st_uid, st.st_gid)
    os.chmod(target_root, stat.S_IMODE(st.st_mode))
    mx.fsync_dir(os.path.dirname(os.path.abspath(target_root)))


def _size_hint(root: str, user: str) -> int:
    """How much mail ROOT/<user> holds, roughly, without listing it: the sizes of its
    Maildir's new/ and cur/ directories (a directory grows with its entries)."""
    base = os.path.join(maildir.user_path(root, user), maildir.MAILDIR)
    total = 0
    try:
        folders = [""] + [e.name for e in os.scandir(base)
                          if e.name.startswith(".") and e.is_dir(follow_symlinks=False)]
    except OSError:
        return 0
    for folder in folders:
        for sub in maildir.MESSAGE_SUBDIRS:
            try:
                total += os.lstat(os.path.join(base, folder, sub)).st_size
            except OSError:
                pass
    return total


