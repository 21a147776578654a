"""The objects one run adds to the repository: is this content stored already, and the packs
the new content goes to.

New objects are written to packs that are made durable (fsync) during the run, but the
catalog learns about them only at the run's commit (snapshot_commit.py), together with the
snapshot: until then every such pack is garbage to every other process, which
`Repository.clean_up` removes after a crash, and `NewObjects.discard` after a failure.
"""
import array
import bisect
import hashlib
import os
import sqlite3
import stat
import struct
import sys
import threading
import time

from mailstore.backup import catalog, headers
from mailstore.backup.objects import PackWriter, pack_path

# KnownObjects' file, REPO/index/<snapshot id>.known
KNOWN_MAGIC = b"mailstore known objects 1\n"
KNOWN_SUFFIX = ".known"

# warm_catalog_pages: how many connections read at once, and from how many new objects on:
# a night at 100 000 messages adds about 1 000, whose inserts took 0.23 s cold, and reading
# ahead made that run 0.13 s slower; at a million, 10 900 took 4.2 s (2026-12-06)
WARM_READERS = 8
WARM_MIN = 4096

# big-endian 64-bit integer: numeric order is the hex text's order (the catalog's)
_PREFIX = struct.Struct(">Q")


class KnownObjects:
    """Which objects the repository holds, for deciding that new content is new without a
    catalog lookup each (on a cold cache every lookup is a random read of the objects
    table, and the nightly run's new messages are nearly all new content).

    Kept as a sorted array of the first 64 bits of every object id, searched by bisection:
    8 bytes per object where a set of Python ints took about 77. An id whose prefix is
    absent is taken for not stored; one whose prefix is present is looked up for real.
    Nothing else writes objects while the run holds the exclusive lock.

    Loaded in a background thread while the run scans, from one of:
    - the file the run that made the newest snapshot left, REPO/index/<snapshot>.known
      (save(); KNOWN_MAGIC, then "<count> <SHA-256 of the body>", then the prefixes as
      big-endian 64-bit integers): 8 MB at a million objects, read in one go;
    - the catalog: from the covering index objects_pack, sorted by SQLite in ONE step
      (group_concat: the thread never competes for the interpreter lock row by row), made
      into the array at C speed. At a million objects that index is some 130 MB, which a
      cold page cache reads in 2 to 3.4 s (2026-12-06).
    The file needs no key because nothing it says can do harm: a prefix it lacks has the
    content stored once more (the catalog then names the new copy, as for a lost object,
    lost.py), one it has in excess costs a lookup, and an object that prune or forget dropped
    since is such an excess. Its checksum and its name (the newest snapshot's; the run
    writes it after its commit) keep bit rot and an older file out all the same: either one
    has the catalog read instead.
    """

    def __init__(self, path, index_dir=None):
        self._prefixes = None        # None: not loaded (an error): every id is looked up
        self._ready = threading.Event()
        threading.Thread(target=self._load, args=(path, index_dir), daemon=True).start()

    def _load(self, path, index_dir):
        try:
            conn = catalog.connect(path, readonly=True, any_thread=True)
            try:
                newest = conn.execute(
                    "SELECT id FROM snapshots ORDER BY seq DESC LIMIT 1").fetchone()
                prefixes = None
                if newest is not None and index_dir is not None:
                    prefixes = _read_known(os.path.join(index_dir, newest[0] + KNOWN_SUFFIX))
                if prefixes is None:
                    # from the covering index objects_pack (narrower than the table, whose
                    # rows hold the encrypted headers), sorted by SQLite
                    text, = conn.execute(
                        "SELECT group_concat(p, '') FROM (SELECT substr(id, 1, 16) AS p"
                        " FROM objects INDEXED BY objects_pack ORDER BY p)").fetchone()
                    prefixes = _from_big_endian(bytes.fromhex(text or ""))
                    del text
                self._prefixes = prefixes
            finally:
                conn.close()
        except (sqlite3.Error, ValueError, TypeError):
            self._prefixes = None
        finally:
            self._ready.set()

    def save(self, index_dir, snapshot_id, added):
        """After the commit of snapshot `snapshot_id`: write the known prefixes and those of
        `added` (the ids the run stored) to REPO/index/<snapshot_id>.known for the next run.
        A cache only: nothing is written when the prefixes were never loaded, and a failure
        leaves the next run reading the catalog (never raises)."""
        if not self._ready.is_set() or self._prefixes is None:
            return
        tmp = os.path.join(index_dir, "known.tmp")
        try:
            merged = _merged(self._prefixes, sorted({int(oid[:16], 16) for oid in added}))
            body = _to_big_endian(merged)
            head = "{} {}\n".format(len(merged), hashlib.sha256(body).hexdigest())
            with open(tmp, "wb") as f:
                os.fchmod(f.fileno(), 0o600)
                f.write(KNOWN_MAGIC + head.encode("ascii") + body)
            os.replace(tmp, os.path.join(index_dir, snapshot_id + KNOWN_SUFFIX))
        except (OSError, ValueError, MemoryError):
            try:
                os.unlink(tmp)
            except OSError:
                pass

    def may_hold(self, oid):
        self._ready.wait()
        if self._prefixes is None:
            return True
        try:
            prefix = _PREFIX.unpack(bytes.fromhex(oid[:16]))[0]
        except (ValueError, struct.error):
            return True
        i = bisect.bisect_left(self._prefixes, prefix)
        return i < len(self._prefixes) and self._prefixes[i] == prefix


