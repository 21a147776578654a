"""The index cache: REPO/index/<id>.marshal, the newest snapshot's message rows in one file.

The next run reads the previous snapshot's rows from it sequentially; the same rows in the
catalog are scattered over it, slow when the cache is cold at night. The file is a magic line
and then chunks of rows, each a 4-byte length and the marshal of a list of at most CHUNK rows,
so that neither writing nor reading it ever holds the encoding of all rows at once (at a
million messages that was 250 MB on top of the rows themselves). Only a cache: the
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
import hashlib
import hmac
import json
import marshal
import os
import struct

# meta key of the newest cache's digest: {"snapshot": id, "digest": hex}
META_KEY = "index_cache"

# the file's first bytes: what tells this format from an older mailstore's (whose marshal of
# a list starts with "[" or "\xdb")
MAGIC = b"mailstore index cache 2\n"
# rows per chunk: big enough for C speed, small enough to be nothing next to the rows
CHUNK = 4096
_LENGTH = struct.Struct(">I")
# bytes read at once while checking the file
_READ = 1 << 20


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
    size, mtime_ns, uid, gid, mode, ino, object) of snapshot `seq`; why its cache file was
    not used although there is one (None when it was used, or there is none to trust); the
    messages digest (auth.messages_digest) the cache's digest vouches for, else None (then
    the caller hashes the rows to check them).

    From REPO/index/<id>.marshal when the file matches the digest the catalog recorded for
    it, else (and always when not `use_cache`: a snapshot recorded damaged, whose catalog rows
    must be checked themselves) from the catalog."""
    rows, problem, rows_digest = _trusted_rows(repo, snapshot_id, count) if use_cache \
        else (None, None, None)
    if rows is None:
        rows = catalog_rows(repo.db, seq)
    if problem is not None:
        problem = "index cache {} {}: the previous snapshot's messages were read from the " \
            "catalog instead (this run writes a new cache)".format(
                os.path.relpath(index_path(repo, snapshot_id), repo.path), problem)
    return rows, problem, rows_digest


def _trusted_rows(repo, snapshot_id, count):
    """(rows or None, problem or None, rows_digest or None) from the cache file of snapshot
    `snapshot_id`."""
    try:
        f = open(index_path(repo, snapshot_id), "rb")
    except FileNotFoundError:
        return None, None, None
    except OSError as e:
        return None, "cannot be read ({})".format(e.strerror or e), None
    with f:
        recorded, rows_digest, bound = _recorded(repo.db, snapshot_id)
        if recorded is None or (repo.encrypted and repo.codec.key is None):
            return None, None, None     # nothing vouches for the file (or it cannot be checked)
        key = repo.codec.key
        try:
            found, chunk_sums = _file_digest(f, key, snapshot_id)
        except OSError as e:
            return None, "cannot be read ({})".format(e.strerror or e), None
        if not hmac.compare_digest(found, recorded) or (
                rows_digest is not None and not hmac.compare_digest(
                    rows_mac(key, snapshot_id, rows_digest, recorded), bound)):
            return None, "does not match the digest the catalog recorded for it", None
        if chunk_sums is None:
            return None, None, None     # an older mailstore's format
        try:
            rows, problem = _decode_checked(f, chunk_sums)
        except OSError as e:
            return None, "cannot be read ({})".format(e.strerror or e), None
    if rows is None:
        return None, problem, None
    if len(rows) != count:
        return None, "does not hold the snapshot's {} messages".format(count), None
    return rows, None, rows_digest


