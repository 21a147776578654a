"""Objects: content-addressed, compressed, optionally encrypted, appended to pack files.

An object's id is the SHA-256 of its plaintext (HMAC-SHA256 with a derived key when the
repository is encrypted). Objects are written into pack files of a few tens of MiB rather than
one file each: a mail store has hundreds of thousands of small messages, and one file plus one
fsync per message would make the first backup crawl.

Record layout inside a pack (self-describing, so a pack can be checked without the catalog):
    b"MSB1" | id (32 bytes) | codec (1 byte) | payload length (4 bytes, big endian) | payload
codec: 0 = stored, 1 = zlib. Encrypted payload: nonce (12 bytes) | AES-256-GCM ciphertext+tag,
with the record header as associated data, so that a record cannot be moved to another id.

Masked packs (encrypted repositories, written since 2026-12-06): the clear record headers
above would show whoever holds an off-host copy (offhost.py) where each object begins and how
long it is (about each message's size) and how many a pack holds. So a pack written with the
key is
    b"MSP1" | masked record | masked record | ... | SHA-256 of everything before (32 bytes)
where a masked record is its header XOR a pad, then its payload as above. The pad of the
record at byte `offset` of pack `name` is HMAC-SHA512(keys.Key.headers, "<name> <offset>"),
cut to the header's 41 bytes: pack names are random (128 bits) and offsets unique within a
pack, so no pad is used twice, and without the key the headers are indistinguishable from
random bytes (the payload is AES-GCM ciphertext already). The AES-GCM associated data stays
the PLAIN header: a record moved to another pack or offset unmasks to garbage and is refused
("record header damaged"), one changed in place fails authentication. The clear magic and
the trailing checksum tell nothing about the records but let a key-less check (offhost.py)
see that each pack is whole. The first 4 bytes tell the two formats apart, per pack
(`PackReader.masked`): packs written before (b"MSB1" first) are read as ever, no migration
needed. Moving a masked record (prune's rewrite) masks it anew: that needs the key.
Unencrypted repositories write clear packs as before (their payloads are plain anyway).

Packs are written in REPO/tmp/, fsynced, then renamed into REPO/packs/<xx>/ and only then
recorded in the catalog; a pack the catalog does not name is garbage from an interrupted run.
"""
import hashlib
import hmac
import os
import secrets
import struct
import zlib

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"MSB1"
HEADER = struct.Struct(">4s32sBI")
# the first bytes of a masked pack (an encrypted repository's, see above), and its trailer
PACK_MAGIC = b"MSP1"
TRAILER_BYTES = 32
CODEC_STORED = 0
CODEC_ZLIB = 1
NONCE_BYTES = 12
# zlib level 1: most of the size win on mail text at a fraction of the CPU of the default 6.
ZLIB_LEVEL = 1
# Most of a mail store's bytes are base64 attachments: 6 bits of entropy per byte (on top of
# already compressed PDFs, images, archives) and no repeats for LZ77 to find; level 1 spends
# its time searching for matches that do not exist. A 2 KiB sample from the middle of a
# message tells the two apart. Repository setting `compression`:
#   "fast"  (default) such content is stored as it is (as borg's lz4 effectively does);
#   "small" it is Huffman-coded (~25 % smaller, about twice the CPU of a first backup; zlib's
#           Huffman mode does not run in parallel threads here).
# Text is zlib level 1 in both. Everything decodes with plain inflate: reading needs no flag.
COMPRESSION_MODES = ("fast", "small")
_SAMPLE = 2048
# a pack is hashed and written in units of this many bytes (PackWriter)
_BUFFER = 1024 * 1024
_ENTROPIC = 0.6


def compress(data, mode="fast"):
    """Deflated `data`, or None where compressing does not pay (store it as it is)."""
    if len(data) >= 4 * _SAMPLE:
        middle = len(data) // 2
        sample = data[middle:middle + _SAMPLE]
        if len(zlib.compress(sample, ZLIB_LEVEL)) > _ENTROPIC * len(sample):
            if mode != "small":
                return None
            c = zlib.compressobj(ZLIB_LEVEL, zlib.DEFLATED, 15, 8, zlib.Z_HUFFMAN_ONLY)
            return c.compress(data) + c.flush()
    return zlib.compress(data, ZLIB_LEVEL)


class DamagedObject(Exception):
    """An object's bytes do not decode to content with its id."""


