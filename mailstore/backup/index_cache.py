"""The index cache: REPO/index/<id>.marshal, the newest snapshot's message rows in one file.

The next run reads the previous snapshot's rows from it user by user; the same rows in the
catalog are scattered over it, slow when the cache is cold at night. The file is a magic line
and then chunks, each of one user's rows (a header: the user, the row count, the length; then
the marshal of a list of rows). A run writes each user's rows, sorted by id, as soon as it has
recorded that user's messages, and the next run decodes one user's chunks when it scans that
user: no run ever holds all rows of a snapshot, nor their encoding, at once (at a million
messages that was 1.2 GB). The messages digest wants all rows in id order: it merges the
users' sorted chunks (chunks_in_id_order).
Only a cache: the
catalog stays the truth, and the cache is trusted only as far as the catalog vouches for it.
The run that writes the file records its digest in the catalog (meta `index_cache`, in the
snapshot's own transaction): over the snapshot id and the file's bytes, HMAC-SHA256 with a
key derived from the repository key when the repository is encrypted (nobody without the key
can make a file that passes), SHA-256 otherwise. A row taken from the cache is taken over by
the next run unread, so a file that does not match its digest is not used: the run reads the
catalog instead and says so in one warning. Nothing is decoded before it is checked: a first
pass over the file computes its digest and the SHA-256 of each chunk, the second decodes only
chunks whose bytes have the SHA-256 the first pass (that the digest vouched for) found. A file
in the format of an older mailstore (one marshal of the whole list, no magic line) is not used
(the catalog is read instead, without a warning), and an older mailstore does the same with a
file in this format. A missing file, or one the catalog has no digest
for (written by an older mailstore), costs speed and nothing else. `verify` compares the cache
with the catalog row by row (`check`).

The record also binds the snapshot's messages digest (auth.py): besides `digest`, meta
`index_cache` holds `rows`, that messages digest, and `rows_mac`, keyed like the digest over
the snapshot id, `rows` and `digest`. A cache that passes both holds rows whose messages
digest is `rows`, so the next run checks the previous snapshot against its authentication by
comparing `rows` with the snapshot's recorded (MAC'd) digest instead of encoding and hashing
every row again. A record without `rows` (an older mailstore's, or a format 1 repository's)
is trusted as before and the rows are hashed; an older mailstore reads the new record as
before (it ignores the fields it does not know).
"""
import collections
import errno
import bisect
import hashlib
import heapq
import hmac
import itertools
import json
import marshal
import operator
import os
import struct

# meta key of the newest cache's digest: {"snapshot": id, "digest": hex}
META_KEY = "index_cache"

# the file's first bytes: what tells this format from an older mailstore's (one marshal of
# the whole list, which starts with "[" or "\xdb")
MAGIC = b"mailstore index cache 3\n"
# a chunk's header: length of the user's name (UTF-8), rows, length of the marshal data
_HEADER = struct.Struct(">HII")
# rows decoded at once while the rows of all users are merged by id: the chunk size is this
# divided by the number of users (every user has one chunk decoded at a time), within bounds
MERGE_ROWS = 65536
CHUNK_MIN, CHUNK_MAX = 64, 4096
# bytes read at once while checking the file
_READ = 1 << 20


