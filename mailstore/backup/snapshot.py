"""`run`: take one snapshot of a mail root (plus optional config paths and a database dump).

Scan (scan.py): a full scan lstat's every message; the nightly incremental scan takes every
name the previous snapshot saw in the same new/ or cur/ over with its catalog row, unstat'ed,
and lists no directory that nothing touched. Then decide, then act, per remaining message: a
message whose (user, folder, unique name) was in the previous snapshot with the same size,
mtime and inode is the same immutable file, whatever its flags now say, so it reuses that
snapshot's object without being opened. Only new or rewritten files are read, hashed, and
(when their content is new to the repository) compressed into a pack.

Atomicity: new objects go to packs that are made durable (fsync) during the run; the catalog
learns about them, the snapshot row and its contents in ONE transaction at the very end. A run
that dies at any point before that commit leaves no snapshot and no catalog change behind, only
pack files the catalog does not name, which the next run (`clean_up`) deletes; a run that fails
(ENOSPC, I/O error) deletes its packs itself. Earlier snapshots are never modified.
"""
import collections
import errno
import gc
import itertools
import marshal
import operator
import os
import queue
import secrets
import shutil
import socket
import sqlite3
import stat
import struct
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from mailstore import maildir
from mailstore.backup import catalog, headers, scan
from mailstore.backup.catalog import to_db
from mailstore.backup.errors import BackupError
from mailstore.backup.objects import PackWriter, pack_path
from mailstore.backup.repository import Repository

# native-order 64-bit integer, as memoryview.cast("Q") reads the same bytes
_PREFIX = struct.Struct("=Q")

# Users scanned at once (the scan is I/O-bound: one lstat per message).
_SCAN_THREADS = 8


def new_snapshot_id(now):
    return time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime(now)) + "-" + secrets.token_hex(2)


class _KnownObjects:
    """Which objects the repository holds, for deciding that new content is new without a
    catalog lookup each (on a cold cache every lookup is a random read of the objects
    table, and the nightly run's new messages are nearly all new content).

    Loaded in a background thread while the run scans: the first 64 bits of every object id,
    read from the covering index objects_pack (narrower than the table) in ONE SQLite step
    (group_concat: the thread never competes for the GIL row by row) and turned into a set
    of integers at C speed. An id whose prefix is absent is certainly not stored; one whose
    prefix is present is looked up for real. Nothing else writes objects while the run
    holds the exclusive lock.
    """

    def __init__(self, path):
        self._prefixes = None        # None: not loaded (an error): every id is looked up
        self._ready = threading.Event()
        threading.Thread(target=self._load, args=(path,), daemon=True).start()

    def _load(self, path):
        try:
            conn = catalog.connect(path, readonly=True, any_thread=True)
            try:
                text, = conn.execute("SELECT group_concat(substr(id, 1, 16), '')"
                                     " FROM objects").fetchone()
                self._prefixes = set(memoryview(bytes.fromhex(text or "")).cast("Q"))
            finally:
                conn.close()
        except (sqlite3.Error, ValueError, TypeError):
            self._prefixes = None
        finally:
            self._ready.set()

    def may_hold(self, oid):
        self._ready.wait()
        if self._prefixes is None:
            return True
        try:
            return _PREFIX.unpack(bytes.fromhex(oid[:16]))[0] in self._prefixes
        except (ValueError, struct.error):
            return True