class Codec:
    """Turns content into records and back, for one repository (its key or none)."""

    def __init__(self, key=None, compression="fast", bind_values=True):
        self.key = key
        self.compression = compression
        # format 2 binds a sealed catalog value to its object and field; format 1 used one
        # fixed associated data for all, so that values could be moved between objects
        self.bind_values = bind_values
        self._aead = AESGCM(key.encryption) if key is not None else None

    @property
    def encrypted(self):
        return self._aead is not None

    def object_id(self, data):
        if self.key is None:
            return hashlib.sha256(data).hexdigest()
        return hmac.new(self.key.ids, data, hashlib.sha256).hexdigest()

    def encode(self, object_id, data):
        """The full record bytes for `data`, whose id is `object_id`."""
        packed = compress(data, self.compression)
        if packed is not None and len(packed) < len(data):
            codec = CODEC_ZLIB
        else:
            codec, packed = CODEC_STORED, data
        if self._aead is not None:
            length = NONCE_BYTES + len(packed) + 16
            header = HEADER.pack(MAGIC, bytes.fromhex(object_id), codec, length)
            nonce = secrets.token_bytes(NONCE_BYTES)
            # one copy of the message's bytes, not two
            return b"".join((header, nonce, self._aead.encrypt(nonce, packed, header)))
        header = HEADER.pack(MAGIC, bytes.fromhex(object_id), codec, len(packed))
        return header + packed

    def decode(self, object_id, record):
        """The content of a record, checked against `object_id`; DamagedObject if it is not."""
        if len(record) < HEADER.size:
            raise DamagedObject("record truncated")
        magic, raw_id, codec, length = HEADER.unpack_from(record)
        if magic != MAGIC or raw_id.hex() != object_id or length != len(record) - HEADER.size:
            raise DamagedObject("record header damaged")
        payload = record[HEADER.size:]
        if self._aead is not None:
            try:
                payload = self._aead.decrypt(payload[:NONCE_BYTES], payload[NONCE_BYTES:],
                                             record[:HEADER.size])
            except InvalidTag:
                raise DamagedObject("authentication failed (damaged, or another key)")
        if codec == CODEC_ZLIB:
            try:
                payload = zlib.decompress(payload)
            except zlib.error as e:
                raise DamagedObject("cannot decompress: {}".format(e))
        elif codec != CODEC_STORED:
            raise DamagedObject("unknown codec {}".format(codec))
        if self.object_id(payload) != object_id:
            raise DamagedObject("content does not match its id")
        return payload

    def mask(self, pack, offset, header):
        """The header of the record at `offset` in pack `pack`, masked (or unmasked: the
        same XOR) with that place's pad (see the module doc)."""
        pad = hmac.new(self.key.headers, "{} {}".format(pack, offset).encode("ascii"),
                       hashlib.sha512).digest()
        return (int.from_bytes(header, "big") ^ int.from_bytes(pad[:HEADER.size], "big")
                ).to_bytes(HEADER.size, "big")

    def _value_ad(self, object_id, field, bound=None):
        if not (self.bind_values if bound is None else bound):
            return b"catalog"
        return "mailstore-backup catalog value {} of object {}".format(
            field, object_id).encode("ascii")

    def seal(self, data, object_id, field):
        """Encrypt a small catalog value (`field` of object `object_id`: header text) when
        the repository is encrypted."""
        if data is None or self._aead is None:
            return data
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, data.encode("utf-8"),
                                          self._value_ad(object_id, field))

    def unseal(self, value, object_id, field, bound=None):
        """The text of a sealed value; DamagedObject if it fails authentication (damaged,
        moved from another object or field, or another key). `bound`: override the
        repository's format (an upgrade reads format 1's values)."""
        if value is None or self._aead is None or isinstance(value, str):
            return value
        try:
            return self._aead.decrypt(value[:NONCE_BYTES], value[NONCE_BYTES:],
                                      self._value_ad(object_id, field, bound)).decode("utf-8")
        except (InvalidTag, ValueError):
            raise DamagedObject("the catalog's {} of object {} fails authentication (damaged, "
                                "or moved from another message)".format(field, object_id))


def pack_path(packs_dir, name):
    return os.path.join(packs_dir, name[:2], name + ".pack")


