"""Authentication of config.json and the catalog (repository format 2): proof that what a
restore, a verify or the next run trusts is what mailstore wrote.

In the spirit of borg's authenticated manifest and restic's content-addressed snapshots:
- The MAC key of an encrypted repository is derived from its key (keys.Key.mac, HKDF). An
  unencrypted repository has no secret, so its MACs use a fixed public key: they are
  checksums that catch bit rot and accidents, NOT tampering (anyone can recompute them).
- config.json carries `mac`: HMAC-SHA256 over the canonical JSON of every other field, so
  that its encryption mode and key check cannot change unseen.
- Each snapshot has a row in `snapshot_auth`: the SHA-256 of its message rows (every column
  a restore or the next run uses, rows sorted by id) and of its file rows, and a MAC over
  the snapshot's own row (seq, id, times, counts...) and both digests. One digest per
  snapshot rather than a MAC per row: it also catches a row dropped, added or moved to
  another snapshot, costs no crypto per message, and leaves the message rows (shared with
  the run's hot path and the index cache) as they are.
- The manifest (meta `manifest`): a MAC over every snapshot's (seq, id, MAC), so that a
  snapshot added, dropped or reordered is seen.
- Encrypted From/Subject values are bound to their object and field by AES-GCM's associated
  data (objects.Codec.seal).
Without the key of an encrypted repository (list, status, a cheap verify) only the digests
are compared: bit rot is seen, tampering is not.
"""
import hashlib
import hmac
import itertools
import json
import operator

from mailstore.backup.errors import RepositoryError

VERSION = 2
# The "key" of an unencrypted repository's checksums: public, so no protection against
# tampering, only against damage.
PUBLIC_KEY = b"mailstore-backup public checksum key (no secret: not a MAC)"
MANIFEST_KEY = "manifest"

MESSAGE_COLUMNS = ("id", "user", "folder", "subdir", "name", "uniq", "size", "mtime_ns",
                   "uid", "gid", "mode", "ino", "object")
FILE_COLUMNS = ("kind", "user", "folder", "path", "mode", "uid", "gid", "mtime_ns", "size",
                "object", "link_target")
SNAPSHOT_COLUMNS = ("seq", "id", "started", "finished", "source", "host", "messages", "bytes",
                    "new_objects", "new_bytes", "read_files", "read_bytes", "warnings")

