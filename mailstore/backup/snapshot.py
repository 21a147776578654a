"""`run`: take one snapshot of a mail root (plus optional config paths and a database dump).

The run, in order: lock the repository and clean up after an interrupted run; scan the users
(scan.py: a full scan lstat's every message; the nightly incremental scan takes every name
the previous snapshot saw in the same new/ or cur/ over with its catalog row, unstat'ed, and
lists no directory that nothing touched); feed each scanned user to the run's Feed (feed.py),
which decides per message to reuse the previous snapshot's object or to read the file; add
the extras (extras.py); commit (snapshot_commit.py). Objects the repository lost (a missing
pack, an object verify found damaged: lost.py) are never reused: the messages and files
that used them are read again, and their content stored anew.

The base: the newest snapshot, checked against its authentication before anything is stored.
One that fails (or that verify recorded as damaged, snapshot_damage.py: then its rows are read
from the catalog, not the index cache, and checked before the scan) is never built upon: the
run records it, starts again on the next older snapshot (each checked before its scan now),
or with a full scan of everything when none is intact, and ends with one warning per damaged
snapshot (so the night fails: exit 1) and a whole new snapshot. `forget` removes it.

Atomicity: new objects go to packs that are made durable (fsync) during the run; the catalog
learns about them, the snapshot row and its contents in ONE transaction at the very end. A run
that dies at any point before that commit leaves no snapshot and no catalog change behind, only
pack files the catalog does not name, which the next run (`clean_up`) deletes; a run that fails
(ENOSPC, I/O error) deletes its packs itself (newobjects.py). Earlier snapshots are never
modified.
"""
import collections
import errno
import gc
import os
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

from mailstore import maildir
from mailstore.backup import catalog, extras, lost, memory, scan, snapshot_damage
from mailstore.backup.auth import SnapshotDamaged
from mailstore.backup.errors import BackupError
from mailstore.backup.feed import Feed
from mailstore.backup.index_cache import drop_stale_indexes
from mailstore.backup.repository import Repository

# Users scanned at once (the scan is I/O-bound: one lstat per message).
_SCAN_THREADS = 8
# Previous rows decoded at once, at most: of the users scanned ahead and of the one being
# recorded (more only for one user who has more, then alone). With the lookups and the scan's
# view of them, about 1 KB each, they are most of a run's memory: this bound, or the biggest
# mailbox, sets the peak, not the number of messages.
_DECODED_ROWS = 100000


class _ScanAhead:
    """The scanned users in order: (tree, reused, dir_state, previous rows) of each. Users
    are scanned ahead on `scanners` (from the start: the first ones while the run checks the
    previous snapshot) while the previous rows of the users scanned and not yet recorded
    (the one being recorded included) stay within _DECODED_ROWS; a user with more is scanned
    when nothing else is decoded."""

    def __init__(self, scanners, state, source_root, users):
        self._scanners, self._state, self._root = scanners, state, source_root
        self._users = iter(users)
        self._pending = collections.deque()
        self._decoded = 0
        self._next = None           # (user, count) not submitted yet for want of room
        self._fill()

    def _scan_one(self, user):
        rows = self._state.previous_rows(user)
        return scan.scan_user(self._root, user, self._state.previous, rows) + (rows,)

    def _fill(self):
        while True:
            if self._next is None:
                user = next(self._users, None)
                if user is None:
                    return
                self._next = (user, self._state.previous_count(user))
            user, count = self._next
            if self._decoded and self._decoded + count > _DECODED_ROWS:
                return
            self._pending.append((self._scanners.submit(self._scan_one, user), count))
            self._decoded += count
            self._next = None

    def __iter__(self):
        while self._pending:
            future, count = self._pending.popleft()
            yield future.result()
            # the caller asks for the next user once it has recorded this one
            self._decoded -= count
            self._fill()


def run(repo_path, source_root, key_file=None, include=(), mysql_dump=None, wait=0,
        now=time.time, progress=None, dump_command=None, workers=None,
        mysql_defaults_file=None, full_scan=False):
    """Take a snapshot of every user under `source_root`; return a summary dict.

    `include`: config paths to add; `mysql_dump`: a database name to dump consistently
    (`mysql_defaults_file`: client options file with credentials/socket; `dump_command`
    overrides the whole dump command line). `now`: the clock (tests use a
    fake one to give snapshots chosen dates). `wait`: seconds to wait for the repository lock.
    `workers`: threads that read, hash and compress (default: CPU count, at most 4).
    `full_scan`: lstat every message even if the previous snapshot allows an incremental
    scan (scan.py says when a run does a full scan by itself: at least once a week).
    The summary has the snapshot `id`, counters (messages, bytes, new_objects, new_bytes,
    read_files, read_bytes), `scan` ("full" or "incremental") and `warnings` (text); a snapshot with warnings is complete but
    something was skipped (a symlink in a message directory, an unreadable directory or
    message...).
    """
    # The cyclic garbage collector is off for the run: it would walk the hundreds of
    # thousands of row tuples the run holds again and again (a tenth of an incremental
    # run's CPU), while the run makes next to no reference cycles.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    memory.limit_arenas()       # before the run's threads start (memory.py says why)
    try:
        return _run(repo_path, source_root, key_file, include, mysql_dump, wait, now, progress,
                    dump_command, workers, mysql_defaults_file, full_scan)
    finally:
        if gc_was_enabled:
            gc.enable()


