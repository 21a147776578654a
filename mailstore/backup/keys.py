"""The repository key: a file of 64 hex digits (32 random bytes), mode 0600, never in the repo.

From the one master key independent keys are derived (HKDF-SHA256): one encrypts objects
(AES-256-GCM), one keys the object ids (HMAC-SHA256), so that an encrypted repository's ids do
not reveal the hash of any message a third party might already know, one keys the MACs that
authenticate config.json and the catalog (auth.py), one keys the digest of the index cache
(index_cache.py), so that nobody without the key can make a cache file the next run trusts,
and one encrypts the sealed catalog, the catalog as it leaves the server, and one names its
chunk files (sealed.py).
"""
import os
import secrets
import stat

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mailstore.backup.errors import KeyFileError

KEY_BYTES = 32


class Key:
    """The keys derived from one master key."""

    def __init__(self, master):
        if len(master) != KEY_BYTES:
            raise ValueError("master key must be 32 bytes")
        self.encryption = _derive(master, b"mailstore-backup object encryption")
        self.ids = _derive(master, b"mailstore-backup object ids")
        self.index = _derive(master, b"mailstore-backup index cache")
        self.mac = _derive(master, b"mailstore-backup catalog authentication")
        self.sealed = _derive(master, b"mailstore-backup sealed catalog")
        self.sealed_names = _derive(master, b"mailstore-backup sealed catalog chunk names")
        self.headers = _derive(master, b"mailstore-backup pack record headers")


def _derive(master, info):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(master)


def create_key_file(path):
    """Write a new random key to `path` (which must not exist) with mode 0600; return a Key."""
    master = secrets.token_bytes(KEY_BYTES)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError("key file {} already exists".format(path))
    except OSError as e:
        raise KeyFileError("cannot create key file {}: {}".format(path, e.strerror))
    with os.fdopen(fd, "w") as f:
        f.write(master.hex() + "\n")
        f.flush()
        os.fsync(f.fileno())
    return Key(master)


def load_key_file(path):
    """Read a key file; refuse one that group or others may read (it protects every backup)."""
    try:
        # O_NONBLOCK: opening a FIFO (or a tty) would otherwise wait for a writer, forever
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise KeyFileError("key file {} does not exist".format(path))
    except OSError as e:
        raise KeyFileError("cannot read key file {}: {}".format(path, e.strerror or e))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError("key file {} is {}, not a regular file".format(
                path, _kind(st.st_mode)))
        if st.st_mode & 0o077:
            raise KeyFileError(
                "key file {} has mode {:04o}; it must be readable by its owner only "
                "(chmod 600 {})".format(path, stat.S_IMODE(st.st_mode), path))
        data = os.read(fd, 200)
    except OSError as e:
        raise KeyFileError("cannot read key file {}: {}".format(path, e.strerror or e))
    finally:
        os.close(fd)
    try:
        master = bytes.fromhex(data.decode("ascii").strip())
    except ValueError:      # UnicodeDecodeError too: binary content
        master = b""
    if len(master) != KEY_BYTES:
        if len(data) == KEY_BYTES:
            raise KeyFileError("key file {} does not hold a key: not 64 hex digits (32 raw "
                               "bytes? write them as hex: xxd -p -c32 {})".format(path, path))
        raise KeyFileError("key file {} does not hold a key (expected 64 hex digits)".format(path))
    return Key(master)


def _kind(mode):
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a file"
