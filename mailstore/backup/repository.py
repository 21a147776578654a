"""The repository on disk: layout, format file, key check, lock, and clean-up after crashes.

    REPO/config.json     format, version, encryption, a key check value (never the key) and,
                         from version 2 on, `mac` (auth.py)
    REPO/catalog.sqlite  the catalog (see catalog.py)
    REPO/catalog.sealed  an encrypted repository's catalog, encrypted and authenticated: what
    REPO/sealed/*        an off-host copy gets instead (the manifest and its chunk files:
                         sealed.py, offhost.py); a copy that holds only these is opened with
                         the key alone, read-only
    REPO/offhost-view/   what the off-host copy is served, while it is (offhost.py)
    REPO/packs/xx/*.pack objects (see objects.py)
    REPO/index/<id>.marshal  a cache of the newest snapshot's message list (see index_cache.py)
    REPO/tmp/            packs being written; whatever is here when no run holds the lock is
                         left over from an interrupted run and is removed by the next one
    REPO/lock            flock(2) target: exclusive for run/prune, shared for verify/restore
                         (a read-only copy: the shared lock through a read-only descriptor,
                         none if the copy has no lock file; run/prune refuse it)
"""
import errno
import fcntl
import hmac
import json
import os
import shutil
import time
import uuid

from mailstore.backup import auth, catalog, keys, sealed
from mailstore.backup.auth import Authenticator, CatalogDamaged
from mailstore.backup.errors import KeyFileError, LockedError, RepositoryError
from mailstore.backup.objects import (COMPRESSION_MODES, Codec, DamagedObject, PackReader,
                                       fsync_dir)

FORMAT = "mailstore-backup"
# 1: as first released; 2: config.json and the catalog authenticated (auth.py). A format 1
# repository is read and written as before until `mailstore backup upgrade` (upgrade.py).
VERSION = auth.VERSION
KNOWN_VERSIONS = (1, 2)
DEFAULT_PACK_SIZE = 32 * 1024 * 1024
_KEY_CHECK = b"mailstore backup key check"
# REPO/<this>: the tree the off-host copy is served from, made and removed by the serve
# script under the lock (offhost.py)
OFFHOST_VIEW = "offhost-view"


def init(path, key_file=None, pack_size=DEFAULT_PACK_SIZE, compression="fast", new_key=None):
    """Create an empty repository at `path` (absent or an empty directory).

    `compression`: "fast" (default) or "small" (Huffman-codes attachments too: ~25 % less
    space for them, about twice the CPU time of a first backup); see objects.py.

    With `key_file` the repository is encrypted. `new_key`: False: the key file must exist
    (mode 0600); True: it must not, a new random key is written there; None: either. Returns
    the repository's config.
    """
    path = os.fspath(path)
    if compression not in COMPRESSION_MODES:
        raise RepositoryError("compression must be one of {}".format(
            ", ".join(COMPRESSION_MODES)))
    if os.path.lexists(path):
        if not os.path.isdir(path) or os.path.islink(path):
            raise RepositoryError("{} exists and is not a directory".format(path))
        if os.listdir(path):
            raise RepositoryError("{} is not empty; a repository needs an empty or new "
                                  "directory".format(path))
    key = None
    if key_file is not None:
        key_file = os.fspath(key_file)
        exists = os.path.lexists(key_file)
        if new_key is False and not exists:
            raise KeyFileError("key file {} does not exist; to make a new key there, add "
                               "--new-key".format(key_file))
        if new_key and exists:
            raise KeyFileError("key file {} exists already; --new-key writes a new key only "
                               "where there is none".format(key_file))
        key = keys.load_key_file(key_file) if exists else keys.create_key_file(key_file)
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    for sub in ("packs", "tmp"):
        os.mkdir(os.path.join(path, sub), 0o700)
    codec = Codec(key)
    config = {
        "format": FORMAT,
        "version": VERSION,
        "id": str(uuid.uuid4()),
        "created": time.time(),
        "encryption": "aes-256-gcm" if key else "none",
        "pack_size": int(pack_size),
        "compression": compression,
        # A record of fixed content: decrypting it proves that a key fits this repository.
        "key_check": codec.encode(codec.object_id(_KEY_CHECK), _KEY_CHECK).hex() if key else None,
    }
    mac_key = key.mac if key else auth.PUBLIC_KEY
    config["mac"] = auth.config_mac(config, mac_key)
    os.close(os.open(os.path.join(path, "catalog.sqlite"), os.O_CREAT | os.O_EXCL, 0o600))
    conn = catalog.connect(os.path.join(path, "catalog.sqlite"))
    try:
        catalog.create(conn)
        with catalog.transaction(conn):
            auth.create(conn)
            Authenticator(path, config["id"], mac_key, bool(key)).seal_manifest(conn)
    finally:
        conn.close()
    write_config(path, config)
    if key is not None:
        # a new repository can be copied off-host at once (offhost.py)
        conn = catalog.connect(os.path.join(path, "catalog.sqlite"))
        try:
            sealed.write(path, config["id"], key, conn)
        finally:
            conn.close()
    return config


