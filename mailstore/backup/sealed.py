"""The sealed catalog: the catalog as it may leave the server, REPO/catalog.sealed and the
chunk files in REPO/sealed/.

The catalog (catalog.sqlite) names users, folders and files, their sizes, dates and owners,
and which users hold the same message; an off-host copy held by someone else must show none
of it. So every `run`, `prune`, `upgrade` and `seal` of an encrypted repository (they hold
the key and the exclusive lock) also writes the catalog encrypted and authenticated with
keys derived from the repository key (keys.Key.sealed, .sealed_names), and the off-host copy
gets that instead of catalog.sqlite and index/ (offhost.py). A reader with the key rebuilds
the catalog in a private temporary file (`open_catalog`); one without the key can still
check the framing and that every chunk file is there, whole (`inspect`).

The copy is pulled every night, so what changed must be all that travels, and the seal
must cost what changed, not what the catalog holds: the catalog is sealed as a stream of its
rows (sealed_rows.py) in groups with stable keys, each chunk a file of its own named by its
content; triggers record which groups changed (sealed_state.py), so a seal encodes only
those and the small tables, and lists the other chunks as the last seal left them: their
names and files stay, and the pull (rsync --link-dest) makes hard links of them.

Format 2 (integers big endian):
    REPO/catalog.sealed, the manifest:
        MAGIC (32 bytes) | header length (4) | header: canonical JSON of
            {"version": 2, "repository": config.json's id, "generation": N,
             "chunks": [[name, bytes, sha256 hex], ...] in stream order,
             "nonce": 12 random bytes, hex, "body": bytes of the body}
        | body: AES-256-GCM (key.sealed, that nonce, associated data: everything before the
          body) of canonical JSON {"repository", "generation", "plain": stream bytes}
    REPO/sealed/<name>, a chunk: nonce (12 random bytes) | AES-256-GCM (key.sealed) of the
        chunk's rows deflated, associated data: CHUNK_AD | repository id | "\n" | name
    name: the first 16 bytes, hex, of HMAC-SHA256 (key.sealed_names) of the repository id,
    "\n" and the chunk's rows: the same rows give the same name, but nobody without the key
    can tell which rows they are.
So without the key the manifest says which files make the catalog and their lengths and
SHA-256 (a copy is checked whole, `inspect`); with it, the header (repository, generation,
the list and order of the chunks) cannot be changed unseen, a chunk cannot be changed, put
under another name or taken from another repository, and the stream's own end line tells a
list cut short. A chunk file is written once (an existing one that authenticates is kept:
that is the point), fsync'd, then the manifest replaced atomically; chunk files no manifest
names any more go after it (a crash in between leaves some: the next clean-up removes them,
`remove_garbage`).

Format 1, one file of the whole SQLite file deflated (sealed_v1.py), is still read: copies
older mailstores made stay on the backup host for weeks. An older mailstore refuses a format
2 copy in one line ("... damaged or was tampered with: version 2; this mailstore reads version
1", or, once the chunk list is longer than the 4 KiB header it allowed, "its header claims N
bytes"): the server and the backup host run the same mailstore.

`generation` counts the sealed catalogs a repository wrote (meta `sealed_generation` in the
catalog, raised before the catalog is read, so the sealed rows hold their own number and
`open_catalog` checks it): a copy whose catalog is older than the one before it (an older
night's served again) shows a smaller number without the key (`inspect`, offhost.py).
"""
import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import stat
import tempfile
import zlib

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mailstore.backup import auth, catalog, sealed_rows, sealed_state, sealed_v1
from mailstore.backup.auth import CatalogDamaged
from mailstore.backup.objects import fsync_dir

NAME = "catalog.sealed"
DIR = "sealed"
VERSION = 2
META_KEY = sealed_v1.META_KEY
CHUNK_AD = b"mailstore-backup sealed catalog chunk\n"
CHUNK_NAME = re.compile(r"^[0-9a-f]{32}$")
_NONCE = 12
_TAG = 16
# far more than the list of chunks of any catalog; a longer header is damage
_MAX_HEADER = 64 * 1024 * 1024