def _run(repo_path, source_root, key_file, include, mysql_dump, wait, now, progress,
         dump_command, workers, mysql_defaults_file, full_scan):
    source_root = os.path.abspath(os.fspath(source_root))
    if not os.path.isdir(source_root):
        raise BackupError("source {} is not a directory".format(source_root))
    with Repository(repo_path, key_file=key_file) as repo:
        repo.lock(exclusive=True, wait=wait)
        repo.clean_up()
        repo.check_catalog()        # the list of snapshots (the previous one: feed.py)
        catalog.create(repo.db)     # tables added since the repository was made
        lost.create(repo.db)
        snapshot_damage.create(repo.db)
        lost_ids, missing_packs = lost.find_lost(repo.db, repo.packs_dir)
        suspect = frozenset(d["id"] for d in snapshot_damage.recorded(repo.db))
        damaged = []        # (seq, id, problem) of the snapshots found damaged as bases
        while True:
            try:
                state, snapshot_id = _attempt(
                    repo, source_root, include, mysql_dump, now, progress, dump_command,
                    workers, mysql_defaults_file, full_scan, lost_ids, missing_packs,
                    frozenset(d[0] for d in damaged), suspect)
                break
            except SnapshotDamaged as e:
                # never build on it: record it, take the next older one (or scan in full)
                damaged.append((e.seq, e.snapshot, e.problem))
                with catalog.transaction(repo.db):
                    snapshot_damage.record(repo.db, {e.snapshot: e.problem}, (), time.time())
                # damage seldom comes alone (a damaged row is shared by every snapshot that
                # holds the message): each further base is checked before the scan
                suspect = frozenset(r[0] for r in repo.db.execute("SELECT id FROM snapshots"))
        # the catalog as the off-host copy gets it (sealed.py): the snapshot stands whatever
        # happens here, so no discard; a failure fails the run (and the nightly job)
        try:
            repo.seal()
        except (OSError, sqlite3.Error) as e:
            raise BackupError("snapshot {} recorded, but its sealed catalog for the off-host "
                              "copy could not be written: {}".format(
                                  snapshot_id, _describe(e) if isinstance(e, OSError)
                                  else e)) from e
    result = dict(state.stats)
    result["id"] = snapshot_id
    # a damaged base is the run's warning, not the new snapshot's (which is whole)
    result["warnings"] = [_damaged_base(repo_path, d, state.prev_id) for d in damaged] \
        + state.warnings
    result["damaged_snapshots"] = [d[1] for d in damaged]
    result["started"] = state.started
    result["scan"] = state.scan_mode
    # objects the repository had lost (lost.py): stored anew now / not found in the source
    result["restored_lost"] = len(state.lost & state.objects.added)
    result["lost_for_good"] = len(state.lost - state.objects.added)
    return result


def _damaged_base(repo_path, damaged, base):
    _seq, snapshot_id, problem = damaged
    return "snapshot {} is damaged ({}): not built upon, {}; remove it with `mailstore " \
        "backup forget {} {}`".format(
            snapshot_id, problem, "this run took snapshot {} as its base".format(base)
            if base else "this run scanned everything afresh (no intact snapshot)",
            repo_path, snapshot_id)


def _attempt(repo, source_root, include, mysql_dump, now, progress, dump_command, workers,
             mysql_defaults_file, full_scan, lost_ids, missing_packs, skip, suspect):
    """Scan, store and commit one snapshot on the newest base not in `skip`: (feed, id).
    Raises auth.SnapshotDamaged, having stored nothing, when that base fails its check."""
    started = now()
    scan_ns = scan.scan_started_ns()
    try:
        users, anomalies = maildir.list_users(source_root)
    except maildir.MaildirError as e:
        raise BackupError(str(e)) from e
    state = Feed(repo, started, progress, workers, source_root, full_scan, scan_ns,
                 frozenset(lost_ids), missing_packs, users, skip, suspect)
    try:
        # Scanning waits for the disk (directory listings, and lstat(2) of the messages a
        # full scan or a new name needs): several users are scanned at once (the GIL is
        # released while waiting).
        with ThreadPoolExecutor(max_workers=_SCAN_THREADS) as scanners:
            scanned = _ScanAhead(scanners, state, source_root, users)
            state.check_previous()
            for a in anomalies:
                state.warn("{}: {} ({})".format(a.relpath, a.kind, a.detail))
            for user, (tree, reused, dir_state, rows) in zip(users, scanned):
                state.user(user, tree, reused, dir_state, rows)
        for path in include:
            extras.include(state, path)
        if mysql_dump:
            extras.database_dump(state, mysql_dump, dump_command, mysql_defaults_file)
        snapshot_id = state.commit(source_root, now())
        drop_stale_indexes(repo, snapshot_id)
    except BaseException as e:
        state.discard()
        if isinstance(e, OSError):
            raise BackupError("backup run failed, no snapshot recorded (earlier snapshots "
                              "are intact): {}".format(_describe(e))) from e
        if isinstance(e, sqlite3.Error):
            raise BackupError("backup run failed, no snapshot recorded (earlier snapshots "
                              "are intact): catalog: {}".format(e)) from e
        if isinstance(e, maildir.MaildirError):
            raise BackupError(str(e)) from e
        raise
    # for the next run, after the commit and outside the clean-up above: it never fails
    # this run, nor is it needed
    state.objects.stored.save(os.path.join(repo.path, "index"), snapshot_id,
                              state.objects.added)
    return state, snapshot_id


def _describe(e):
    if e.errno == errno.ENOSPC:
        return "no space left on device{}".format(" ({})".format(e.filename)
                                                   if e.filename else "")
    return "{}{}".format(e.strerror or e, ": {}".format(e.filename) if e.filename else "")
