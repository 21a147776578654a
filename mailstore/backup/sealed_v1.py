"""Format 1 of the sealed catalog (sealed.py): the one file older mailstores wrote. Copies
of it stay on the backup host for as long as it keeps its copies, so it is still read
(`inspect`, `decrypt_into`); mailstore writes format 2 now (`write` stays for the tests
that make such an older copy).

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
The magic and the header framing are format 2's too (sealed.py reads the version there).
"""
import hashlib
import json
import secrets
import struct
import zlib

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mailstore.backup import auth
from mailstore.backup.auth import CatalogDamaged

MAGIC = b"mailstore-backup sealed catalog\n"
VERSION = 1
CHUNK = 1 << 20
META_KEY = "sealed_generation"
LENGTH = struct.Struct(">I")
_CHUNK_HEAD = struct.Struct(">BI")
_TAG = 16


def damaged(path, text):
    return CatalogDamaged("sealed catalog {} is damaged or was tampered with: {}".format(
        path, text))


def read_header(f, path, max_length):
    """(fields, raw bytes) of the header of the sealed catalog open as `f` (either format):
    the magic, a header of at most `max_length` bytes, a JSON object."""
    head = f.read(len(MAGIC) + LENGTH.size)
    if len(head) < len(MAGIC) + LENGTH.size or head[:len(MAGIC)] != MAGIC:
        raise damaged(path, "not a sealed catalog (its first bytes are not {!r})".format(
            MAGIC.decode("ascii").strip()))
    length, = LENGTH.unpack_from(head, len(MAGIC))
    if length > max_length:
        raise damaged(path, "its header claims {} bytes".format(length))
    body = f.read(length)
    try:
        fields = json.loads(body.decode("ascii"))
        if not isinstance(fields, dict):
            raise ValueError("not an object")
    except ValueError:
        raise damaged(path, "its header is not readable") from None
    return fields, head + body


def check_fields(fields, path):
    """A format 1 header's fields are whole (damaged() otherwise)."""
    generation, chunk = fields.get("generation"), fields.get("chunk")
    try:
        nonce = bytes.fromhex(fields.get("nonce"))
    except (TypeError, ValueError):
        nonce = b""
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
               for v in (generation, chunk)) or len(nonce) != 8:
        raise damaged(path, "its header lacks a generation, chunk size or nonce")


def write(path, repo_id, key, catalog_path, generation):
    """Write a format 1 sealed catalog of the catalog file `catalog_path` (its meta
    `sealed_generation` is `generation`) to `path`, as older mailstores did."""
    nonce = secrets.token_bytes(8)
    body = auth.canonical({"version": VERSION, "repository": repo_id,
                           "generation": generation, "chunk": CHUNK, "nonce": nonce.hex()})
    header = MAGIC + LENGTH.pack(len(body)) + body
    aead = AESGCM(key.sealed)
    with open(path, "wb") as out, open(catalog_path, "rb") as src:
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


def _ad(header, index, final):
    return header + struct.pack(">QB", index, int(final))


def _nonce(prefix, index):
    return prefix + LENGTH.pack(index)


def _write_chunk(out, aead, prefix, header, index, final, plain):
    sealed = aead.encrypt(_nonce(prefix, index), plain, _ad(header, index, final))
    out.write(_CHUNK_HEAD.pack(int(final), len(sealed)))
    out.write(sealed)


def _chunks(f, fields, path):
    """(index, final, sealed bytes) of each chunk, the framing checked to the end."""
    index = 0
    while True:
        head = f.read(_CHUNK_HEAD.size)
        if not head:
            raise damaged(path, "truncated: it ends after chunk {} without its final "
                                "chunk".format(index))
        if len(head) < _CHUNK_HEAD.size:
            raise damaged(path, "truncated in the frame of chunk {}".format(index))
        final, length = _CHUNK_HEAD.unpack(head)
        if final not in (0, 1) or not _TAG <= length <= fields["chunk"] + _TAG \
                or (not final and length != fields["chunk"] + _TAG):
            raise damaged(path, "chunk {} has a damaged frame".format(index))
        data = f.read(length)
        if len(data) != length:
            raise damaged(path, "truncated in chunk {}".format(index))
        yield index, bool(final), data
        index += 1
        if final:
            if f.read(1):
                raise damaged(path, "bytes follow its final chunk")
            return


def inspect(f, fields, head, path):
    """Without the key: the framing of the format 1 sealed catalog open as `f` (its header
    read: `fields`, `head`) to its final chunk; {"generation", "chunks", "bytes", "sha256"}."""
    check_fields(fields, path)
    digest = hashlib.sha256(head)
    count = 0
    for _index, final, data in _chunks(f, fields, path):
        digest.update(_CHUNK_HEAD.pack(int(final), len(data)) + data)
        count += 1
    return {"generation": fields["generation"], "chunks": count, "bytes": f.tell(),
            "sha256": digest.hexdigest()}


def decrypt_into(f, fields, head, path, key, out):
    """Decrypt the format 1 sealed catalog open as `f` (its header read) into the file
    object `out` (the SQLite file); CatalogDamaged if any chunk fails."""
    check_fields(fields, path)
    aead = AESGCM(key.sealed)
    prefix = bytes.fromhex(fields["nonce"])
    inflate = zlib.decompressobj()
    for index, final, data in _chunks(f, fields, path):
        try:
            plain = aead.decrypt(_nonce(prefix, index), data, _ad(head, index, final))
        except InvalidTag:
            raise CatalogDamaged(
                "sealed catalog {} fails authentication at chunk {} (damaged, tampered with, "
                "or sealed with another key)".format(path, index)) from None
        try:
            out.write(inflate.decompress(plain))
        except zlib.error as e:
            raise damaged(path, "cannot inflate it: {}".format(e)) from None
    if not inflate.eof:
        raise damaged(path, "its content ends early")