def _from_big_endian(data):
    """The array of 64-bit integers whose big-endian bytes are `data`."""
    prefixes = array.array("Q")
    prefixes.frombytes(data)
    if sys.byteorder == "little":
        prefixes.byteswap()
    return prefixes


def _to_big_endian(prefixes):
    out = array.array("Q", prefixes)
    if sys.byteorder == "little":
        out.byteswap()
    return out.tobytes()


def _merged(old, new):
    """Sorted array `old` with the sorted ints `new` it lacks, at C speed between them."""
    if not new:
        return old
    if len(new) * 8 > len(old):
        return array.array("Q", sorted(set(old).union(new)))
    out, start = array.array("Q"), 0
    for p in new:
        i = bisect.bisect_left(old, p, start)
        out.extend(old[start:i])
        if i == len(old) or old[i] != p:
            out.append(p)
        start = i
    out.extend(old[start:])
    return out


def _read_known(path):
    """The prefixes of a .known file (KnownObjects.save), or None where there is none whole:
    missing, not a regular file (opened without blocking: a FIFO never hangs the run), cut
    short, or its checksum wrong."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None
            if f.read(len(KNOWN_MAGIC)) != KNOWN_MAGIC:
                return None
            head = f.readline(200).decode("ascii").split()
            body = f.read()
    except (OSError, UnicodeDecodeError):
        return None
    if len(head) != 2 or not head[0].isdigit() or len(body) != int(head[0]) * 8 \
            or hashlib.sha256(body).hexdigest() != head[1]:
        return None
    return _from_big_endian(body)


def prepare(codec, known, data, is_message):
    """(id, record or None if already stored, headers): the CPU-heavy part, thread-safe
    (hashing, zlib and AES all release the GIL). `known(id)` says if it is stored already."""
    oid = codec.object_id(data)
    if known(oid):
        return oid, None, None
    return oid, codec.encode(oid, data), headers.decode(data) if is_message else None


class NewObjects:
    """The objects one run writes, and the catalog rows that will name them.

    `sealed`: (name, size, time) of the packs finished; `new_objects`: rows for the objects
    table. Both are written to the catalog by the run's commit, nowhere else.
    """

    def __init__(self, repo, lost=frozenset()):
        self.repo = repo
        self.lost = lost              # in the catalog but lost (lost.py): stored anew
        self.codec = repo.codec
        self.added = set()            # ids of the objects this run wrote
        # Workers ask the catalog whether an object exists through their own read-only
        # connection (the run writes nothing to the catalog before its final commit).
        self._local = threading.local()
        self._readers = []
        self.stored = KnownObjects(os.path.join(repo.path, "catalog.sqlite"),
                                   os.path.join(repo.path, "index"))
        self.sealed = []              # (name, size, time) of the packs this run finished
        self.new_objects = []         # rows for the objects table
        self.writer = PackWriter(repo.tmp_dir, repo.packs_dir, repo.pack_size, self._sealed,
                                 repo.codec)

    def _sealed(self, name, size, entries):
        # Recorded in the catalog only by the commit, together with the snapshot: until then
        # the pack is garbage to every other process, and clean_up removes it after a crash.
        self.sealed.append((name, size, time.time()))
        self.new_objects.extend(
            (oid, name, off, length, plain,
             self.codec.seal(h[0], oid, "from") if h else None,
             self.codec.seal(h[1], oid, "subject") if h else None,
             h[2] if h else None)
            for oid, off, length, plain, h in entries)

    def known(self, oid):
        """Is this object in the repository already? Safe to call from any thread."""
        if oid in self.added:
            return True
        if oid in self.lost or not self.stored.may_hold(oid):
            return False
        conn = getattr(self._local, "db", None)
        if conn is None:
            conn = catalog.connect(os.path.join(self.repo.path, "catalog.sqlite"),
                                   readonly=True, any_thread=True)
            self._local.db = conn
            self._readers.append(conn)
        return conn.execute("SELECT 1 FROM objects WHERE id = ?", (oid,)).fetchone() is not None

    def warm_catalog_pages(self):
        """Read the catalog pages the commit's object rows go to, several at a time.

        The objects table is keyed by the object id, a hash: each new row goes to a page at a
        random place of a table that grows every night, and on a cold page cache SQLite reads
        those pages one after the other as it inserts (10 900 rows took 5.3 s at a million
        messages). Looking the ids up first, from WARM_READERS connections at once, has the
        disk serve that many reads at a time; the inserts then find the pages in the page
        cache. Reads only: a failure here changes nothing, the commit reads what it needs."""
        ids = sorted(row[0] for row in self.new_objects)
        if len(ids) < WARM_MIN:
            return
        path = os.path.join(self.repo.path, "catalog.sqlite")
        step = -(-len(ids) // WARM_READERS)

        def look_up(part):
            try:
                conn = catalog.connect(path, readonly=True, any_thread=True)
                try:
                    # a few hundred ids per statement: SQLite looks them up without the
                    # interpreter lock, which the run's other threads want meanwhile
                    for i in range(0, len(part), 500):
                        chunk = part[i:i + 500]
                        conn.execute("SELECT count(*) FROM objects WHERE id IN ({})".format(
                            ",".join("?" * len(chunk))), chunk).fetchone()
                finally:
                    conn.close()
            except sqlite3.Error:
                pass            # only a warm-up: the commit reads what it needs itself
        threads = [threading.Thread(target=look_up, args=(ids[i:i + step],), daemon=True)
                   for i in range(0, len(ids), step)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def close_readers(self):
        for conn in self._readers:
            conn.close()
        self._readers = []

    def add(self, oid, record, size, hdrs):
        """Write `record` (None: stored already) to a pack unless this run wrote it before;
        True if it was written now."""
        if record is not None and oid not in self.added:
            self.added.add(oid)
            self.writer.add(oid, record, size, hdrs)
            return True
        return False

    def finish(self):
        """After the last add: close the workers' catalog readers, seal the last pack."""
        self.close_readers()
        self.writer.seal()

    def discard(self):
        """After a failure: remove every pack this run wrote (the catalog names none of them),
        so that a full disk gets its space back. Never raises."""
        self.close_readers()
        self.writer.abort()
        for name, _size, _t in self.sealed:
            try:
                os.unlink(pack_path(self.repo.packs_dir, name))
            except OSError:
                pass