def write_config(path, config):
    _write_json(os.path.join(path, "config.json"), config)
    fsync_dir(path)


def _write_json(path, data):
    tmp = path + ".tmp"
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def read_config(path):
    config_path = os.path.join(os.fspath(path), "config.json")
    try:
        with open(config_path) as f:
            config = json.load(f)
    except FileNotFoundError:
        if not os.path.isdir(path):
            raise RepositoryError("repository {} does not exist".format(path))
        raise RepositoryError("{} is not a mailstore backup repository (no config.json; "
                              "create one with `mailstore backup init`)".format(path))
    except (OSError, ValueError) as e:
        raise RepositoryError("cannot read {}: {}".format(config_path, e))
    if not isinstance(config, dict):
        raise RepositoryError("{} is damaged: not a JSON object".format(config_path))
    if config.get("format") != FORMAT:
        raise RepositoryError("{} is not a mailstore backup repository".format(path))
    version = config.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version > VERSION:
        raise RepositoryError("repository {} has format version {}, newer than this mailstore "
                              "knows ({}): use a newer mailstore".format(path, version,
                                                                         VERSION))
    if version not in KNOWN_VERSIONS:
        raise RepositoryError("repository {} has format version {}; this mailstore knows "
                              "versions {}".format(path, json.dumps(version), ", ".join(
                                  map(str, KNOWN_VERSIONS))))
    problem = _config_problem(config)
    if problem:
        raise RepositoryError("{} is damaged: {}".format(config_path, problem))
    if version >= 2 and config["encryption"] == "none":
        if config.get("key_check") is not None:
            raise CatalogDamaged("{} says encryption 'none' but holds an encrypted "
                                 "repository's key check: it was changed (a downgrade?); "
                                 "refusing the repository".format(config_path))
        if not _mac_matches(config, auth.PUBLIC_KEY):
            raise CatalogDamaged("{} is damaged or was changed: it does not match its "
                                 "checksum".format(config_path))
    return config


def _mac_matches(config, key):
    return hmac.compare_digest(str(config.get("mac")), auth.config_mac(config, key))


