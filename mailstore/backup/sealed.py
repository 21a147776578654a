"""The sealed catalog: REPO/catalog.sealed, the catalog as it may leave the server.

The catalog (catalog.sqlite) names users, folders and files, their sizes, dates and owners,
and which users hold the same message; an off-host copy held by someone else must show none
of it. So every `run`, `prune`, `upgrade` and `seal` of an encrypted repository (they hold
the key and the exclusive lock) also writes the whole catalog database encrypted and
authenticated with a key derived from the repository key (keys.Key.sealed), and the off-host
copy gets that file instead of catalog.sqlite and index/ (offhost.py). A reader with the key
decrypts it into a private temporary file (`open_catalog`); one without the key can still
check its framing (`inspect`).

Layout (integers big endian):
    MAGIC (32 bytes) | header length (4) | header: canonical JSON of
        {"version": 1, "repository": config.json's id, "generation": N,
         "chunk": plaintext bytes per chunk, "nonce": 8 random bytes, hex}
    then chunks: final flag (1) | length (4) | AES-256-GCM ciphertext+tag
The plaintext is the catalog file deflated (zlib level 1), cut into chunks of `chunk` bytes.
Chunk i is sealed with nonce = header nonce | i (4 bytes) and associated data = everything
before the first chunk | i (8 bytes) | final flag: a chunk cannot be moved, dropped, or
taken from another sealed catalog, a truncated file lacks its final chunk, and the header
(repository, generation) cannot be changed unseen. A new random nonce prefix per file.

`generation` counts the sealed catalogs a repository wrote (meta `sealed_generation` in the
catalog, raised before the catalog is read, so the sealed database holds its own number and
`open_catalog` checks it): a copy whose catalog is older than the one before it (an older
night's served again) shows a smaller number without the key (`inspect`, offhost.py).
"""
import hashlib
import json
import os
import secrets
import sqlite3
import struct
import tempfile
import zlib

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mailstore.backup import auth, catalog
from mailstore.backup.auth import CatalogDamaged
from mailstore.backup.objects import fsync_dir

NAME = "catalog.sealed"
MAGIC = b"mailstore-backup sealed catalog\n"
VERSION = 1
CHUNK = 1 << 20
META_KEY = "sealed_generation"
_LENGTH = struct.Struct(">I")
_CHUNK_HEAD = struct.Struct(">BI")
_TAG = 16
# more than any header mailstore writes; a longer one is damage, not a reason to read it
_MAX_HEADER = 4096


def path_of(repo_path):
    return os.path.join(repo_path, NAME)


def write(repo_path, repo_id, key, db):
    """Write REPO/catalog.sealed of the repository at `repo_path` (config.json's id `repo_id`,
    its keys.Key `key`, `db` its open catalog with nothing uncommitted), under the exclusive
    lock: atomically (a new file renamed over the old one). Returns the new generation."""
    with catalog.transaction(db):
        row = db.execute("SELECT value FROM meta WHERE key = ?", (META_KEY,)).fetchone()
        generation = (int(row[0]) if row else 0) + 1
        db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (META_KEY, str(generation)))
    nonce = secrets.token_bytes(8)
    header = _header_bytes({"version": VERSION, "repository": repo_id,
                            "generation": generation, "chunk": CHUNK, "nonce": nonce.hex()})
    aead = AESGCM(key.sealed)
    final_path = path_of(repo_path)
    tmp = final_path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as out, open(os.path.join(repo_path, "catalog.sqlite"),
                                              "rb") as src:
            out.write(header)
            pending = b""
            index = 0
            deflate = zlib.compressobj(1)
            while True:
                block = src.read(CHUNK)
                pending += deflate.compress(block) if block else deflate.flush()
                while len(pending) > CHUNK:
                    _write_chunk(out, aead, nonce, header, index, False, pending[:CHUNK])
                    pending = pending[CHUNK:]
                    index += 1
                if not block:
                    break
            _write_chunk(out, aead, nonce, header, index, True, pending)
            out.flush()
            os.fsync(out.fileno())
        os.rename(tmp, final_path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(repo_path)
    return generation


def _header_bytes(fields):
    body = auth.canonical(fields)
    return MAGIC + _LENGTH.pack(len(body)) + body


def _parse_header(body):
    fields = json.loads(body.decode("ascii"))
    if not isinstance(fields, dict):
        raise ValueError("not an object")
    return fields


def _ad(header, index, final):
    return header + struct.pack(">QB", index, int(final))


def _nonce(prefix, index):
    return prefix + _LENGTH.pack(index)


def _write_chunk(out, aead, prefix, header, index, final, plain):
    sealed = aead.encrypt(_nonce(prefix, index), plain, _ad(header, index, final))
    out.write(_CHUNK_HEAD.pack(int(final), len(sealed)))
    out.write(sealed)


class _Reader:
    """Walks a sealed catalog's framing; every problem is a CatalogDamaged naming the file."""

    def __init__(self, path, repo_id):
        self.path = path
        self.repo_id = repo_id

    def damaged(self, text):
        return CatalogDamaged("sealed catalog {} is damaged or was tampered with: {}".format(
            self.path, text))

    def header(self, f):
        """(fields, raw header bytes) of the open file `f`, checked against the repository."""
        head = f.read(len(MAGIC) + _LENGTH.size)
        if len(head) < len(MAGIC) + _LENGTH.size or head[:len(MAGIC)] != MAGIC:
            raise self.damaged("not a sealed catalog (its first bytes are not {!r})".format(
                MAGIC.decode("ascii").strip()))
        length, = _LENGTH.unpack_from(head, len(MAGIC))
        if length > _MAX_HEADER:
            raise self.damaged("its header claims {} bytes".format(length))
        body = f.read(length)
        try:
            fields = _parse_header(body)
        except ValueError:
            raise self.damaged("its header is not readable") from None
        if fields.get("version") != VERSION:
            raise self.damaged("version {!r}; this mailstore reads version {}".format(
                fields.get("version"), VERSION))
        generation, chunk = fields.get("generation"), fields.get("chunk")
        try:
            nonce = bytes.fromhex(fields.get("nonce"))
        except (TypeError, ValueError):
            nonce = b""
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                   for v in (generation, chunk)) or len(nonce) != 8:
            raise self.damaged("its header lacks a generation, chunk size or nonce")
        if fields.get("repository") != self.repo_id:
            raise self.damaged("it belongs to repository {!r}, not to {!r} (config.json)"
                               .format(fields.get("repository"), self.repo_id))
        return fields, head + body

    def chunks(self, f, fields):
        """(index, final, sealed bytes) of each chunk, the framing checked to the end."""
        index = 0
        while True:
            head = f.read(_CHUNK_HEAD.size)
            if not head:
                raise self.damaged("truncated: it ends after chunk {} without its final "
                                   "chunk".format(index))
            if len(head) < _CHUNK_HEAD.size:
                raise self.damaged("truncated in the frame of chunk {}".format(index))
            final, length = _CHUNK_HEAD.unpack(head)
            if final not in (0, 1) or not _TAG <= length <= fields["chunk"] + _TAG \
                    or (not final and length != fields["chunk"] + _TAG):
                raise self.damaged("chunk {} has a damaged frame".format(index))
            data = f.read(length)
            if len(data) != length:
                raise self.damaged("truncated in chunk {}".format(index))
            yield index, bool(final), data
            index += 1
            if final:
                if f.read(1):
                    raise self.damaged("bytes follow its final chunk")
                return


