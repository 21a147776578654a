"""The scan feed of a run: what the scanned users turn into, message by message.

A `Feed` holds the state of one run: the previous snapshot's rows (from the index cache), the
decision per scanned message, and the rows the commit writes. The decision: a message whose
(user, folder, unique name) was in the previous snapshot with the same size, mtime and inode
is the same immutable file, whatever its flags now say, so it reuses that snapshot's object
without being opened; so does one moved to another folder under the same unique name (same
inode, size and mtime). An inode alone proves nothing: a deleted message's inode is soon
given to another file, which a restore or a copy tool may give the same size and mtime.
Only new or rewritten files are read, hashed, and (when their content is new to the
repository) compressed into a pack, by worker threads, in a bounded window. The workers get
them in batches (_BATCH messages a task): a first backup reads every message, and a task and
its hand-over per message cost more interpreter time than the small ones' hashing.
"""
import collections
import itertools
import operator
import os
import stat
from concurrent.futures import ThreadPoolExecutor

from mailstore import maildir
from mailstore.backup import reading, scan
from mailstore.backup.catalog import to_db
from mailstore.backup.index_cache import previous_rows, write_index
from mailstore.backup.newobjects import NewObjects, prepare
from mailstore.backup.snapshot_commit import unused_snapshot_id, write_catalog

# messages per worker task, and the messages waiting to be recorded
_BATCH = 16
_WINDOW = 64