def chunk_rows(users):
    """Rows per chunk of a run over `users` users (MERGE_ROWS)."""
    return max(CHUNK_MIN, min(CHUNK_MAX, MERGE_ROWS // max(1, users)))


def index_path(repo, snapshot_id):
    return os.path.join(repo.path, "index", snapshot_id + ".marshal")


def digest(key, snapshot_id, data):
    """The digest of cache file bytes `data` of snapshot `snapshot_id`; `key`: the
    repository's keys.Key, None for an unencrypted repository."""
    h = _hasher(key, snapshot_id)
    h.update(data)
    return h.hexdigest()


def _hasher(key, snapshot_id):
    """What digest() feeds the file's bytes to (write_index and the check feed it piecewise)."""
    head = snapshot_id.encode("utf-8") + b"\0"
    return hashlib.sha256(head) if key is None else hmac.new(key.index, head, hashlib.sha256)


def rows_mac(key, snapshot_id, rows_digest, cache_digest):
    """What binds messages digest `rows_digest` to the cache whose digest is `cache_digest`.
    Its head differs from digest()'s: a cache file's bytes never start with "rows "."""
    head = snapshot_id.encode("utf-8") + b"\0rows " + rows_digest.encode("ascii") + b"\0"
    h = hashlib.sha256(head) if key is None else hmac.new(key.index, head, hashlib.sha256)
    h.update(cache_digest.encode("ascii"))
    return h.hexdigest()


def catalog_rows(db, seq):
    """The message rows of snapshot `seq` from the catalog (the truth the cache stands for)."""
    return db.execute(
        "SELECT m.id, m.user, m.folder, m.subdir, m.name, m.uniq, m.size, m.mtime_ns, m.uid,"
        " m.gid, m.mode, m.ino, m.object FROM snapshot_messages s JOIN messages m"
        " ON m.id = s.message WHERE s.snapshot = ?", (seq,)).fetchall()


def previous_rows(repo, seq, snapshot_id, count, use_cache=True):
    """(rows, problem, rows_digest): the message rows (id, user, folder, subdir, name, uniq,
    size, mtime_ns, uid, gid, mode, ino, object) of snapshot `seq` as a Cache or CatalogRows
    (both: `users`, `count_of(user)`, `rows(user)`, `chunks_in_id_order()`, `close()`); why
    its cache file was not used although there is one (None when it was used, or there is
    none to trust); the messages digest (auth.messages_digest) the cache's digest vouches
    for, else None (then the caller hashes the rows to check them).

    From REPO/index/<id>.marshal when the file matches the digest the catalog recorded for
    it, else (and always when not `use_cache`: a snapshot recorded damaged, whose catalog rows
    must be checked themselves, or a full scan's base) from the catalog (all rows in memory:
    the slow way, taken once after a damaged or missing cache, and by the full scan)."""
    rows, problem, rows_digest = _trusted_rows(repo, snapshot_id, count) if use_cache \
        else (None, None, None)
    if rows is None:
        rows = CatalogRows(catalog_rows(repo.db, seq))
    if problem is not None:
        problem = "index cache {} {}: the previous snapshot's messages were read from the " \
            "catalog instead (this run writes a new cache)".format(
                os.path.relpath(index_path(repo, snapshot_id), repo.path), problem)
    return rows, problem, rows_digest


class CatalogRows:
    """A snapshot's message rows read from the catalog, by user (what Cache offers)."""

    def __init__(self, rows):
        by_user = {}
        for r in rows:
            by_user.setdefault(r[1], []).append(r)
        self._by_user = by_user

    def fileno(self):
        return self._f.fileno()

    def chunk_table(self):
        """user -> [(offset, length, rows, sha256)], in the file's order of users."""
        return {user: list(chunks) for user, chunks in self._chunks.items()}

    def count_of(self, user):
        return len(self._by_user.get(user, ()))

    def rows(self, user, wrap=None):
        """The user's rows, once (they are let go of: the run takes them over); each made a
        `wrap` (a tuple subclass) if given."""
        rows = self._by_user.pop(user, [])
        return rows if wrap is None else list(map(wrap, rows))

    def chunks_in_id_order(self):
        """All rows sorted by id, as one list (before any rows() call)."""
        return [sorted(itertools.chain.from_iterable(self._by_user.values()),
                       key=operator.itemgetter(0))]

    def close(self):
        self._by_user = {}


class Cache:
    """A cache file whose digest matched: its chunks by user, each decoded (after its bytes
    are checked against what the digest covered) only when asked for. Safe to read from
    several threads at once."""

    def __init__(self, f, chunks, owns=True):
        self._f = f
        self._owns = owns            # close() closes the file
        self._chunks = chunks        # user -> [(offset, length, rows, sha256)]
        self.users = list(chunks)

    def fileno(self):
        return self._f.fileno()

    def chunk_table(self):
        """user -> [(offset, length, rows, sha256)], in the file's order of users."""
        return {user: list(chunks) for user, chunks in self._chunks.items()}

    def count_of(self, user):
        return sum(c[2] for c in self._chunks.get(user, ()))

    def _chunk(self, offset, length, count, sha):
        data = os.pread(self._f.fileno(), length, offset)
        if len(data) != length or not hmac.compare_digest(hashlib.sha256(data).digest(), sha):
            raise OSError(errno.EIO, "index cache {} changed while it was read".format(
                self._f.name))
        rows = marshal.loads(data)
        if not isinstance(rows, list) or len(rows) != count:
            raise OSError(errno.EIO, "index cache {}: a chunk does not hold the rows its "
                          "header says".format(self._f.name))
        return rows

    def rows(self, user, wrap=None):
        """The user's rows, sorted by id (as written); each made a `wrap` (a tuple subclass)
        if given, chunk by chunk (the plain rows of one chunk at a time in memory)."""
        got = []
        for c in self._chunks.get(user, ()):
            got.extend(self._chunk(*c) if wrap is None else map(wrap, self._chunk(*c)))
        return got

    def chunks_in_id_order(self):
        """All rows sorted by id, as lists (pieces of the users' chunks), merged from the
        users' sorted chunks with one chunk per user decoded at a time (ids are unique across
        users; a user's own rows keep their order). A user's rows are mostly runs of ids no
        other user has in between (ids are given out user by user), so the merge works per
        run, not per row: the piece of the chunk with the smallest id that comes before the
        next user's smallest id goes out whole (a C-speed slice)."""
        heads = []      # (the smallest id not yet given, user's index, rows, their ids, where)
        streams = [iter(self._chunks.get(user, ())) for user in self.users]
        for n, chunks in enumerate(streams):
            self._next_head(heads, n, chunks)
        heapq.heapify(heads)
        while heads:
            _first, n, rows, ids, at = heads[0]
            if len(heads) > 1:
                nxt = min(heads[1][0], heads[2][0]) if len(heads) > 2 else heads[1][0]
                # at least one row: should two users have one id, no loop without end
                end = max(at + 1, bisect.bisect_left(ids, nxt, at))
            else:
                end = len(rows)
            yield rows if at == 0 and end == len(rows) else rows[at:end]
            if end < len(rows):
                heapq.heapreplace(heads, (ids[end], n, rows, ids, end))
            else:
                heapq.heappop(heads)
                if self._next_head(heads, n, streams[n]):
                    heapq.heappush(heads, heads.pop())

    def _next_head(self, heads, n, chunks):
        """Append stream `n`'s next non-empty chunk to `heads`; False when it has none."""
        for c in chunks:
            rows = self._chunk(*c)
            if rows:
                ids = list(map(operator.itemgetter(0), rows))
                heads.append((ids[0], n, rows, ids, 0))
                return True
        return False

    def close(self):
        if self._owns:
            self._f.close()


def _trusted_rows(repo, snapshot_id, count):
    """(Cache or None, problem or None, rows_digest or None) from the cache file of snapshot
    `snapshot_id`."""
    try:
        f = open(index_path(repo, snapshot_id), "rb")
    except FileNotFoundError:
        return None, None, None
    except OSError as e:
        return None, "cannot be read ({})".format(e.strerror or e), None
    try:
        recorded, rows_digest, bound = _recorded(repo.db, snapshot_id)
        if recorded is None or (repo.encrypted and repo.codec.key is None):
            return None, None, None     # nothing vouches for the file (or it cannot be checked)
        key = repo.codec.key
        try:
            found, chunks = _file_digest(f, key, snapshot_id)
        except OSError as e:
            return None, "cannot be read ({})".format(e.strerror or e), None
        if not hmac.compare_digest(found, recorded) or (
                rows_digest is not None and not hmac.compare_digest(
                    rows_mac(key, snapshot_id, rows_digest, recorded), bound)):
            return None, "does not match the digest the catalog recorded for it", None
        if chunks is None:
            return None, None, None     # an older mailstore's format
        cache = Cache(f, chunks)
        if sum(map(cache.count_of, cache.users)) != count:
            return None, "does not hold the snapshot's {} messages".format(count), None
        try:
            # one chunk decoded now: what another Python's marshal wrote may not decode here
            for user in cache.users[:1]:
                cache._chunk(*chunks[user][0])
        except (ValueError, EOFError, TypeError):
            return None, None, None
        except OSError as e:
            return None, "cannot be read ({})".format(e.strerror or e), None
        f = None                        # the Cache has it now
        return cache, None, rows_digest
    finally:
        if f is not None:
            f.close()


def _file_digest(f, key, snapshot_id):
    """(digest of the whole file as digest() computes it, {user: [(offset, length, rows,
    SHA-256 of the marshal data)]} or None if the file is not in this format), in one
    sequential pass that decodes nothing."""
    h = _hasher(key, snapshot_id)
    magic = f.read(len(MAGIC))
    h.update(magic)
    chunks = {} if magic == MAGIC else None
    offset = len(magic)
    while chunks is not None:
        header = f.read(_HEADER.size)
        h.update(header)
        offset += len(header)
        if len(header) < _HEADER.size:
            if header:
                chunks = None   # a torn header
            break
        name_length, count, left = _HEADER.unpack(header)
        name = f.read(name_length)
        h.update(name)
        offset += len(name)
        try:
            user = name.decode("utf-8")
        except UnicodeDecodeError:
            user = None
        start, c = offset, hashlib.sha256()
        while left:
            piece = f.read(min(left, _READ))
            if not piece:
                break
            h.update(piece)
            c.update(piece)
            left -= len(piece)
            offset += len(piece)
        if left or user is None or len(name) != name_length:
            chunks = None       # cut short, or not a name
            break
        chunks.setdefault(user, []).append((start, offset - start, count, c.digest()))
    for piece in iter(lambda: f.read(_READ), b""):
        h.update(piece)         # the rest of a file not in this format
    return h.hexdigest(), chunks


class Writer:
    """The cache file of a run, written user by user while the run records messages; named
    for its snapshot (and made durable) by finish(), before the catalog's COMMIT."""

    def __init__(self, repo, snapshot_id, users):
        self.repo, self.snapshot_id = repo, snapshot_id
        directory = os.path.join(repo.path, "index")
        os.makedirs(directory, mode=0o700, exist_ok=True)
        # not a snapshot's name: clean_up removes it after a crash, like any stale cache
        self.tmp = os.path.join(directory, "run.tmp")
        self.chunk = chunk_rows(users)
        self._f = open(self.tmp, "w+b")
        os.chmod(self.tmp, 0o600)
        self._digest = _hasher(repo.codec.key, snapshot_id)     # digest() of the file
        self._chunks = {}
        self._offset = 0
        self._write(MAGIC)

    def _write(self, data):
        self._f.write(data)
        self._digest.update(data)
        self._offset += len(data)

    def add(self, user, rows):
        """Append `user`'s rows (sorted here by id; stable, so duplicates keep their order)."""
        rows.sort(key=operator.itemgetter(0))
        name = user.encode("utf-8")
        for start in range(0, len(rows), self.chunk):
            part = rows[start:start + self.chunk]
            # plain tuples (a PreviousRow, scan.py, is one of the rows the run took over)
            data = marshal.dumps(list(map(tuple, part)))
            self._write(_HEADER.pack(len(name), len(part), len(data)) + name)
            self._chunks.setdefault(user, []).append(
                (self._offset, len(data), len(part), hashlib.sha256(data).digest()))
            self._write(data)

    def rows(self):
        """After the last add: the rows written, as a Cache (for the messages digest: each
        chunk read back is checked against what was written)."""
        self._f.flush()
        return Cache(self._f, self._chunks, owns=False)

    def finish(self):
        """After rows(): make the file durable and name it for its snapshot; return its
        digest, to be recorded with the snapshot."""
        # durable before the catalog's COMMIT records its digest: after a power cut a short
        # file would not match, and a mismatch means damage, which the next run reports
        os.fsync(self._f.fileno())
        os.rename(self.tmp, index_path(self.repo, self.snapshot_id))
        return self._digest.hexdigest()

    def close(self):
        if self._f is not None:
            self._f.close()
            self._f = None

    def discard(self):
        """After a failure (before finish): no file left behind."""
        self.close()
        try:
            os.unlink(self.tmp)
        except OSError:
            pass


def _recorded(db, snapshot_id):
    """(digest, rows, rows_mac) recorded for snapshot `snapshot_id`'s cache: all None if
    there is no usable record, the last two None for a record without `rows`."""
    row = db.execute("SELECT value FROM meta WHERE key = ?", (META_KEY,)).fetchone()
    try:
        meta = json.loads(row[0]) if row else None
    except ValueError:
        return None, None, None
    if not isinstance(meta, dict) or meta.get("snapshot") != snapshot_id \
            or not isinstance(meta.get("digest"), str) or not meta["digest"].isascii():
        return None, None, None
    rows_digest, bound = meta.get("rows"), meta.get("rows_mac")
    if rows_digest is None:
        return meta["digest"], None, None
    if not (isinstance(rows_digest, str) and rows_digest.isascii()
            and isinstance(bound, str)):
        return None, None, None
    return meta["digest"], rows_digest, bound


def record(db, key, snapshot_id, value, rows_digest):
    """Record digest `value` (write_index's result) of snapshot `snapshot_id`'s cache and, for
    an authenticated repository, the snapshot's messages digest `rows_digest` bound to it
    (None: a format 1 repository has none), in the snapshot's transaction."""
    meta = {"snapshot": snapshot_id, "digest": value}
    if rows_digest is not None:
        meta.update(rows=rows_digest, rows_mac=rows_mac(key, snapshot_id, rows_digest, value))
    db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (META_KEY, json.dumps(meta)))


def drop_stale_indexes(repo, keep_id):
    """Remove index caches of every snapshot but `keep_id` (the newest): its .marshal and
    its .known (newobjects.KnownObjects) stay."""
    directory = os.path.join(repo.path, "index")
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        if name not in ("{}.marshal".format(keep_id), "{}.known".format(keep_id)):
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass


def encode(rows):
    """The bytes of a cache file holding message rows `rows` (for tests; a run writes with
    Writer)."""
    by_user = {}
    for r in rows:
        by_user.setdefault(r[1], []).append(r)
    out = [MAGIC]
    for user, got in by_user.items():
        name = user.encode("utf-8")
        for start in range(0, len(got), CHUNK_MAX):
            data = marshal.dumps(got[start:start + CHUNK_MAX])
            out.append(_HEADER.pack(len(name), len(got[start:start + CHUNK_MAX]), len(data))
                       + name + data)
    return b"".join(out)


def decode(data):
    """The rows of a whole cache file's bytes `data` (for `verify` and tests; no digest
    checked). Raises ValueError if they are not a cache file."""
    if not data.startswith(MAGIC):
        raise ValueError("not an index cache file")
    rows, pos = [], len(MAGIC)
    view = memoryview(data)
    while pos < len(data):
        if pos + _HEADER.size > len(data):
            raise ValueError("truncated index cache file")
        name_length, count, length = _HEADER.unpack_from(data, pos)
        pos += _HEADER.size + name_length
        if pos + length > len(data):
            raise ValueError("truncated index cache file")
        chunk = marshal.loads(view[pos:pos + length])
        if not isinstance(chunk, list) or len(chunk) != count:
            raise ValueError("not an index cache file")
        rows.extend(chunk)
        pos += length
    return rows


def check(repo):
    """What is wrong with the newest snapshot's cache (one line), or None: it holds exactly
    the snapshot's rows in the catalog, or there is no cache. For `verify`: row by row, so
    that no key is needed."""
    newest = repo.db.execute("SELECT seq, id FROM snapshots ORDER BY seq DESC"
                             " LIMIT 1").fetchone()
    if newest is None:
        return None
    seq, snapshot_id = newest
    path = index_path(repo, snapshot_id)
    try:
        with open(path, "rb") as f:
            rows = decode(f.read())
    except FileNotFoundError:
        return None
    except OSError as e:
        problem = "cannot be read ({})".format(e.strerror or e)
    except (ValueError, EOFError, TypeError):
        problem = "is not a message list"
    else:
        problem = None
        try:
            if collections.Counter(rows) != collections.Counter(catalog_rows(repo.db, seq)):
                problem = "differs from the catalog's message list of snapshot {}".format(
                    snapshot_id)
        except TypeError:       # not a list, or rows that are not tuples of plain values
            problem = "is not a message list"
    if problem is None:
        return None
    return "index cache {} {}; it is only a cache: the next run reads the catalog instead " \
        "and writes a new one".format(os.path.relpath(path, repo.path), problem)