def _config_problem(config):
    """What is wrong with the fields of a config.json of this version (None: nothing).

    Checked when the repository is opened, so that a damaged file is named as such rather
    than failing later somewhere in the code that uses the field."""
    if "encryption" not in config:
        return "field 'encryption' is missing"
    if config["encryption"] not in ("none", "aes-256-gcm"):
        return "field 'encryption' is {!r}, not 'none' or 'aes-256-gcm'".format(
            config["encryption"])
    if config["encryption"] != "none":
        check = config.get("key_check")
        try:
            bytes.fromhex(check)
        except (TypeError, ValueError):
            return "field 'key_check' of an encrypted repository must be hex digits, not " \
                "{}".format(json.dumps(check))
    size = config.get("pack_size", DEFAULT_PACK_SIZE)
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        return "field 'pack_size' must be a whole number above 0, not {}".format(
            json.dumps(size))
    if config["version"] >= 2 and not isinstance(config.get("mac"), str):
        return "field 'mac' is missing"
    if config.get("compression", "fast") not in COMPRESSION_MODES:
        return "field 'compression' must be one of {}, not {}".format(
            ", ".join(COMPRESSION_MODES), json.dumps(config.get("compression")))
    return None


class Repository:
    """An open repository. Use as a context manager; `lock()` before changing anything."""

    def __init__(self, path, key_file=None, readonly=False, need_key=True, upgrading=False):
        """`need_key`: an encrypted repository's key is required and loaded (else it is not
        opened at all). `upgrading`: open a format 1 repository whose catalog an interrupted
        upgrade authenticated already."""
        self.path = os.fspath(path)
        self.config = read_config(self.path)
        self.version = self.config["version"]
        self.encrypted = self.config["encryption"] != "none"
        catalog_path = os.path.join(self.path, "catalog.sqlite")
        # an off-host copy of an encrypted repository: its catalog travelled sealed only
        self.sealed_only = not os.path.lexists(catalog_path) and os.path.lexists(
            sealed.path_of(self.path))
        if self.sealed_only and not self.encrypted:
            raise RepositoryError("repository {} holds a sealed catalog only, but config.json "
                                  "says it is not encrypted: damaged or changed".format(
                                      self.path))
        key = None
        if self.encrypted and (need_key or self.sealed_only):
            if key_file is None:
                raise KeyFileError("repository {} is encrypted{}: give its key with "
                                   "--key-file (or MAILSTORE_KEY_FILE)".format(
                                       self.path, ", its catalog sealed (an off-host copy)"
                                       if self.sealed_only else ""))
            key = keys.load_key_file(os.fspath(key_file))
            codec = Codec(key)
            try:
                codec.decode(codec.object_id(_KEY_CHECK), bytes.fromhex(self.config["key_check"]))
            except DamagedObject:
                raise KeyFileError("key file {} does not fit repository {} (wrong key)".format(
                    key_file, self.path)) from None
            if self.version >= 2 and not _mac_matches(self.config, key.mac):
                raise CatalogDamaged("{} fails authentication with this key: changed "
                                     "(encryption, key check, ...) or damaged".format(
                                         os.path.join(self.path, "config.json")))
        self.key = key
        self.codec = Codec(key, self.config.get("compression", "fast"),
                           bind_values=self.version >= 2)
        self.packs_dir = os.path.join(self.path, "packs")
        self.tmp_dir = os.path.join(self.path, "tmp")
        self.pack_size = int(self.config.get("pack_size", DEFAULT_PACK_SIZE))
        if self.sealed_only:
            self.db, self.sealed_generation = sealed.open_catalog(
                sealed.path_of(self.path), self.config["id"], key)
        else:
            self.db = catalog.connect(catalog_path, readonly=readonly)
        self._lock_fd = None
        self._reader = None
        try:
            if not self.encrypted and key_file is not None:
                self._refuse_downgrade(key_file)
            if self.version == 1 and not upgrading and auth.is_authenticated(self.db):
                raise CatalogDamaged(
                    "{} says format 1 but the catalog of {} is authenticated (format 2): "
                    "config.json was replaced or damaged, or an upgrade was interrupted (run "
                    "`mailstore backup upgrade` again)".format(
                        os.path.join(self.path, "config.json"), self.path))
        except BaseException:
            self.close()
            raise
        if self.version < 2:
            self.auth = None        # format 1: nothing to check (see upgrade.py)
        elif self.encrypted:
            self.auth = Authenticator(self.path, self.config["id"],
                                      key.mac if key else None, True)
        else:
            self.auth = Authenticator(self.path, self.config["id"], auth.PUBLIC_KEY, False)

    @property
    def authenticated(self):
        """Are the catalog's MACs checked (format 2, and the key of an encrypted one)?"""
        return self.auth is not None and self.auth.key is not None

    def check_catalog(self, seqs=()):
        """Raise CatalogDamaged unless the list of snapshots and each snapshot of `seqs`
        (their rows, message and file rows) match their authentication. False (nothing
        checked) for a format 1 repository."""
        if self.auth is None:
            return False
        self._check_auth_table()
        self.auth.check_manifest(self.db)
        for seq in seqs:
            self.auth.check_snapshot(self.db, seq)
        return True

    def check_snapshot_rows(self, seq, count, rows_digest):
        """For a run: the previous snapshot `seq` and its `count` message rows as the run
        loads them (from the index cache or the catalog) are authentic. `rows_digest`: their
        messages digest, as the index cache's keyed digest vouches for it or as the run
        computed it from the rows."""
        if self.auth is not None:
            self._check_auth_table()
            self.auth.check_snapshot(self.db, seq, None, rows_digest, count)

    def _check_auth_table(self):
        if not auth.is_authenticated(self.db):
            raise CatalogDamaged("catalog of {} damaged or tampered with: its authentication "
                                 "records are missing".format(self.path))

    def _refuse_downgrade(self, key_file):
        """config.json says 'none', yet a key was given: refuse if the repository shows it
        was encrypted with that key (config.json downgraded), else ignore the key."""
        try:
            key = keys.load_key_file(os.fspath(key_file))
        except KeyFileError:
            return          # an unencrypted repository ignores its --key-file
        evidence = None
        if auth.is_authenticated(self.db):
            row = self.db.execute("SELECT value FROM meta WHERE key = ?",
                                  (auth.MANIFEST_KEY,)).fetchone()
            try:
                Authenticator(self.path, self.config["id"], key.mac, True).check_manifest(
                    self.db)
                evidence = row is not None and "its catalog is authenticated with this key"
            except CatalogDamaged:
                pass
        if not evidence:
            row = self.db.execute("SELECT id, pack, offset, length FROM objects"
                                  " LIMIT 1").fetchone()
            if row is not None:
                try:
                    codec = Codec(key)
                    codec.decode(row[0], self.reader.record(codec, *row[1:]))
                    evidence = "its objects are encrypted with this key"
                except (DamagedObject, OSError):
                    pass
        if evidence:
            raise KeyFileError(
                "repository {} says encryption 'none' in config.json but {}: config.json was "
                "changed (a downgrade); refusing to use it".format(self.path, evidence))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        if self._reader is not None:
            self._reader.close()
        self.db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def lock(self, exclusive=True, wait=0):
        """Take the repository lock; wait up to `wait` seconds, then raise LockedError.
        With the exclusive lock, an older catalog is migrated (catalog.migrate)."""
        lock_path = os.path.join(self.path, "lock")
        if exclusive and self.sealed_only:
            raise RepositoryError(
                "repository {} is an off-host copy whose catalog is sealed: only restore, "
                "verify, list and find work on it (with the key)".format(self.path))
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as e:
            if e.errno not in _READ_ONLY:
                raise
            if exclusive:
                raise RepositoryError(
                    "repository {} is read-only ({}: {}); only restore, verify, list, find "
                    "and status work on a read-only copy".format(
                        self.path, e.strerror, lock_path)) from None
            fd = _open_for_shared_lock(lock_path)
            if fd is None:
                return
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        deadline = time.monotonic() + max(0, wait)
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    holder = _read_holder(fd)
                    os.close(fd)
                    raise LockedError("repository {} is in use by another mailstore process{}; "
                                      "try again later (or use --wait SECONDS)".format(
                                          self.path, holder))
                time.sleep(0.2)
        if exclusive:
            os.ftruncate(fd, 0)
            os.pwrite(fd, "pid {} since {}\n".format(
                os.getpid(), time.strftime("%Y-%m-%d %H:%M:%S")).encode(), 0)
        self._lock_fd = fd
        if exclusive:
            # every command that writes takes this lock first: an older catalog's tables
            # are brought up to date here, once, before anything reads them to write
            catalog.migrate(self.db)

    def clean_up(self):
        """Remove what interrupted runs left: temporary packs and packs the catalog lacks.

        Only called with the exclusive lock held, so nothing here can belong to a live run.
        """
        removed = 0
        # a repository copied back from an off-host copy has no tmp/ (never copied)
        os.makedirs(self.tmp_dir, mode=0o700, exist_ok=True)
        # what a killed serve or seal left (they run under this lock too)
        view = os.path.join(self.path, OFFHOST_VIEW)
        if os.path.lexists(view):
            shutil.rmtree(view)
            removed += 1
        removed += sealed.remove_garbage(self.path)
        for name in os.listdir(self.tmp_dir):
            os.unlink(os.path.join(self.tmp_dir, name))
            removed += 1
        latest = self.db.execute("SELECT id FROM snapshots ORDER BY seq DESC LIMIT 1").fetchone()
        index_dir = os.path.join(self.path, "index")
        if os.path.isdir(index_dir):
            for name in os.listdir(index_dir):
                # the newest snapshot's index cache and known objects (newobjects.py) stay
                if latest is None or name not in (latest[0] + ".marshal", latest[0] + ".known"):
                    os.unlink(os.path.join(index_dir, name))
                    removed += 1
        known = {row[0] for row in self.db.execute("SELECT name FROM packs")}
        for sub in os.listdir(self.packs_dir):
            subdir = os.path.join(self.packs_dir, sub)
            for name in os.listdir(subdir):
                if name.endswith(".pack") and name[:-5] not in known:
                    os.unlink(os.path.join(subdir, name))
                    removed += 1
        return removed

    def seal(self):
        """An encrypted repository (its key loaded, the exclusive lock held, nothing
        uncommitted): write the sealed catalog the off-host copy gets (sealed.py);
        sealed.write's dict (its generation, the chunks it encoded). None for an
        unencrypted one (its copy is the whole repository)."""
        if self.key is None:
            return None
        return sealed.write(self.path, self.config["id"], self.key, self.db)

    @property
    def reader(self):
        if self._reader is None:
            self._reader = PackReader(self.packs_dir)
        return self._reader

    def read_object(self, object_id):
        """The content of one object, checked against its id (raises DamagedObject)."""
        row = self.db.execute("SELECT pack, offset, length FROM objects WHERE id = ?",
                              (object_id,)).fetchone()
        if row is None:
            raise DamagedObject("object {} is not in the catalog".format(object_id))
        return self.read_at(object_id, *row)

    def read_at(self, object_id, pack, offset, length):
        """Like read_object, for a caller that already has the object's location."""
        if pack is None:
            raise DamagedObject("object {} is not in the catalog".format(object_id))
        try:
            record = self.reader.record(self.codec, pack, offset, length)
        except OSError as e:
            raise DamagedObject("cannot read pack {}: {}".format(pack, e))
        return self.codec.decode(object_id, record)


# What opening REPO/lock for writing raises on a read-only copy of a repository: a read-only
# mount (a backup disk, a filesystem snapshot) or files the user may read but not write.
_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


def _open_for_shared_lock(lock_path):
    """A read-only descriptor of the lock file for a shared lock (flock(2) takes one on any
    descriptor), or None if there is no lock file and none can be made: then no process
    can have locked this copy either (a run or prune makes the file before anything else)."""
    try:
        return os.open(lock_path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None


def _read_holder(fd):
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""
    return " ({})".format(text) if text else ""