# one statement: run with execute(), never executescript(), which would COMMIT the caller's
# transaction first
SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshot_auth (
    seq INTEGER PRIMARY KEY,
    messages_digest TEXT NOT NULL,
    files_digest TEXT NOT NULL,
    mac TEXT NOT NULL
)
"""


class CatalogDamaged(RepositoryError):
    """The catalog or config.json does not match its authentication."""


class SnapshotDamaged(CatalogDamaged):
    """One snapshot's record or rows do not match its authentication; the list of snapshots
    may still be intact. `seq`, `snapshot` (its id as the catalog has it), `problem` (the
    text without the repository)."""

    def __init__(self, text, seq, snapshot, problem):
        super().__init__(text)
        self.seq = seq
        self.snapshot = snapshot
        self.problem = problem


def _bytes_value(value):
    # names that are not UTF-8 are stored as BLOBs (catalog.to_db): a list, which no text
    # column can hold, keeps the encoding unambiguous
    if isinstance(value, bytes):
        return ["bytes", value.hex()]
    raise TypeError("cannot encode {!r}".format(type(value)))


# (check_circular off: rows hold no containers, and the check costs a fifth of the time)
_ENCODER = json.JSONEncoder(ensure_ascii=True, sort_keys=True, separators=(",", ":"),
                            check_circular=False, default=_bytes_value)


def canonical(value):
    """The bytes a digest or MAC is taken over: compact ASCII JSON, the same on every Python."""
    return _ENCODER.encode(value).encode("ascii")


# rows encoded per step of messages_digest: big enough for C speed, small enough that the
# text of a million rows never sits in memory at once
_DIGEST_CHUNK = 4096


def messages_digest(rows):
    """Digest of a snapshot's message rows (MESSAGE_COLUMNS), in any order, each id once (the
    last row given for an id counts)."""
    return ordered_messages_digest([sorted(rows, key=operator.itemgetter(0))])  # stable


def ordered_messages_digest(chunks):
    """messages_digest of rows given sorted by id, as an iterable of lists of rows of any
    length (a run merges them from its index cache, never all in memory at once); of a run of
    rows with the same id, the last counts.

    The SHA-256 of canonical(rows sorted by id), taken piecewise: compact JSON of a list is
    "[" + its items' JSON joined by "," + "]", so hashing _DIGEST_CHUNK rows at a time gives
    the same digest without the whole text in memory."""
    h = hashlib.sha256(b"[")
    first = [True]
    pending = []
    for rows in chunks:
        pending.extend(rows)
        if len(pending) >= _DIGEST_CHUNK:
            # the rows of the last id wait for the next step: more rows with it may follow
            last, cut = pending[-1][0], len(pending) - 1
            while cut and pending[cut - 1][0] == last:
                cut -= 1
            _digest_steps(h, pending, cut, first)
            del pending[:cut]
    _digest_steps(h, pending, len(pending), first)
    h.update(b"]")
    return h.hexdigest()


def _digest_steps(h, rows, cut, first):
    """Hash rows[:cut] in steps of about _DIGEST_CHUNK rows, none splitting a run of one id."""
    start = 0
    while start < cut:
        end = min(start + _DIGEST_CHUNK, cut)
        e = end
        while start < e < cut and rows[e][0] == rows[e - 1][0]:
            e -= 1
        if e == start:      # one id's rows fill the step: take all of them
            e = end
            while e < cut and rows[e][0] == rows[e - 1][0]:
                e += 1
        chunk = rows[start:e]
        ids = list(map(operator.itemgetter(0), chunk))
        if len(set(ids)) != len(ids):
            # each id once: of a run of rows with the same id, the last
            chunk = [r for r, nxt in zip(chunk, itertools.islice(chunk, 1, None))
                     if r[0] != nxt[0]] + chunk[-1:]
        text = canonical(chunk)
        h.update(text[1:-1] if first[0] else b"," + text[1:-1])
        first[0] = False
        start = e


def files_digest(rows):
    """Digest of a snapshot's file rows (FILE_COLUMNS), in any order."""
    return hashlib.sha256(b"\n".join(sorted(canonical(list(r)) for r in rows))).hexdigest()


def config_mac(config, key):
    body = {k: v for k, v in config.items() if k != "mac"}
    return hmac.new(key, canonical(body), hashlib.sha256).hexdigest()


def create(db):
    db.execute(SCHEMA)


def is_authenticated(db):
    """Does this catalog carry format 2's authentication (evidence of format 2)?"""
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND"
                      " name = 'snapshot_auth'").fetchone() is not None