class _Run:
    """The state of one run (internal): the previous snapshot's index and what was added."""

    def __init__(self, repo, started, progress, workers=None, source_root=None,
                 full_scan=False, scan_ns=0):
        self.repo = repo
        self.db = repo.db
        self.codec = repo.codec
        self.progress = progress
        self.started = started
        self.stats = dict(messages=0, bytes=0, new_objects=0, new_bytes=0, read_files=0,
                          read_bytes=0, warnings=0)
        self.warnings = []
        self.added = set()            # ids of the objects this run wrote
        # Workers ask the catalog whether an object exists through their own read-only
        # connection (the run writes nothing to the catalog before its final commit).
        self._local = threading.local()
        self._readers = []
        self.stored = _KnownObjects(os.path.join(repo.path, "catalog.sqlite"))
        self.pool = ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1))
        self.prefetch = _Prefetcher()
        self.jobs = collections.deque()
        self.window = 64
        self.sealed = []              # (name, size, time) of the packs this run finished
        self.new_objects = []         # rows for the objects table
        self.writer = PackWriter(repo.tmp_dir, repo.packs_dir, repo.pack_size, self._sealed)
        self.next_message_id = (self.db.execute("SELECT max(id) FROM messages").fetchone()[0]
                                or 0) + 1
        self.new_messages = []        # rows for the messages table
        self.index_rows = []          # every message row of this snapshot (index cache)
        self.snapshot_messages = []   # message ids in this snapshot
        self.files = []               # rows for the files table (without snapshot)
        self.scan_ns = scan_ns        # real clock before the scan began (scan.py)
        self.dir_state = []           # rows for the scan_dirs table
        self._load_previous(source_root, full_scan)

    def _load_previous(self, source_root, full_scan):
        row = self.db.execute("SELECT seq, id, messages, source FROM snapshots ORDER BY seq"
                              " DESC LIMIT 1").fetchone()
        self.prev_messages = {}
        self.prev_inodes = {}
        self.prev_files = {}
        self.previous = None          # scan.Previous when this run scans incrementally
        self.prev_seq, self.prev_ids, self._prev_rows = None, frozenset(), ()
        meta = scan.load_meta(self.db)
        self.scan_mode, self.scan_reason = scan.choose(
            self.db, row and (row[0], row[1], row[3]), source_root, self.started, full_scan)
        self.last_full_scan = self.started if self.scan_mode == "full" \
            else meta["last_full_scan"]
        if row is None:
            return
        rows = _previous_rows(self.repo, row[0], row[1], row[2])
        self.prev_seq, self._prev_rows = row[0], rows
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
            self.prev_files[(r[0], r[1], r[2])] = (r[3], r[4], r[5])

    def index_previous(self):
        """The lookups message() needs, from the previous snapshot's rows: built after the
        scan threads have started (they only need the rows by user), so that this CPU work
        overlaps with their waiting for the disk."""
        rows, self._prev_rows = self._prev_rows, ()
        if not rows:
            return
        self.prev_ids = frozenset(map(operator.itemgetter(0), rows))
        # (user, folder, uniq) -> row and (ino, size, mtime_ns) -> object, built at C speed
        self.prev_messages = dict(zip(map(operator.itemgetter(1, 2, 5), rows), rows))
        self.prev_inodes = dict(zip(map(operator.itemgetter(11, 6, 7), rows),
                                    map(operator.itemgetter(12), rows)))

    def warn(self, text):
        self.warnings.append(text)
        self.stats["warnings"] += 1

    # -- objects ---------------------------------------------------------------------------
    def _sealed(self, name, size, entries):
        # Recorded in the catalog only by commit(), together with the snapshot: until then
        # the pack is garbage to every other process, and clean_up removes it after a crash.
        self.sealed.append((name, size, time.time()))
        self.new_objects.extend(
            (oid, name, off, length, plain,
             self.codec.seal(h[0]) if h else None, self.codec.seal(h[1]) if h else None,
             h[2] if h else None)
            for oid, off, length, plain, h in entries)

    def discard(self):
        """After a failure: remove every pack this run wrote (the catalog names none of them),
        so that a full disk gets its space back. Never raises."""
        for future, _user, _prev in self.jobs:
            future.cancel()
        self.prefetch.stop()
        self.pool.shutdown(wait=True)
        self.close_readers()
        self.writer.abort()
        for name, _size, _t in self.sealed:
            try:
                os.unlink(pack_path(self.repo.packs_dir, name))
            except OSError:
                pass

    def known(self, oid):
        """Is this object in the repository already? Safe to call from any thread."""
        if oid in self.added:
            return True
        if not self.stored.may_hold(oid):
            return False
        conn = getattr(self._local, "db", None)
        if conn is None:
            conn = catalog.connect(os.path.join(self.repo.path, "catalog.sqlite"),
                                   readonly=True, any_thread=True)
            self._local.db = conn
            self._readers.append(conn)
        return conn.execute("SELECT 1 FROM objects WHERE id = ?", (oid,)).fetchone() is not None

    def close_readers(self):
        for conn in self._readers:
            conn.close()
        self._readers = []

    def store(self, data, is_message):
        """The id of `data`, adding it to the repository if it is new there (main thread)."""
        oid, record, hdrs = _prepare(self.codec, self.known, data, is_message)
        return self._add(oid, record, len(data), hdrs)

    def _add(self, oid, record, size, hdrs):
        if record is not None and oid not in self.added:
            self.added.add(oid)
            self.writer.add(oid, record, size, hdrs)
            self.stats["new_objects"] += 1
            self.stats["new_bytes"] += len(record)
        return oid

    def read(self, path):
        """(bytes, stat) of a regular file (main thread); None if it vanished."""
        got = _read(path)
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
            self.files.append(("dir", name, to_db(_folder_of(d.relpath)), to_db(d.relpath),
                               d.mode, d.uid, d.gid, d.mtime_ns, 0, None, None))
        for s in tree.symlinks:
            self.files.append(("symlink", name, to_db(_folder_of(s.relpath)), to_db(s.relpath),
                               s.mode, s.uid, s.gid, s.mtime_ns, s.size, None, to_db(s.link)))
        # Index files are caches Dovecot rebuilds and tmp/ holds deliveries in progress:
        # neither belongs in a backup. Control files and the user's other files (sieve
        # scripts...) do.
        for e in tree.control + tree.other:
            self.file(e.kind, name, _folder_of(e.relpath), e.relpath,
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
            rest = []
            for m in messages:
                if type(m) is PreviousRow:
                    prev = tuple(m)         # plain tuple: the index cache is marshalled
                else:
                    prev = reused_get(m)
                    if prev is None:
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
            oid = self.prev_inodes.get((m.inode, m.size, m.mtime_ns))
        if oid is not None:
            self._record(user, m, oid, prev)
            return
        self.prefetch.put(os.path.join(user_dir, m.relpath))
        self.jobs.append((self.pool.submit(_load_message, self.codec, self.known, user_dir, m),
                          user, prev))
        # a bounded window keeps memory flat however big the mailboxes are
        while len(self.jobs) > self.window:
            self._finish(*self.jobs.popleft())

    def drain(self):
        while self.jobs:
            self._finish(*self.jobs.popleft())

    def _finish(self, future, user, prev):
        got = future.result()
        if got is None:
            return              # expunged since the scan
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

    # -- extras ----------------------------------------------------------------------------
    def include(self, path):
        """A config path (file or tree), stored under its absolute path; links kept as links."""
        path = os.path.abspath(path)
        try:
            st = os.lstat(path)
        except OSError as e:
            self.warn("--include {}: {}".format(path, e.strerror or e))
            return
        self._include_one(path, st)
        if stat.S_ISDIR(st.st_mode):
            for dirpath, dirnames, filenames in os.walk(path, onerror=self._walk_error):
                for name in sorted(dirnames) + sorted(filenames):
                    full = os.path.join(dirpath, name)
                    try:
                        self._include_one(full, os.lstat(full))
                    except FileNotFoundError:
                        pass

    def _walk_error(self, e):
        self.warn("--include: {}".format(e))

    def _include_one(self, path, st):
        meta = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns)
        if stat.S_ISDIR(st.st_mode):
            self.files.append(("include-dir", None, None, to_db(path)) + meta + (0, None, None))
        elif stat.S_ISLNK(st.st_mode):
            self.files.append(("include-symlink", None, None, to_db(path)) + meta +
                              (st.st_size, None, to_db(os.readlink(path))))
        elif stat.S_ISREG(st.st_mode):
            got = self.read(path)
            if got is not None:
                oid = self.store(got[0], is_message=False)
                self.files.append(("include", None, None, to_db(path)) + meta +
                                  (len(got[0]), oid, None))
        else:
            self.warn("--include {}: not a file, directory or link; skipped".format(path))

    def database_dump(self, database, command=None, defaults_file=None):
        """A consistent dump of one MariaDB database, taken while the server runs.

        --single-transaction: one consistent InnoDB snapshot without locking the tables that
        Postfix and Dovecot read. Credentials: root's unix socket by default (Debian), or a
        client options file (`defaults_file`, passed as --defaults-extra-file).
        """
        if command is None:
            tool = shutil.which("mariadb-dump") or shutil.which("mysqldump") or "mariadb-dump"
            command = [tool] + (["--defaults-extra-file=" + os.fspath(defaults_file)]
                                if defaults_file else []) + [
                "--single-transaction", "--routines", "--events", "--triggers", database]
        try:
            proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as e:
            raise BackupError("database dump {}: cannot run {}: {}".format(
                database, command[0], e.strerror or e))
        if proc.returncode != 0:
            raise BackupError("database dump {} failed (exit {}): {}".format(
                database, proc.returncode, proc.stderr.decode("utf-8", "replace").strip()))
        oid = self.store(proc.stdout, is_message=False)
        self.files.append(("dbdump", None, None, "mysql/{}.sql".format(database), 0o600,
                           0, 0, int(time.time() * 1e9), len(proc.stdout), oid, None))

    # -- commit ----------------------------------------------------------------------------
    def commit(self, source, finished):
        self.drain()
        self.prefetch.stop()
        self.pool.shutdown(wait=True)
        self.close_readers()
        self.writer.seal()
        # Runs that start in the same second share the time part of the id; the random suffix
        # is short, so make sure (under the exclusive lock) that this one is not taken.
        snapshot_id = new_snapshot_id(self.started)
        while self.db.execute("SELECT 1 FROM snapshots WHERE id = ?",
                              (snapshot_id,)).fetchone():
            snapshot_id = new_snapshot_id(self.started)
        # The index cache is written by another thread while this one fills the catalog
        # (most of both is waiting for the disk); it must be complete before the COMMIT,
        # and a failure to write it fails the run as before.
        with ThreadPoolExecutor(max_workers=1) as index_writer:
            index_written = index_writer.submit(_write_index, self.repo, snapshot_id,
                                                self.index_rows)
            self._commit_catalog(source, finished, snapshot_id, index_written)
        return snapshot_id

    def _commit_catalog(self, source, finished, snapshot_id, index_written):
        with catalog.transaction(self.db):
            self.db.executemany("INSERT INTO packs VALUES (?, ?, ?)", self.sealed)
            self.db.executemany("INSERT INTO objects VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                self.new_objects)
            self.db.executemany("INSERT INTO messages VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                                self.new_messages)
            cur = self.db.execute(
                "INSERT INTO snapshots (id, started, finished, source, host, messages, bytes,"
                " new_objects, new_bytes, read_files, read_bytes, warnings)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (snapshot_id, self.started, finished, source, socket.gethostname(),
                 self.stats["messages"], self.stats["bytes"], self.stats["new_objects"],
                 self.stats["new_bytes"], self.stats["read_files"], self.stats["read_bytes"],
                 self.stats["warnings"]))
            seq = cur.lastrowid
            self._snapshot_messages(seq)
            self.db.executemany("INSERT INTO files VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                                ((seq,) + row for row in self.files))
            # what the next run's incremental scan may rely on (scan.py)
            self.db.execute("DELETE FROM scan_dirs")
            self.db.executemany("INSERT INTO scan_dirs VALUES (?, ?, ?, ?)", self.dir_state)
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (
                scan.META_KEY, scan.state_meta(snapshot_id, self.scan_ns, self.last_full_scan)))
            index_written.result()      # raises what the index writer raised: no COMMIT

    def _snapshot_messages(self, seq):
        """Record which message rows snapshot `seq` holds.

        A nightly snapshot holds nearly the same rows as the previous one: those are copied
        inside SQLite (one INSERT ... SELECT minus the rows that are gone), only the rest is
        bound from Python. The row count is checked; should it differ (a previous-row list
        that does not match the catalog), the plain way is used instead.
        """
        current = set(self.snapshot_messages)
        gone = self.prev_ids - current
        db = self.db
        if self.prev_seq is not None and len(gone) < len(current) // 2:
            db.execute("CREATE TEMP TABLE IF NOT EXISTS gone (message INTEGER PRIMARY KEY)")
            db.execute("DELETE FROM temp.gone")
            db.executemany("INSERT INTO temp.gone VALUES (?)", ((m,) for m in gone))
            db.execute("INSERT OR IGNORE INTO snapshot_messages SELECT ?, message FROM"
                       " snapshot_messages WHERE snapshot = ? AND message NOT IN"
                       " (SELECT message FROM temp.gone)", (seq, self.prev_seq))
            # in key order: B-tree inserts in order are several times faster than at random
            db.executemany("INSERT OR IGNORE INTO snapshot_messages VALUES (?, ?)",
                           ((seq, mid) for mid in sorted(current - self.prev_ids)))
            db.execute("DELETE FROM temp.gone")
            count, = db.execute("SELECT count(*) FROM snapshot_messages WHERE snapshot = ?",
                                (seq,)).fetchone()
            if count == len(current):
                return
            db.execute("DELETE FROM snapshot_messages WHERE snapshot = ?", (seq,))
        db.executemany("INSERT OR IGNORE INTO snapshot_messages VALUES (?, ?)",
                       ((seq, mid) for mid in sorted(current)))


def _index_path(repo, snapshot_id):
    return os.path.join(repo.path, "index", snapshot_id + ".marshal")


def _previous_rows(repo, seq, snapshot_id, count):
    """The message rows (id, user, folder, subdir, name, uniq, size, mtime_ns, uid, gid, mode,
    ino, object) of snapshot `seq`.

    Read from REPO/index/<id>.marshal, a cache the run that made the snapshot wrote (one
    sequential read; the same rows from the catalog are scattered over it, slow when the
    cache is cold at night). The catalog stays the truth: a missing, unreadable (another
    Python's marshal format) or inconsistent cache file means the join is used instead.
    """
    try:
        with open(_index_path(repo, snapshot_id), "rb") as f:
            rows = marshal.loads(f.read())     # one read: marshal.load(f) reads piecemeal
        if isinstance(rows, list) and len(rows) == count:
            return rows
    except (OSError, ValueError, EOFError, TypeError):
        pass
    return repo.db.execute(
        "SELECT m.id, m.user, m.folder, m.subdir, m.name, m.uniq, m.size, m.mtime_ns, m.uid,"
        " m.gid, m.mode, m.ino, m.object FROM snapshot_messages s JOIN messages m"
        " ON m.id = s.message WHERE s.snapshot = ?", (seq,)).fetchall()


def _write_index(repo, snapshot_id, rows):
    """Write the cache _previous_rows reads (before the catalog commit)."""
    directory = os.path.join(repo.path, "index")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = _index_path(repo, snapshot_id)
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(marshal.dumps(rows))
    # No fsync: after a power cut a short or empty file fails the length check and the
    # catalog is read instead; the rename only keeps readers from seeing a file being written.
    os.rename(path + ".tmp", path)


def drop_stale_indexes(repo, keep_id):
    """Remove index caches of every snapshot but `keep_id` (the newest)."""
    directory = os.path.join(repo.path, "index")
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        if name != "{}.marshal".format(keep_id):
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass


class _Prefetcher:
    """A thread that asks the kernel to start reading the files the workers will read soon
    (posix_fadvise WILLNEED): the disk then works on all queued messages at once instead of
    one read per worker at a time. The call can wait for the I/O queue, hence not done by
    the thread that decides what to read."""

    def __init__(self):
        self._queue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def put(self, path):
        self._queue.put(path)

    def stop(self):
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _loop(self):
        while True:
            path = self._queue.get()
            if path is None:
                return
            _prefetch(path)


def _prefetch(path):
    """Hint the kernel to read `path` ahead. Only a hint, never a read of our own: any error
    is ignored."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    except (OSError, AttributeError):
        pass
    finally:
        os.close(fd)


def _read(path):
    """(bytes, stat) of a regular file, never through a symlink; None if it vanished; a
    warning text if it is no longer a regular file. Safe to call from worker threads."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NOATIME", 0))
    except PermissionError:
        # O_NOATIME is refused unless we own the file or are root: retry without it
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "{}: became a symbolic link; not followed".format(path)
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return "{}: no longer a regular file; skipped".format(path)
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks), st