def inspect(path, repo_id):
    """Without the key: check the framing of the sealed catalog at `path` (magic, version,
    repository `repo_id`, whole chunks up to a final one, nothing after it); return
    {"generation", "chunks", "bytes", "sha256"}. CatalogDamaged names what is wrong; a
    flipped bit inside a chunk shows only with the key (`open_catalog`)."""
    reader = _Reader(path, repo_id)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        fields, head = reader.header(f)
        digest.update(head)
        count = 0
        for _index, final, data in reader.chunks(f, fields):
            digest.update(_CHUNK_HEAD.pack(int(final), len(data)) + data)
            count += 1
        size = f.tell()
    return {"generation": fields["generation"], "chunks": count, "bytes": size,
            "sha256": digest.hexdigest()}


def open_catalog(path, repo_id, key):
    """Decrypt the sealed catalog at `path` into a private temporary file and open it
    (catalog.connect); the file is removed as soon as SQLite holds it open, so nothing
    decrypted stays on disk, even if the process is killed later. The connection reads; a
    write fails (the copy's catalog is not to be changed: it would be lost anyway).
    CatalogDamaged (one line) if anything fails authentication: nothing is opened then."""
    reader = _Reader(path, repo_id)
    tmpdir = tempfile.mkdtemp(prefix="mailstore-catalog-")
    tmp = os.path.join(tmpdir, "catalog.sqlite")
    try:
        with open(path, "rb") as f, open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                                                  0o600), "wb") as out:
            fields, head = reader.header(f)
            aead = AESGCM(key.sealed)
            prefix = bytes.fromhex(fields["nonce"])
            inflate = zlib.decompressobj()
            for index, final, data in reader.chunks(f, fields):
                try:
                    plain = aead.decrypt(_nonce(prefix, index), data, _ad(head, index, final))
                except InvalidTag:
                    raise CatalogDamaged(
                        "sealed catalog {} fails authentication at chunk {} (damaged, "
                        "tampered with, or sealed with another key)".format(path, index)) \
                        from None
                try:
                    out.write(inflate.decompress(plain))
                except zlib.error as e:
                    raise reader.damaged("cannot inflate it: {}".format(e)) from None
            if not inflate.eof:
                raise reader.damaged("its content ends early")
        conn = catalog.connect(tmp)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (META_KEY,)).fetchone()
        except sqlite3.Error as e:
            conn.close()
            raise reader.damaged("its content is not a catalog ({})".format(e)) from None
        if row is None or row[0] != str(fields["generation"]):
            conn.close()
            raise reader.damaged("its header says generation {}, its content {}".format(
                fields["generation"], row[0] if row else "none"))
        return conn, fields["generation"]
    finally:
        # SQLite holds the file open (or nothing was opened): it goes from the disk now
        for leftover in (tmp, tmpdir):
            try:
                (os.rmdir if leftover == tmpdir else os.unlink)(leftover)
            except OSError:
                pass