class PackWriter:
    """Appends records to packs; `seal` makes a finished pack durable and hands it over.

    `on_sealed(name, size, entries)` is called once the pack is in its final place; entries are
    (object_id, offset, length, size, headers) tuples. The caller records them in the catalog.
    `codec`: the repository's; with a key the packs are masked (module doc).

    Records are gathered in a buffer of _BUFFER bytes that is hashed (the masked pack's
    trailer) and written as one: hashing and writing release the interpreter lock, and the
    caller, whose worker threads keep the lock busy, waits to get it back after each
    release: two releases per megabyte cost far less than four per record.
    """

    def __init__(self, tmp_dir, packs_dir, pack_size, on_sealed, codec=None):
        self._masking = codec if codec is not None and codec.encrypted else None
        self._hash = None
        self.tmp_dir = tmp_dir
        self.packs_dir = packs_dir
        self.pack_size = pack_size
        self.on_sealed = on_sealed
        self._file = None
        self._buffer = bytearray()
        self._name = None
        self._entries = []
        self._offset = 0
        self.bytes_written = 0

    def add(self, object_id, record, size, headers=None):
        if self._file is None:
            self._open()
        if self._masking is None:
            self._buffer += record
        else:
            self._buffer += self._masking.mask(self._name, self._offset, record[:HEADER.size])
            self._buffer += memoryview(record)[HEADER.size:]
        if len(self._buffer) >= _BUFFER:
            self._flush_buffer()
        self._entries.append((object_id, self._offset, len(record), size, headers))
        self._offset += len(record)
        self.bytes_written += len(record)
        if self._offset >= self.pack_size:
            self.seal()

    def _open(self):
        self._name = secrets.token_hex(16)
        path = os.path.join(self.tmp_dir, self._name + ".pack")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._file = os.fdopen(fd, "wb", buffering=0)
        self._entries = []
        self._offset = 0
        self._buffer = bytearray()
        if self._masking is not None:
            self._buffer += PACK_MAGIC
            self._hash = hashlib.sha256()
            self._offset = len(PACK_MAGIC)

    def _flush_buffer(self):
        if self._hash is not None:
            self._hash.update(self._buffer)
        # an unbuffered file's write may write less than it was given
        data, written = self._buffer, 0
        while written < len(data):
            written += self._file.write(memoryview(data)[written:])
        self._buffer = bytearray()

    def seal(self):
        """Flush, fsync and move the current pack into place, then report it. No-op if empty."""
        if self._file is None:
            return
        f, name, entries, size = self._file, self._name, self._entries, self._offset
        try:
            self._flush_buffer()
            if self._masking is not None:
                self._buffer += self._hash.digest()
                self._hash = None
                self._flush_buffer()
                size += TRAILER_BYTES
            os.fsync(f.fileno())
        except BaseException:
            self.abort()        # e.g. ENOSPC on the last write: give the space back
            raise
        self._file = None
        f.close()
        final = pack_path(self.packs_dir, name)
        os.makedirs(os.path.dirname(final), mode=0o700, exist_ok=True)
        os.rename(os.path.join(self.tmp_dir, name + ".pack"), final)
        fsync_dir(os.path.dirname(final))
        self.on_sealed(name, size, entries)

    def abort(self):
        """Drop the pack being written (after an error); never raises."""
        if self._file is None:
            return
        try:
            self._file.close()
        except OSError:
            pass    # close() flushes the buffer, which fails again on a full disk
        try:
            os.unlink(os.path.join(self.tmp_dir, self._name + ".pack"))
        except OSError:
            pass
        self._file = None
        self._buffer = bytearray()


class PackReader:
    """Reads records from packs, keeping a few open."""

    def __init__(self, packs_dir):
        self.packs_dir = packs_dir
        self._open = {}
        self._masked = {}

    def read(self, pack, offset, length):
        f = self._open.get(pack)
        if f is None:
            if len(self._open) > 16:
                self.close()
            f = open(pack_path(self.packs_dir, pack), "rb")
            self._open[pack] = f
        f.seek(offset)
        return f.read(length)

    def masked(self, pack):
        """Are the records of `pack` masked (module doc)? Read from its first bytes, once."""
        got = self._masked.get(pack)
        if got is None:
            got = self._masked[pack] = self.read(pack, 0, len(PACK_MAGIC)) == PACK_MAGIC
        return got

    def record(self, codec, pack, offset, length):
        """The record at `offset` of `pack` as Codec.decode takes it (its header unmasked).
        OSError if it cannot be read; DamagedObject if it is masked and `codec` has no key."""
        data = self.read(pack, offset, length)
        if not self.masked(pack):
            return data
        if not codec.encrypted:
            raise DamagedObject("the records of pack {} are masked: the repository's key is "
                                "needed to read them".format(pack))
        return codec.mask(pack, offset, data[:HEADER.size]) + data[HEADER.size:]

    def close(self):
        for f in self._open.values():
            f.close()
        self._open = {}


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