def _prepare(codec, known, data, is_message):
    """(id, record or None if already stored, headers): the CPU-heavy part, thread-safe
    (hashing, zlib and AES all release the GIL). `known(id)` says if it is stored already."""
    oid = codec.object_id(data)
    if known(oid):
        return oid, None, None
    return oid, codec.encode(oid, data), headers.decode(data) if is_message else None


def _load_message(codec, known, user_dir, m):
    """Worker: read, hash and encode one message; follows a rename made since the scan."""
    got = _read(os.path.join(user_dir, m.relpath))
    if got is None:
        m = _renamed(user_dir, m)
        got = _read(os.path.join(user_dir, m.relpath)) if m else None
    if got is None or isinstance(got, str):
        return got
    data, st = got
    oid, record, hdrs = _prepare(codec, known, data, True)
    m = m._replace(size=len(data), mtime_ns=st.st_mtime_ns, uid=st.st_uid, gid=st.st_gid,
                   mode=stat.S_IMODE(st.st_mode), inode=st.st_ino)
    return m, len(data), oid, record, hdrs


def _folder_of(relpath):
    """The Maildir++ folder a path below the user dir belongs to; None outside Maildir."""
    parts = relpath.split("/")
    if parts[0] != maildir.MAILDIR:
        return None
    if len(parts) > 1 and parts[1].startswith(".") and parts[1] not in (".", ".."):
        return parts[1]
    return ""


