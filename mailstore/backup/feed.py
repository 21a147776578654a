"""The scan feed of a run: what the scanned users turn into, message by message.

A `Feed` holds the state of one run: where the previous snapshot's rows come from (the index
cache, user by user), the decision per scanned message, and what the commit writes. It works
user by user: a user's previous rows are decoded when the user is scanned, looked up while
the user's messages are decided, and let go of with the user's new rows, which go to the new
index cache at once (index_cache.Writer); what stays for the whole run is per message only
an id in an array (and the rows of messages new to the catalog), so that memory does not
grow with the mailboxes' size as rows would. The decision: a message whose
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
import array
import collections
import operator
import os
import stat
from concurrent.futures import ThreadPoolExecutor

from mailstore import maildir
from mailstore.backup import auth, catalog, reading, scan
from mailstore.backup.catalog import to_db
from mailstore.backup.index_cache import Writer, previous_rows
from mailstore.backup.newobjects import NewObjects, prepare
from mailstore.backup.rows_digest import Digest as RowsDigest
from mailstore.backup.snapshot_commit import unused_snapshot_id, write_catalog

# messages per worker task, and the messages waiting to be recorded
_BATCH = 16
_WINDOW = 64


class Feed:
    """The state of one run: the previous snapshot's index and what was added."""

    def __init__(self, repo, started, progress, workers=None, source_root=None,
                 full_scan=False, scan_ns=0, lost=frozenset(), missing_packs=(), users=(),
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
        self.new_messages = NewMessages(self.db)    # rows for the messages table
        self.index_rows = []          # the message rows of the user being recorded
        # a user's rows until its last read is done (reads overlap the next users' work)
        self.rows_of = {}
        self.outstanding = collections.Counter()    # user -> reads not finished
        self.closing = collections.deque()          # users in order
        self.snapshot_messages = array.array("q")   # message ids in this snapshot
        self.files = []               # rows for the files table (without snapshot)
        self.scan_ns = scan_ns        # real clock before the scan began (scan.py)
        self.dir_state = []           # rows for the scan_dirs table
        self.prev_source = None       # the previous rows by user (index_cache)
        self._load_previous(source_root, full_scan, skip, suspect)
        # the snapshot's id is chosen now: the index cache is written (and its keyed digest
        # taken) as the run goes
        self.snapshot_id = unused_snapshot_id(self.db, started)
        self.index = Writer(repo, self.snapshot_id, len(users))

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
        self.prev_seq, self.prev_count = None, 0
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
        source, problem, self._prev_digest = previous_rows(
            self.repo, row[0], row[1], row[2],
            use_cache=row[1] not in suspect and self.scan_mode == "incremental")
        if problem is not None:
            self.warn(problem)
        self.prev_seq, self.prev_id, self.prev_count, self.prev_source = \
            row[0], row[1], row[2], source
        if self._prev_digest is None and self.repo.auth is not None:
            # hashed now, before the scan takes the rows user by user
            self._prev_digest = auth.ordered_messages_digest(source.chunks_in_id_order())
        if row[1] in suspect:
            self.check_previous()
        if self.scan_mode == "incremental":
            self.previous = scan.load_previous(self.db, row[0], meta)
        for r in self.db.execute(
                "SELECT kind, user, path, size, mtime_ns, object FROM files"
                " WHERE snapshot = ? AND object IS NOT NULL", (row[0],)):
            # files carry no inode column; size+mtime+path is the same test rsync makes
            if r[5] in self.lost:
                continue
            self.prev_files[(r[0], r[1], r[2])] = (r[3], r[4], r[5])

    def previous_rows(self, user):
        """`user`'s rows in the previous snapshot (any thread: the scan's threads decode them
        while the main thread records other users). An incremental scan's are PreviousRows
        (scan.py): the scan hands them back as the messages it took over, and they are the
        rows the new snapshot reuses, with no second tuple per message."""
        if self.prev_source is None:
            return []
        return self.prev_source.rows(
            user, scan.PreviousRow if self.previous is not None else None)

    def previous_count(self, user):
        return self.prev_source.count_of(user) if self.prev_source is not None else 0

    def check_previous(self):
        """What the new snapshot builds on is authentic (nothing is stored before this):
        the previous rows' digest (vouched for by the cache, else computed from the rows)
        against the snapshot's authentication."""
        if self.prev_seq is not None and self.repo.auth is not None:
            self.repo.check_snapshot_rows(self.prev_seq, self.prev_count, self._prev_digest)

    def _index_user(self, rows):
        """The lookups message() needs for one user, from the user's previous rows."""
        if self.lost:
            # a message whose object is lost is read again, as if it were new
            rows = [r for r in rows if r[12] not in self.lost]
        # (user, folder, uniq) -> row and inode -> row, built at C speed. The unique name is
        # compared on an inode lookup: a file on the inode of a message deleted since (ext4
        # hands freed inodes out again at once) may have its size and mtime too (a restore,
        # a copy tool keeping mtimes), but not its unique name.
        self.prev_messages = dict(zip(map(operator.itemgetter(1, 2, 5), rows), rows))
        # keyed by the inode alone (the row's own int: no key object per row); the unique
        # name, size and mtime are compared on lookup (moved_object). Of hard links (one
        # inode, several rows) the last row is kept: a moved one of the others is read again.
        self.prev_inodes = dict(zip(map(operator.itemgetter(11), rows), rows))

    def _close_done(self):
        """Users whose messages are all recorded, in order: their rows go to the new index
        cache and are let go of."""
        while self.closing and not self.outstanding[self.closing[0]]:
            self._end_user(self.closing.popleft())

    def _end_user(self, name):
        rows = self.rows_of.pop(name)
        del self.outstanding[name]
        if rows:
            self.index.add(name, rows)

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
        self.index.discard()
        if self.prev_source is not None:
            self.prev_source.close()

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
    def user(self, name, tree, reused=None, dir_state=None, prev_rows=None):
        """Record one scanned user (`tree` is a maildir.UserTree or the MaildirError).

        `reused`: {Message: previous row} for messages an incremental scan took over from the
        previous snapshot; `dir_state`: {relpath: (inode, ctime_ns)} for the next run;
        `prev_rows`: the user's rows in the previous snapshot (default: read here)."""
        if prev_rows is None:
            prev_rows = self.previous_rows(name)
        self._index_user(prev_rows)
        self.index_rows = self.rows_of[name] = []
        self._user(name, tree, reused, dir_state)
        self.prev_messages = self.prev_inodes = {}
        self.closing.append(name)
        self._close_done()

    def _user(self, name, tree, reused, dir_state):
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
            rest = []
            for m in messages:
                if type(m) is PreviousRow:
                    # the previous row itself (previous_rows): reused as it is
                    prev = m
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
        self.outstanding[user] += 1
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
        self.outstanding[user] -= 1
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
            self.rows_of[user].append(prev)
        else:
            mid = self.next_message_id
            self.next_message_id += 1
            self.new_messages.add((mid,) + row)
            self.snapshot_messages.append(mid)
            self.rows_of[user].append((mid,) + row)
        self.stats["messages"] += 1
        self.stats["bytes"] += m.size

    # -- commit ----------------------------------------------------------------------------
    def commit(self, source, finished):
        self.drain()
        self._close_done()
        if self.prev_source is not None:
            self.prev_source.close()
        self.prev_messages = self.prev_inodes = self.prev_files = {}
        self.previous = None
        self.prefetch.stop()
        self.pool.shutdown(wait=True)
        self.objects.finish()
        # The index cache is made durable by another thread, and read back and hashed for
        # the messages digest by another process (rows_digest.py says why), while this
        # thread fills the catalog; both must be done before the COMMIT, and a failure of
        # either fails the run as before. rows() flushes the file: before finish() makes it
        # durable, and before the digest reads it.
        try:
            cache = self.index.rows()
            with ThreadPoolExecutor(max_workers=1) as index_writer:
                index_written = index_writer.submit(self.index.finish)
                rows_digest = None if self.repo.auth is None else RowsDigest(cache)
                write_catalog(self, source, finished, self.snapshot_id, index_written,
                              rows_digest)
        finally:
            self.index.close()
        return self.snapshot_id


class NewMessages:
    """The message rows new to the catalog (a full backup: every message; a nightly one: new
    mail and every flag change), kept in a temporary table of the run's catalog connection
    rather than in memory: the commit copies them into `messages` inside SQLite. A temporary
    table is the connection's own (a file SQLite deletes when the connection closes), outside
    the catalog and its transactions: a run that fails leaves nothing of it behind."""

    _WIDTH = 13         # the messages table's columns

    def __init__(self, db):
        self.db = db
        self.count = 0
        # one statement's worth (catalog.insert_many says why not executemany)
        self._per = catalog.rows_per_statement(db, self._WIDTH)
        self._batch = []
        db.execute("CREATE TEMP TABLE IF NOT EXISTS new_messages AS SELECT * FROM messages"
                   " WHERE 0")
        db.execute("DELETE FROM temp.new_messages")

    def add(self, row):
        self._batch.append(row)
        self.count += 1
        if len(self._batch) >= self._per:
            self.flush()

    def flush(self):
        if self._batch:
            catalog.insert_many(self.db, "INSERT INTO temp.new_messages", self._WIDTH,
                                self._batch)
            self._batch = []


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