def path_of(repo_path):
    return os.path.join(repo_path, NAME)


def chunk_dir(repo_path):
    return os.path.join(repo_path, DIR)


def chunk_files(repo_path):
    """The names of the chunk files in REPO/sealed/ (sorted): what the copy gets with the
    manifest (after a seal exactly those it lists)."""
    directory = chunk_dir(repo_path)
    if not os.path.isdir(directory):
        return []
    return sorted(n for n in os.listdir(directory) if CHUNK_NAME.match(n) and
                  os.path.isfile(os.path.join(directory, n)) and
                  not os.path.islink(os.path.join(directory, n)))


def _chunk_ad(repo_id, name):
    return CHUNK_AD + repo_id.encode() + b"\n" + name.encode("ascii")


def _chunk_name(key, repo_id, raw):
    return hmac.new(key.sealed_names, repo_id.encode() + b"\n" + raw,
                    hashlib.sha256).hexdigest()[:32]


def write(repo_path, repo_id, key, db):
    """Write the sealed catalog of the repository at `repo_path` (config.json's id `repo_id`,
    its keys.Key `key`, `db` its open catalog with nothing uncommitted), under the exclusive
    lock: new chunk files, then the manifest atomically, then the chunks it no longer names
    go. Only the groups of rows that changed since the last seal (sealed_state.py) and the
    small tables are encoded; a listed chunk file missing or of another length is encoded
    again too. Returns {"generation", "encoded": chunks encoded, "encoded_bytes": their
    plain bytes}."""
    sealed_state.ensure(db)
    with catalog.transaction(db):
        row = db.execute("SELECT value FROM meta WHERE key = ?", (META_KEY,)).fetchone()
        generation = (int(row[0]) if row else 0) + 1
        db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (META_KEY, str(generation)))
    aead = AESGCM(key.sealed)
    directory = chunk_dir(repo_path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fingerprint = _chunk_name(key, repo_id, b"seal state\n")
    sealer = _Sealer(directory, aead, key, repo_id)
    db.execute("BEGIN")     # one consistent read of every table
    try:
        state, dirty = sealed_state.load(db, fingerprint)
        tracked, whole = sealed_rows.tables(db)
        sealer.add(sealed_rows.head(db))
        new_state, count = {}, 0
        for table in tracked:
            sealer.add(sealed_rows.table_line(db, table))
            old = state.get(table)
            groups = sealed_state.all_groups(db, table) if old is None else \
                set(old) | dirty[table]
            new_state[table] = {}
            for group in sorted(groups):
                entry = old.get(group) if old is not None and group not in dirty[table] \
                    else None
                if entry is not None and sealer.reuse(entry):
                    new_state[table][group] = entry
                else:
                    raw, rows = sealed_rows.group(db, table, group)
                    if not rows:
                        continue        # its rows are gone
                    entry = sealer.add(raw) + [rows, len(raw)]
                    new_state[table][group] = entry
                count += entry[3]
        sealer.add(sealed_rows.tail(db, whole, count))
    finally:
        db.execute("COMMIT")
    fsync_dir(directory)
    _write_manifest(repo_path, aead, repo_id, generation, sealer.listed, sealer.plain)
    sealed_state.record(db, fingerprint, new_state)
    names = {entry[0] for entry in sealer.listed}
    for name in chunk_files(repo_path):
        if name not in names:
            os.unlink(os.path.join(directory, name))
    fsync_dir(directory)
    return {"generation": generation, "encoded": sealer.encoded,
            "encoded_bytes": sealer.encoded_bytes}


class _Sealer:
    """The manifest's chunk list as it is built: chunks encoded (`add`) or kept (`reuse`)."""

    def __init__(self, directory, aead, key, repo_id):
        self.directory, self.aead, self.key, self.repo_id = directory, aead, key, repo_id
        self.listed, self.plain, self.encoded, self.encoded_bytes = [], 0, 0, 0

    def add(self, raw):
        """Encode `raw` (a chunk's rows); its [name, bytes, sha256], listed."""
        name = _chunk_name(self.key, self.repo_id, raw)
        entry = _keep_or_write(self.directory, self.aead, self.repo_id, name, raw)
        self.listed.append(entry)
        self.plain += len(raw)
        self.encoded += 1
        self.encoded_bytes += len(raw)
        return entry

    def reuse(self, entry):
        """List the chunk of the seal state's `entry` [name, bytes, sha256, rows, plain] if its file
        is there with its length (else False: the caller encodes its rows again)."""
        path = os.path.join(self.directory, entry[0])
        try:
            st = os.lstat(path)
        except OSError:
            return False
        if not stat.S_ISREG(st.st_mode) or st.st_size != entry[1]:
            return False
        self.listed.append(list(entry[:3]))
        self.plain += entry[4]
        return True


# zlib level 1: on the catalog's rows a third of level 6's CPU for 9 % more bytes (measured
# 2026-12-06 on a 100k-message catalog: 123 against 38 MB/s); every run seals, so it counts.
_LEVEL = 1


def _keep_or_write(directory, aead, repo_id, name, raw):
    """[name, bytes, sha256] of chunk file `name`: the one there if it authenticates, else
    written anew (to name.tmp, fsync'd, renamed)."""
    path = os.path.join(directory, name)
    try:
        with open(path, "rb") as f:
            data = f.read()
        aead.decrypt(data[:_NONCE], data[_NONCE:], _chunk_ad(repo_id, name))
    except (OSError, InvalidTag, ValueError):
        nonce = secrets.token_bytes(_NONCE)
        data = nonce + aead.encrypt(nonce, zlib.compress(raw, _LEVEL),
                                    _chunk_ad(repo_id, name))
        _write_durably(path, data)
    return [name, len(data), hashlib.sha256(data).hexdigest()]


def _write_manifest(repo_path, aead, repo_id, generation, listed, plain):
    nonce = secrets.token_bytes(_NONCE)
    body = auth.canonical({"repository": repo_id, "generation": generation, "plain": plain})
    fields = {"version": VERSION, "repository": repo_id, "generation": generation,
              "chunks": listed, "nonce": nonce.hex(), "body": len(body) + _TAG}
    header = auth.canonical(fields)
    head = sealed_v1.MAGIC + sealed_v1.LENGTH.pack(len(header)) + header
    _write_durably(path_of(repo_path), head + aead.encrypt(nonce, body, head))
    fsync_dir(repo_path)


def _write_durably(path, data):
    """`data` as the file `path`, whole or not at all: written to path.tmp, fsync'd, renamed
    (the caller fsyncs the directory); the .tmp goes if that fails."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def remove_garbage(repo_path):
    """What an interrupted seal left (the exclusive lock held): the manifest's and chunks'
    .tmp files, and chunk files the manifest does not name. Returns how many went."""
    removed = 0
    leftovers = [path_of(repo_path) + ".tmp"]
    directory = chunk_dir(repo_path)
    if os.path.isdir(directory):
        leftovers += [os.path.join(directory, n) for n in os.listdir(directory)
                      if n.endswith(".tmp")]
    for path in leftovers:
        if os.path.lexists(path):
            os.unlink(path)
            removed += 1
    try:
        with open(path_of(repo_path), "rb") as f:
            fields, _head = sealed_v1.read_header(f, path_of(repo_path), _MAX_HEADER)
        names = {entry[0] for entry in _check_fields(fields, path_of(repo_path))}
    except (OSError, CatalogDamaged):
        return removed      # no readable manifest: nothing to tell garbage by
    for name in chunk_files(repo_path):
        if name not in names:
            os.unlink(os.path.join(directory, name))
            removed += 1
    return removed


def _check_fields(fields, path):
    """The chunk list of a format 2 header, its fields checked (damaged() otherwise)."""
    generation, chunks, body = (fields.get(k) for k in ("generation", "chunks", "body"))
    try:
        nonce = bytes.fromhex(fields.get("nonce"))
    except (TypeError, ValueError):
        nonce = b""
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
               for v in (generation, body)) or len(nonce) != _NONCE \
            or not isinstance(chunks, list):
        raise sealed_v1.damaged(path, "its header lacks a generation, chunk list, body "
                                      "length or nonce")
    for entry in chunks:
        if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str) and
                CHUNK_NAME.match(entry[0]) and isinstance(entry[1], int) and
                not isinstance(entry[1], bool) and entry[1] >= _NONCE + _TAG and
                isinstance(entry[2], str) and re.match(r"^[0-9a-f]{64}$", entry[2])):
            raise sealed_v1.damaged(path, "its chunk list is damaged")
    return chunks


class _Manifest:
    """A sealed catalog's entry file, read and its framing checked without the key."""

    def __init__(self, path, repo_id):
        self.path = path
        with open(path, "rb") as f:
            self.fields, self.head = sealed_v1.read_header(f, path, _MAX_HEADER)
            version = self.fields.get("version")
            if version not in (sealed_v1.VERSION, VERSION):
                raise sealed_v1.damaged(path, "version {!r}; this mailstore reads versions "
                                              "1 and 2".format(version))
            if self.fields.get("repository") != repo_id:
                raise sealed_v1.damaged(path, "it belongs to repository {!r}, not to {!r} "
                                              "(config.json)".format(
                                                  self.fields.get("repository"), repo_id))
            self.version = version
            if version == sealed_v1.VERSION:
                self.info = sealed_v1.inspect(f, self.fields, self.head, path)
                self.chunks = None
                return
            self.chunks = _check_fields(self.fields, path)
            self.body = f.read(self.fields["body"] + 1)
        if len(self.body) != self.fields["body"]:
            raise sealed_v1.damaged(path, "truncated: {} bytes where its header says {}"
                                    .format(len(self.head) + len(self.body),
                                            len(self.head) + self.fields["body"])
                                    if len(self.body) < self.fields["body"] else
                                    "bytes follow its body")
        self.info = {
            "generation": self.fields["generation"], "chunks": len(self.chunks),
            "bytes": len(self.head) + len(self.body) + sum(c[1] for c in self.chunks),
            "sha256": hashlib.sha256(self.head + self.body).hexdigest()}

    def chunk_problems(self):
        """Every listed chunk file missing, of another length or other bytes (one line
        each, without the key)."""
        problems = []
        directory = chunk_dir(os.path.dirname(self.path))
        for name, length, digest in self.chunks or ():
            path = os.path.join(directory, name)
            try:
                if os.path.islink(path) or not os.path.isfile(path):
                    raise FileNotFoundError
                with open(path, "rb") as f:
                    data = f.read(length + 1)
            except FileNotFoundError:
                problems.append("chunk {}/{} is missing".format(DIR, name))
                continue
            except OSError as e:
                problems.append("cannot read chunk {}/{}: {}".format(DIR, name, e.strerror))
                continue
            if len(data) != length:
                problems.append("chunk {}/{} is {} bytes, its manifest says {}".format(
                    DIR, name, len(data) if len(data) <= length else "more than " +
                    str(length), length))
            elif hashlib.sha256(data).hexdigest() != digest:
                problems.append("chunk {}/{} is not the file its manifest names (other "
                                "bytes)".format(DIR, name))
        return problems

    def damaged(self, problems):
        more = " (and {} more)".format(len(problems) - 1) if len(problems) > 1 else ""
        return sealed_v1.damaged(self.path, problems[0] + more)


def read_manifest(path, repo_id):
    """Without the key: the framing of the sealed catalog at `path` (magic, version,
    repository `repo_id`, whole; format 1: its chunks to the final one); {"generation",
    "chunks", "bytes", "sha256", "problems": one line for each chunk file missing or not as
    listed (format 2)}. CatalogDamaged names what is wrong with the entry file itself."""
    manifest = _Manifest(path, repo_id)
    return dict(manifest.info, problems=[str(sealed_v1.damaged(path, p))
                                         for p in manifest.chunk_problems()])


def inspect(path, repo_id):
    """read_manifest, but any problem of a chunk file is a CatalogDamaged too; a changed bit
    inside a chunk that still matches its listed SHA-256 (a changed manifest) shows only
    with the key (`open_catalog`)."""
    manifest = _Manifest(path, repo_id)
    problems = manifest.chunk_problems()
    if problems:
        raise manifest.damaged(problems)
    return dict(manifest.info)


def open_catalog(path, repo_id, key):
    """Rebuild the catalog from the sealed catalog at `path` in a private temporary file and
    open it (catalog.connect); the file is removed as soon as SQLite holds it open, so
    nothing decrypted stays on disk, even if the process is killed later. The connection
    reads; a write fails (the copy's catalog is not to be changed: it would be lost anyway).
    CatalogDamaged (one line) if anything fails authentication: nothing is opened then."""
    manifest = _Manifest(path, repo_id)
    tmpdir = tempfile.mkdtemp(prefix="mailstore-catalog-")
    tmp = os.path.join(tmpdir, "catalog.sqlite")
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        if manifest.version == sealed_v1.VERSION:
            with open(path, "rb") as f, open(tmp, "wb") as out:
                fields, head = sealed_v1.read_header(f, path, _MAX_HEADER)
                sealed_v1.decrypt_into(f, fields, head, path, key, out)
        else:
            _rebuild(manifest, repo_id, key, tmp)
        conn = catalog.connect(tmp)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (META_KEY,)).fetchone()
        except sqlite3.Error as e:
            conn.close()
            raise sealed_v1.damaged(path, "its content is not a catalog ({})".format(e)) \
                from None
        generation = manifest.fields["generation"]
        if row is None or row[0] != str(generation):
            conn.close()
            raise sealed_v1.damaged(path, "its header says generation {}, its content {}"
                                    .format(generation, row[0] if row else "none"))
        return conn, generation
    finally:
        # SQLite holds the file open (or nothing was opened): it goes from the disk now
        for leftover in (tmp, tmpdir):
            try:
                (os.rmdir if leftover == tmpdir else os.unlink)(leftover)
            except OSError:
                pass