def _renamed(user_dir, m):
    """The message `m` under its current name if Dovecot renamed it since the scan, else None."""
    for subdir in maildir.MESSAGE_SUBDIRS:
        rel = maildir.message_relpath(m.folder, subdir, "")
        try:
            names = os.listdir(os.path.join(user_dir, rel))
        except OSError:
            continue
        for name in names:
            if name == m.unique or name.startswith(m.unique + ":"):
                unique, info, _s, _w = maildir.parse_name(name)
                return m._replace(subdir=subdir, name=name, info=info)
    return None


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
    something was skipped (a symlink in a message directory, an unreadable directory...).
    """
    # The cyclic garbage collector is off for the run: it would walk the hundreds of
    # thousands of row tuples the run holds again and again (a tenth of an incremental
    # run's CPU), while the run makes next to no reference cycles.
    gc_was_enabled = gc.isenabled()
    gc.disable()
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
        catalog.create(repo.db)     # tables added since the repository was made
        started = now()
        scan_ns = scan.scan_started_ns()
        try:
            users, anomalies = maildir.list_users(source_root)
        except maildir.MaildirError as e:
            raise BackupError(str(e)) from e
        state = _Run(repo, started, progress, workers, source_root, full_scan, scan_ns)
        # Scanning waits for the disk (directory listings, and lstat(2) of the messages a
        # full scan or a new name needs): several users are scanned at once (the GIL is
        # released while waiting).
        scanners = ThreadPoolExecutor(max_workers=_SCAN_THREADS)
        previous = state.previous
        trees = scanners.map(lambda u: scan.scan_user(source_root, u, previous), users)
        try:
            with scanners:
                state.index_previous()
                for a in anomalies:
                    state.warn("{}: {} ({})".format(a.relpath, a.kind, a.detail))
                for user, (tree, reused, dir_state) in zip(users, trees):
                    state.user(user, tree, reused, dir_state)
            for path in include:
                state.include(path)
            if mysql_dump:
                state.database_dump(mysql_dump, dump_command, mysql_defaults_file)
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
    result = dict(state.stats)
    result["id"] = snapshot_id
    result["warnings"] = state.warnings
    result["started"] = state.started
    result["scan"] = state.scan_mode
    return result


def _describe(e):
    if e.errno == errno.ENOSPC:
        return "no space left on device{}".format(" ({})".format(e.filename)
                                                   if e.filename else "")
    return "{}{}".format(e.strerror or e, ": {}".format(e.filename) if e.filename else "")