class Authenticator:
    """Computes and checks the catalog's digests and MACs for one repository.

    `key`: the MAC key (keys.Key.mac, or PUBLIC_KEY for an unencrypted repository), None when
    the key of an encrypted repository was not given: then only digests are checked."""

    def __init__(self, repo_path, repo_id, key, keyed):
        self.repo_path = repo_path
        self.repo_id = repo_id
        self.key = key
        self.what = "MAC" if keyed else "checksum"

    def _mac(self, *parts):
        return hmac.new(self.key, canonical([self.repo_id] + list(parts)),
                        hashlib.sha256).hexdigest()

    def _damaged(self, text):
        return CatalogDamaged("catalog of {} damaged or tampered with: {}".format(
            self.repo_path, text))

    def _snapshot_damaged(self, seq, name, text):
        problem = "snapshot {}: {}".format(name, text)
        return SnapshotDamaged("catalog of {} damaged or tampered with: {}".format(
            self.repo_path, problem), seq, name, text)

    # -- writing ---------------------------------------------------------------------------
    def seal_snapshot(self, db, seq, message_rows, file_rows, rows_digest=None):
        """Record the authentication of snapshot `seq` (its row inserted already) and the new
        manifest, in the caller's transaction; return its messages digest. `rows_digest`: the
        messages digest as the caller computed it from the rows (then `message_rows` is not
        used; a run hashes them from its index cache while SQLite fills the catalog)."""
        mdig = messages_digest(message_rows) if rows_digest is None else rows_digest
        fdig = files_digest(file_rows)
        mac = self._mac("snapshot", _snapshot_row(db, seq), mdig, fdig)
        db.execute("INSERT OR REPLACE INTO snapshot_auth VALUES (?, ?, ?, ?)",
                   (seq, mdig, fdig, mac))
        self.seal_manifest(db)
        return mdig

    def seal_manifest(self, db):
        db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                   (MANIFEST_KEY, self._mac("manifest", _manifest_entries(db))))

    # -- checking --------------------------------------------------------------------------
    def check_manifest(self, db):
        """The list of snapshots is what the last run or prune recorded."""
        row = db.execute("SELECT value FROM meta WHERE key = ?", (MANIFEST_KEY,)).fetchone()
        if row is None:
            raise self._damaged("the manifest (the list of snapshots) is missing")
        entries = _manifest_entries(db)
        for seq, sid, mac in entries:
            if mac is None:
                raise self._damaged("snapshot {} has no authentication (a snapshot added "
                                    "or its record removed)".format(sid))
        if self.key is not None and not hmac.compare_digest(
                row[0], self._mac("manifest", entries)):
            raise self._damaged("the list of snapshots does not match its {} (a snapshot "
                                "removed, added or reordered)".format(self.what))

    def check_snapshot(self, db, seq, rows=None, rows_digest=None, count=None):
        """Snapshot `seq`'s row, message rows and file rows match their authentication.
        `rows`: its message rows as the caller already has them (else read here);
        `rows_digest`: their messages digest, when something keyed vouches for it already
        (the index cache's digest, index_cache.py) or the caller hashed them (then `count`:
        how many it hashed, and no `rows`), else they are hashed here."""
        snap = _snapshot_row(db, seq)
        auth = db.execute("SELECT messages_digest, files_digest, mac FROM snapshot_auth"
                          " WHERE seq = ?", (seq,)).fetchone()
        name = snap[1] if snap else seq
        if snap is None or auth is None:
            raise self._snapshot_damaged(seq, name, "it has no authentication record")
        mdig, fdig, mac = auth
        if self.key is not None and not hmac.compare_digest(
                mac, self._mac("snapshot", snap, mdig, fdig)):
            raise self._snapshot_damaged(seq, name, "its record (id, order, times or counts) "
                                         "does not match its {}".format(self.what))
        if rows is None and (rows_digest is None or count is None):
            rows = message_rows(db, seq)
        if (rows_digest if rows_digest is not None else messages_digest(rows)) != mdig:
            raise self._snapshot_damaged(
                seq, name, "its message rows (user, folder, name, object, size, mtime, "
                "owner or mode; {} rows now, {} recorded) were changed, added or removed"
                .format(len(rows) if rows is not None else count, snap[6]))
        if files_digest(file_rows(db, seq)) != fdig:
            raise self._snapshot_damaged(seq, name, "its file rows (directories, control "
                                         "files, included paths, dumps) were changed, "
                                         "added or removed")


def message_rows(db, seq):
    """Snapshot `seq`'s message rows (MESSAGE_COLUMNS) as the catalog holds them."""
    return db.execute("SELECT {} FROM snapshot_messages s JOIN messages m ON m.id = s.message"
                      " WHERE s.snapshot = ?".format(", ".join("m." + c for c in
                                                               MESSAGE_COLUMNS)),
                      (seq,)).fetchall()


def file_rows(db, seq):
    """Snapshot `seq`'s file rows (FILE_COLUMNS) as the catalog holds them."""
    return db.execute("SELECT {} FROM files WHERE snapshot = ?".format(
        ", ".join(FILE_COLUMNS)), (seq,)).fetchall()


def _snapshot_row(db, seq):
    row = db.execute("SELECT {} FROM snapshots WHERE seq = ?".format(
        ", ".join(SNAPSHOT_COLUMNS)), (seq,)).fetchone()
    return list(row) if row is not None else None


def _manifest_entries(db):
    return [list(r) for r in db.execute(
        "SELECT s.seq, s.id, a.mac FROM snapshots s LEFT JOIN snapshot_auth a ON a.seq = s.seq"
        " ORDER BY s.seq")]