def _file_digest(f, key, snapshot_id):
    """(digest of the whole file as digest() computes it, [SHA-256 of each chunk's bytes] or
    None if the file is not in this format), in one sequential pass that decodes nothing."""
    h = _hasher(key, snapshot_id)
    magic = f.read(len(MAGIC))
    h.update(magic)
    sums = [] if magic == MAGIC else None
    while sums is not None:
        prefix = f.read(_LENGTH.size)
        h.update(prefix)
        if len(prefix) < _LENGTH.size:
            if prefix:
                sums = None     # a torn length
            break
        left, = _LENGTH.unpack(prefix)
        c = hashlib.sha256()
        while left:
            piece = f.read(min(left, _READ))
            if not piece:
                sums = None     # a chunk cut short
                break
            h.update(piece)
            c.update(piece)
            left -= len(piece)
        else:
            sums.append(c.digest())
    for piece in iter(lambda: f.read(_READ), b""):
        h.update(piece)         # the rest of a file not in this format
    return h.hexdigest(), sums


def _decode_checked(f, chunk_sums):
    """(rows, None): the rows of the file's chunks, each decoded only once its bytes are known
    to be those _file_digest saw (`chunk_sums`); (None, problem) if the file changed in
    between; (None, None) if this Python's marshal cannot read what another one wrote."""
    f.seek(len(MAGIC))
    rows = []
    for expected in chunk_sums:
        prefix = f.read(_LENGTH.size)
        length, = _LENGTH.unpack(prefix) if len(prefix) == _LENGTH.size else (-1,)
        data = f.read(length) if length >= 0 else b""
        if len(data) != length or not hmac.compare_digest(
                hashlib.sha256(data).digest(), expected):
            return None, "changed while it was read"
        try:
            chunk = marshal.loads(data)
        except (ValueError, EOFError, TypeError):
            return None, None           # what a run wrote, in another Python's marshal format
        if not isinstance(chunk, list):
            return None, None
        rows.extend(chunk)
    return rows, None


def encode(rows):
    """Yield the file's bytes for message rows `rows`, piece by piece (write_index)."""
    yield MAGIC
    for start in range(0, len(rows), CHUNK):
        data = marshal.dumps(rows[start:start + CHUNK])
        yield _LENGTH.pack(len(data)) + data


def decode(data):
    """The rows of a whole cache file's bytes `data` (for `verify` and tests; no digest
    checked). Raises ValueError if they are not a cache file."""
    if not data.startswith(MAGIC):
        raise ValueError("not an index cache file")
    rows, pos = [], len(MAGIC)
    view = memoryview(data)
    while pos < len(data):
        if pos + _LENGTH.size > len(data):
            raise ValueError("truncated index cache file")
        length, = _LENGTH.unpack_from(data, pos)
        pos += _LENGTH.size
        if pos + length > len(data):
            raise ValueError("truncated index cache file")
        chunk = marshal.loads(view[pos:pos + length])
        if not isinstance(chunk, list):
            raise ValueError("not an index cache file")
        rows.extend(chunk)
        pos += length
    return rows


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


def write_index(repo, snapshot_id, rows):
    """Write the cache previous_rows reads (before the catalog commit); return the digest to
    record with the snapshot (`record`)."""
    directory = os.path.join(repo.path, "index")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = index_path(repo, snapshot_id)
    h = _hasher(repo.codec.key, snapshot_id)
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        for piece in encode(rows):
            h.update(piece)
            f.write(piece)
        f.flush()
        # durable before the catalog's COMMIT records its digest: after a power cut a short
        # file would not match, and a mismatch means damage, which the next run reports
        os.fsync(f.fileno())
    os.rename(path + ".tmp", path)
    return h.hexdigest()


def record(db, key, snapshot_id, value, rows_digest):
    """Record digest `value` (write_index's result) of snapshot `snapshot_id`'s cache and, for
    an authenticated repository, the snapshot's messages digest `rows_digest` bound to it
    (None: a format 1 repository has none), in the snapshot's transaction."""
    meta = {"snapshot": snapshot_id, "digest": value}
    if rows_digest is not None:
        meta.update(rows=rows_digest, rows_mac=rows_mac(key, snapshot_id, rows_digest, value))
    db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (META_KEY, json.dumps(meta)))


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