def _rebuild(manifest, repo_id, key, tmp):
    """Authenticate a format 2 manifest and every chunk, and load the rows into `tmp`."""
    path = manifest.path
    aead = AESGCM(key.sealed)
    nonce = bytes.fromhex(manifest.fields["nonce"])
    try:
        aead.decrypt(nonce, manifest.body, manifest.head)
    except InvalidTag:
        raise CatalogDamaged("sealed catalog {} fails authentication (its manifest: damaged, "
                             "tampered with, or sealed with another key)".format(path)) \
            from None
    directory = chunk_dir(os.path.dirname(path))
    loader = sealed_rows.Loader(tmp)
    try:
        for index, (name, length, _digest) in enumerate(manifest.chunks):
            try:
                with open(os.path.join(directory, name), "rb") as f:
                    data = f.read(length + 1)
            except OSError:
                raise manifest.damaged(manifest.chunk_problems() or [
                    "cannot read chunk {}/{}".format(DIR, name)]) from None
            try:
                raw = zlib.decompress(aead.decrypt(data[:_NONCE], data[_NONCE:],
                                                   _chunk_ad(repo_id, name)))
            except (InvalidTag, ValueError):
                raise CatalogDamaged(
                    "sealed catalog {} fails authentication at chunk {}/{} ({} of {}: "
                    "damaged, tampered with, or sealed with another key)".format(
                        path, DIR, name, index + 1, len(manifest.chunks))) from None
            except zlib.error as e:
                raise sealed_v1.damaged(path, "cannot inflate chunk {}/{}: {}".format(
                    DIR, name, e)) from None
            if not hmac.compare_digest(_chunk_name(key, repo_id, raw), name):
                raise sealed_v1.damaged(path, "chunk {}/{} does not hold what its name says"
                                        .format(DIR, name))
            loader.feed(raw)
        loader.finish()
    except sealed_rows.StreamError as e:
        raise sealed_v1.damaged(path, "its content is not a catalog ({})".format(e)) from None
    finally:
        loader.close()
