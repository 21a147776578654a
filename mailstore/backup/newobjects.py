"""The objects one run adds to the repository: is this content stored already, and the packs
the new content goes to.

New objects are written to packs that are made durable (fsync) during the run, but the
catalog learns about them only at the run's commit (snapshot_commit.py), together with the
snapshot: until then every such pack is garbage to every other process, which
`Repository.clean_up` removes after a crash, and `NewObjects.discard` after a failure.
"""
import array
import bisect
import os
import sqlite3
import struct
import sys
import threading
import time

from mailstore.backup import catalog, headers
from mailstore.backup.objects import PackWriter, pack_path

# big-endian 64-bit integer: numeric order is the hex text's order (the catalog's)
_PREFIX = struct.Struct(">Q")


class KnownObjects:
    """Which objects the repository holds, for deciding that new content is new without a
    catalog lookup each (on a cold cache every lookup is a random read of the objects
    table, and the nightly run's new messages are nearly all new content).

    Loaded in a background thread while the run scans: the first 64 bits of every object id,
    read from the covering index objects_pack and sorted by SQLite, in ONE SQLite step (group_concat: the thread never competes for the GIL row
    by row) and kept as a sorted array of 64-bit integers, searched by bisection: 8 bytes
    per object where a set of Python ints took about 77. The array is made from the bytes
    at C speed, with no Python int per object on the way. An id whose prefix is absent is certainly not stored; one
    whose prefix is present is looked up for real. Nothing else writes objects while the run
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
                # from the covering index objects_pack (narrower than the table, whose
                # rows hold the encrypted headers), sorted by SQLite
                text, = conn.execute(
                    "SELECT group_concat(p, '') FROM (SELECT substr(id, 1, 16) AS p"
                    " FROM objects INDEXED BY objects_pack ORDER BY p)").fetchone()
                prefixes = array.array("Q")
                prefixes.frombytes(bytes.fromhex(text or ""))
                del text
                if sys.byteorder == "little":
                    prefixes.byteswap()     # big-endian values: sorted as the ids are
                self._prefixes = prefixes
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
            prefix = _PREFIX.unpack(bytes.fromhex(oid[:16]))[0]
        except (ValueError, struct.error):
            return True
        i = bisect.bisect_left(self._prefixes, prefix)
        return i < len(self._prefixes) and self._prefixes[i] == prefix


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
        self.stored = KnownObjects(os.path.join(repo.path, "catalog.sqlite"))
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