class Feed:
    """The state of one run: the previous snapshot's index and what was added."""

    def __init__(self, repo, started, progress, workers=None, source_root=None,
                 full_scan=False, scan_ns=0, lost=frozenset(), missing_packs=(),
                 skip=frozenset(), suspect=frozenset()):
        """`skip`: seqs of snapshots found damaged, never a base; `suspect`: ids of snapshots
        recorded damaged (snapshot_damage.py), whose rows are read from the catalog and
        checked before the scan rather than taken from the index cache."""
        self.repo = repo
        # objects the repository lost (lost.py): never reused, their content read again
        self.lost = lost
        self.missing_packs = missing_packs    # packs gone from the disk (lost.py)
        self.db = repo.db
        self.codec = repo.codec
        self.progress = progress
        self.started = started
        self.stats = dict(messages=0, bytes=0, new_objects=0, new_bytes=0, read_files=0,
                          read_bytes=0, warnings=0)
        self.warnings = []
        self.objects = NewObjects(repo, lost)
        self.pool = ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1))
        self.prefetch = reading.Prefetcher()
        # messages being read, in order: (task, index in its batch, user, previous row);
        # a task is a cell that holds its future once the batch is handed out
        self.jobs = collections.deque()
        self._batch = []                    # (user_dir, message) not yet handed out
        self._task = [None]                 # the cell of that batch
        self.next_message_id = (self.db.execute("SELECT max(id) FROM messages").fetchone()[0]
                                or 0) + 1
        self.new_messages = []        # rows for the messages table
        self.index_rows = []          # every message row of this snapshot (index cache)
        self.snapshot_messages = []   # message ids in this snapshot
        self.files = []               # rows for the files table (without snapshot)
        self.scan_ns = scan_ns        # real clock before the scan began (scan.py)
        self.dir_state = []           # rows for the scan_dirs table
        self._load_previous(source_root, full_scan, skip, suspect)

    def _load_previous(self, source_root, full_scan, skip, suspect):
        # the base: the newest snapshot not found damaged (raises auth.SnapshotDamaged when
        # a suspect one still fails its check: the caller skips it and starts again)
        row = self.db.execute("SELECT seq, id, messages, source FROM snapshots WHERE seq NOT IN"
                              " ({}) ORDER BY seq DESC LIMIT 1".format(
                                  ",".join(str(int(q)) for q in skip)), ()).fetchone()
        self.prev_messages = {}
        self.prev_inodes = {}
        self.prev_files = {}
        self.previous = None          # scan.Previous when this run scans incrementally
        self.prev_seq, self.prev_ids, self._prev_rows = None, frozenset(), ()
        self.prev_id = None           # the base's snapshot id
        self._prev_digest = None      # the previous rows' digest, if the cache vouches for it
        meta = scan.load_meta(self.db)
        self.scan_mode, self.scan_reason = scan.choose(
            self.db, row and (row[0], row[1], row[3]), source_root, self.started, full_scan)
        self.last_full_scan = self.started if self.scan_mode == "full" \
            else meta["last_full_scan"]
        if row is None:
            return
        # The index cache vouches for the rows as recorded, not for the catalog's rows now,
        # which the new snapshot takes over by id: a full scan (the slow night anyway, at
        # least weekly) reads and checks the catalog's, so damage there is never carried on
        # for more than a week even when no verify runs.
        rows, problem, self._prev_digest = previous_rows(
            self.repo, row[0], row[1], row[2],
            use_cache=row[1] not in suspect and self.scan_mode == "incremental")
        if row[1] in suspect:
            self.repo.check_snapshot_rows(row[0], rows)
        if problem is not None:
            self.warn(problem)
        self.prev_seq, self.prev_id, self._prev_rows = row[0], row[1], rows
        if self.scan_mode == "incremental":
            # rows of one user are contiguous in the cache (but for a few read late): group
            # them at C speed
            by_user = {}
            for user, group in itertools.groupby(rows, operator.itemgetter(1)):
                got = by_user.get(user)
                if got is None:
                    by_user[user] = list(group)
                else:
                    got.extend(group)
            self.previous = scan.load_previous(self.db, row[0], meta, by_user)
        for r in self.db.execute(
                "SELECT kind, user, path, size, mtime_ns, object FROM files"
                " WHERE snapshot = ? AND object IS NOT NULL", (row[0],)):
            # files carry no inode column; size+mtime+path is the same test rsync makes
            if r[5] in self.lost:
                continue
            self.prev_files[(r[0], r[1], r[2])] = (r[3], r[4], r[5])

    def index_previous(self):
        """The lookups message() needs, from the previous snapshot's rows: built after the
        scan threads have started (they only need the rows by user), so that this CPU work
        overlaps with their waiting for the disk."""
        rows, self._prev_rows = self._prev_rows, ()
        if self.prev_seq is not None:
            # what the new snapshot builds on is authentic (nothing is stored before this)
            self.repo.check_snapshot_rows(self.prev_seq, rows, self._prev_digest)
        if not rows:
            return
        self.prev_ids = frozenset(map(operator.itemgetter(0), rows))
        if self.lost:
            # a message whose object is lost is read again, as if it were new
            rows = [r for r in rows if r[12] not in self.lost]
        # (user, folder, uniq) -> row and (uniq, ino, size, mtime_ns) -> object, built at C
        # speed. The unique name is part of the inode key: a file on the inode of a message
        # deleted since (ext4 hands freed inodes out again at once) may have its size and
        # mtime too (a restore, a copy tool keeping mtimes), but not its unique name.
        self.prev_messages = dict(zip(map(operator.itemgetter(1, 2, 5), rows), rows))
        # keyed by the inode alone (the row's own int: no key object per row); the unique
        # name, size and mtime are compared on lookup (moved_object). Of hard links (one
        # inode, several rows) the last row is kept: a moved one of the others is read again.
        self.prev_inodes = dict(zip(map(operator.itemgetter(11), rows), rows))

    def warn(self, text):
        self.warnings.append(text)
        self.stats["warnings"] += 1

    # -- objects ---------------------------------------------------------------------------
    def discard(self):
        """After a failure: remove every pack this run wrote (the catalog names none of them),
        so that a full disk gets its space back. Never raises."""
        for task, _i, _user, _prev in self.jobs:
            if task[0] is not None:
                task[0].cancel()
        self.prefetch.stop()
        self.pool.shutdown(wait=True)
        self.objects.discard()

    def store(self, data, is_message):
        """The id of `data`, adding it to the repository if it is new there (main thread)."""
        oid, record, hdrs = prepare(self.codec, self.objects.known, data, is_message)
        return self._add(oid, record, len(data), hdrs)

    def _add(self, oid, record, size, hdrs):
        if self.objects.add(oid, record, size, hdrs):
            self.stats["new_objects"] += 1
            self.stats["new_bytes"] += len(record)
        return oid

    def read(self, path):
        """(bytes, stat) of a regular file (main thread); None if it vanished."""
        got = reading.read_file(path)
        if isinstance(got, str):
            self.warn(got)
            return None
        if got is not None:
            self.stats["read_files"] += 1
            self.stats["read_bytes"] += len(got[0])
        return got

    # -- mail ------------------------------------------------------------------------------
    def user(self, name, tree, reused=None, dir_state=None):
        """Record one scanned user (`tree` is a maildir.UserTree or the MaildirError).

        `reused`: {Message: previous row} for messages an incremental scan took over from the
        previous snapshot; `dir_state`: {relpath: (inode, ctime_ns)} for the next run."""
        for rel, (ino, ctime_ns) in (dir_state or {}).items():
            self.dir_state.append((name, to_db(rel), ino, ctime_ns))
        if isinstance(tree, maildir.MaildirError):
            self.warn("user {}: {}".format(name, tree))
            return
        for a in tree.anomalies:
            if a.kind == "vanished":
                continue    # expunged or renamed during the scan: the normal life of a Maildir
            self.warn("{}/{}: {} ({})".format(name, a.relpath, a.kind, a.detail))
        for d in tree.directories:
            self.files.append(("dir", name, to_db(reading.folder_of(d.relpath)), to_db(d.relpath),
                               d.mode, d.uid, d.gid, d.mtime_ns, 0, None, None))
        for s in tree.symlinks:
            self.files.append(("symlink", name, to_db(reading.folder_of(s.relpath)), to_db(s.relpath),
                               s.mode, s.uid, s.gid, s.mtime_ns, s.size, None, to_db(s.link)))
        # Index files are caches Dovecot rebuilds and tmp/ holds deliveries in progress:
        # neither belongs in a backup. Control files and the user's other files (sieve
        # scripts...) do.
        for e in tree.control + tree.other:
            self.file(e.kind, name, reading.folder_of(e.relpath), e.relpath,
                      os.path.join(tree.path, e.relpath), e)
        self._messages(tree.path, name, tree.messages, reused)
        if self.progress:
            self.progress("user {}: {} messages".format(name, len(tree.messages)))

    def file(self, kind, user, folder, relpath, path, entry):
        folder, relpath = to_db(folder), to_db(relpath)
        prev = self.prev_files.get((kind, user, relpath))
        if prev and prev[0] == entry.size and prev[1] == entry.mtime_ns:
            oid = prev[2]
            size, mtime_ns, mode, uid, gid = (entry.size, entry.mtime_ns, entry.mode, entry.uid,
                                              entry.gid)
        else:
            got = self.read(path)
            if got is None:
                return
            data, st = got
            oid = self.store(data, is_message=False)
            size, mtime_ns, mode, uid, gid = (len(data), st.st_mtime_ns, stat.S_IMODE(st.st_mode),
                                              st.st_uid, st.st_gid)
        self.files.append((kind, user, folder, relpath, mode, uid, gid, mtime_ns, size, oid,
                           None))

    def _messages(self, user_dir, user, messages, reused=None):
        """All messages of one user. The loop is the hot path of a nightly run (every message,
        nearly all unchanged), hence written for speed: the unchanged case inline, anything
        else through message()."""
        prev_get = self.prev_messages.get
        keep = self.snapshot_messages.append
        index = self.index_rows.append
        count = total = 0
        if self.previous is not None:
            # incremental scan: a message taken over unstat'ed (a PreviousRow, or a Message
            # listed in `reused`) keeps its previous row as is
            reused_get = (reused or {}).get
            PreviousRow = scan.PreviousRow
            lost = self.lost
            key_of = operator.itemgetter(1, 2, 5)
            rest = []
            for m in messages:
                if type(m) is PreviousRow:
                    # the row m was made from, not a copy: the index cache is marshalled
                    # (plain tuples only), and a copy per message would be memory for nothing
                    prev = prev_get(key_of(m))
                    if prev is None or prev[0] != m[0]:
                        prev = tuple(m)
                    if lost and prev[12] in lost:
                        rest.append(m.message())
                        continue
                else:
                    prev = reused_get(m)
                    if prev is None or (lost and prev[12] in lost):
                        rest.append(m)
                        continue
                keep(prev[0])
                index(prev)
                count += 1
                total += prev[6]
            messages = rest
        for m in messages:
            folder, subdir, name, unique, _info, size, mtime_ns, uid, gid, mode, inode = m
            if name.isascii() and folder.isascii():       # else names need to_db()
                prev = prev_get((user, folder, unique))
                if prev is not None and prev[6] == size and prev[7] == mtime_ns \
                        and prev[11] == inode and prev[4] == name and prev[3] == subdir \
                        and prev[8] == uid and prev[9] == gid and prev[10] == mode:
                    keep(prev[0])
                    index(prev)
                    count += 1
                    total += size
                    continue
            self.message(user_dir, user, m)
        self.stats["messages"] += count
        self.stats["bytes"] += total

    def message(self, user_dir, user, m):
        """Decide for one scanned message: reuse the previous object, or read it (in a worker
        thread; the result is recorded by _finish on this thread, in any order)."""
        prev = self.prev_messages.get((user, to_db(m.folder), to_db(m.unique)))
        if prev is not None and prev[6] == m.size and prev[7] == m.mtime_ns \
                and prev[11] == m.inode:
            oid = prev[12]
            if prev[4] == to_db(m.name) and prev[3] == m.subdir and prev[8] == m.uid \
                    and prev[9] == m.gid and prev[10] == m.mode:
                # the common case, unchanged since the last run: its row is reused as it is
                self.snapshot_messages.append(prev[0])
                self.index_rows.append(prev)
                self.stats["messages"] += 1
                self.stats["bytes"] += m.size
                return
        else:
            # moved to another folder under its name (same file: same inode)
            moved = self.prev_inodes.get(m.inode)
            oid = moved[12] if moved is not None and moved[5] == to_db(m.unique) \
                and moved[6] == m.size and moved[7] == m.mtime_ns else None
        if oid is not None:
            self._record(user, m, oid, prev)
            return
        # the read-ahead hint at once, the read with the batch
        self.prefetch.put(os.path.join(user_dir, m.relpath))
        self.jobs.append((self._task, len(self._batch), user, prev))
        self._batch.append((user_dir, m))
        if len(self._batch) >= _BATCH:
            self._hand_out()
        # A bounded window keeps memory flat however big the mailboxes are. Messages are
        # recorded in the order they were decided on, each once _WINDOW more are waiting:
        # the catalog's message ids and the packs' layout do not depend on the batching.
        while len(self.jobs) > _WINDOW:
            self._finish(*self.jobs.popleft())

    def _hand_out(self):
        """Give the batch to a worker (its task's future goes in the batch's cell)."""
        self._task[0] = self.pool.submit(_load_messages, self.codec, self.objects.known,
                                         self._batch)
        self._task, self._batch = [None], []

    def drain(self):
        if self._batch:
            self._hand_out()
        while self.jobs:
            self._finish(*self.jobs.popleft())

    def _finish(self, task, i, user, prev):
        if task[0] is None:
            self._hand_out()        # the batch being filled
        got = task[0].result()[i]
        if got is None:
            return                  # expunged since the scan
        if isinstance(got, str):
            self.warn(got)
            return
        m, size, oid, record, hdrs = got
        self.stats["read_files"] += 1
        self.stats["read_bytes"] += size
        self._add(oid, record, size, hdrs)
        self._record(user, m, oid, prev)

    def _record(self, user, m, oid, prev):
        row = (user, to_db(m.folder), m.subdir, to_db(m.name), to_db(m.unique), m.size,
               m.mtime_ns, m.uid, m.gid, m.mode, m.inode, oid)
        if prev is not None and tuple(prev[1:]) == row:
            self.snapshot_messages.append(prev[0])
            self.index_rows.append(prev)
        else:
            mid = self.next_message_id
            self.next_message_id += 1
            self.new_messages.append((mid,) + row)
            self.snapshot_messages.append(mid)
            self.index_rows.append((mid,) + row)
        self.stats["messages"] += 1
        self.stats["bytes"] += m.size

    # -- commit ----------------------------------------------------------------------------
    def commit(self, source, finished):
        self.drain()
        # what only the decisions needed goes before the commit, its memory peak (the
        # previous rows that are not in this snapshot go with it)
        self.prev_messages = self.prev_inodes = self.prev_files = {}
        self.previous = None
        self.prefetch.stop()
        self.pool.shutdown(wait=True)
        self.objects.finish()
        snapshot_id = unused_snapshot_id(self.db, self.started)
        # The index cache is written by another thread while this one fills the catalog
        # (most of both is waiting for the disk); it must be complete before the COMMIT,
        # and a failure to write it fails the run as before.
        with ThreadPoolExecutor(max_workers=1) as index_writer:
            index_written = index_writer.submit(write_index, self.repo, snapshot_id,
                                                self.index_rows)
            write_catalog(self, source, finished, snapshot_id, index_written)
        return snapshot_id


def _load_messages(codec, known, batch):
    """Worker: _load_message for each (user_dir, message) of `batch`, in order."""
    return [_load_message(codec, known, user_dir, m) for user_dir, m in batch]


def _load_message(codec, known, user_dir, m):
    """Worker: read, hash and encode one message; follows a rename made since the scan."""
    got = reading.read_file(os.path.join(user_dir, m.relpath))
    if got is None:
        m = reading.renamed(user_dir, m)
        got = reading.read_file(os.path.join(user_dir, m.relpath)) if m else None
    if got is None or isinstance(got, str):
        return got
    data, st = got
    oid, record, hdrs = prepare(codec, known, data, True)
    m = m._replace(size=len(data), mtime_ns=st.st_mtime_ns, uid=st.st_uid, gid=st.st_gid,
                   mode=stat.S_IMODE(st.st_mode), inode=st.st_ino)
    return m, len(data), oid, record, hdrs
