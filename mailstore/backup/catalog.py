"""The catalog: one SQLite file that says what every snapshot holds and where each object lies.

Tables (the catalog is the source of truth; a pack or object it does not name is garbage):
- `snapshots`: one row per COMPLETE snapshot. A run inserts its row in the same transaction as
  the snapshot's contents, as its very last step, so an interrupted run never shows up here.
- `packs`: pack files (objects/xx/<name>.pack) and their sizes.
- `objects`: content-addressed objects: id (hash of the plaintext), pack, offset and length of
  its record, plaintext size, and for messages the decoded From/Subject/Date used by `find`
  (From and Subject encrypted when the repository is).
- `messages`: a message as seen at backup time: user, folder, subdir (cur/new), file name
  (unique part + flags), size, mtime (ns), owner, mode, inode, object. Rows are shared by all
  snapshots in which the message did not change at all.
- `snapshot_runs`: which message rows each snapshot holds, as runs of consecutive row ids
  (first, last): a night's snapshot keeps nearly every row of the one before, whose ids were
  given out in order, so it is some ten thousand runs where it was a hundred thousand rows.
  The view `snapshot_messages` (snapshot, message) lists them row by row for the readers.
  Every id in a run is a row of the snapshot: ids are given out above the highest ever
  (feed.py), so a later row never lands inside an older run. (Catalogs made before
  2026-12-06 held a table snapshot_messages; the first command that takes the exclusive
  lock turns it into runs, `migrate`; readers work on either.)
- `files`: per snapshot, everything that is not a message: Maildir directories (kind `dir`),
  Dovecot control files (kind `control`), included config paths (`include`) and database dumps
  (`dbdump`), with their metadata and object.
- `scan_dirs` (+ meta `scan_state`): what the next run's incremental scan needs from the newest
  snapshot (scan.py); not part of any snapshot.
- `verifications`: the result of each `verify`, for `status()` and the monitoring check.
- `damaged_objects` (made by lost.py): objects verify found damaged or a run found in a
  missing pack, which the next run stores anew from the source instead of reusing.
- `damaged_snapshots` (made by snapshot_damage.py): snapshots verify or a run found failing
  their check, which no run builds on; for `status()` until they are forgotten.
"""
import itertools
import os
import sqlite3

SCHEMA_VERSION = 2     # 2: snapshot_runs (2026-12-06)

_RUNS = """CREATE TABLE IF NOT EXISTS snapshot_runs (
    snapshot INTEGER NOT NULL,
    first INTEGER NOT NULL,
    last INTEGER NOT NULL,
    PRIMARY KEY (snapshot, first)
) WITHOUT ROWID"""
_VIEW = """CREATE VIEW IF NOT EXISTS snapshot_messages AS
    SELECT r.snapshot AS snapshot, m.id AS message
    FROM snapshot_runs r JOIN messages m ON m.id BETWEEN r.first AND r.last"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS snapshots (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    started REAL NOT NULL,
    finished REAL NOT NULL,
    source TEXT NOT NULL,
    host TEXT NOT NULL,
    messages INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    new_objects INTEGER NOT NULL,
    new_bytes INTEGER NOT NULL,
    read_files INTEGER NOT NULL,
    read_bytes INTEGER NOT NULL,
    warnings INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS packs (
    name TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS objects (
    id TEXT PRIMARY KEY,
    pack TEXT NOT NULL,
    offset INTEGER NOT NULL,
    length INTEGER NOT NULL,
    size INTEGER NOT NULL,
    hdr_from BLOB,
    hdr_subject BLOB,
    hdr_date INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS objects_pack ON objects (pack);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    user TEXT NOT NULL,
    folder TEXT NOT NULL,
    subdir TEXT NOT NULL,
    name TEXT NOT NULL,
    uniq TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    gid INTEGER NOT NULL,
    mode INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    object TEXT NOT NULL
);
-- No index on messages.uniq/object: only a restore of one message and a damage report look
-- rows up that way (a scan, rare), while every run would pay for keeping them up to date.
-- No index by message id on snapshot_runs: `find` and damage reports scan instead.
{runs};
{view};
CREATE TABLE IF NOT EXISTS files (
    snapshot INTEGER NOT NULL,
    kind TEXT NOT NULL,
    user TEXT,
    folder TEXT,
    path TEXT NOT NULL,
    mode INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    gid INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    size INTEGER NOT NULL,
    object TEXT,
    link_target TEXT
);
CREATE INDEX IF NOT EXISTS files_snapshot ON files (snapshot);
CREATE INDEX IF NOT EXISTS files_object ON files (object);
-- Scan state of the newest snapshot only (replaced by every run; meta 'scan_state' names the
-- snapshot): inode and ctime of each new/ and cur/ directory, taken before it was listed, so
-- that the next run can skip listing a directory nothing has touched (see scan.py).
CREATE TABLE IF NOT EXISTS scan_dirs (
    user TEXT NOT NULL,
    path TEXT NOT NULL,
    ino INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS verifications (
    time REAL NOT NULL,
    snapshot TEXT,
    read_data INTEGER NOT NULL,
    ok INTEGER NOT NULL,
    damaged INTEGER NOT NULL,
    checked INTEGER NOT NULL
);
""".format(runs=_RUNS, view=_VIEW)


def to_db(name):
    """A file name as the catalog stores it: text, or (for a name that is not valid UTF-8,
    which os.listdir hands over with surrogate escapes) its raw bytes as a BLOB."""
    if name is None or name.isascii():
        return name
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return os.fsencode(name)


def from_db(value):
    """Inverse of to_db: the name as os functions take it."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


def connect(path, readonly=False, any_thread=False):
    """Open the catalog; `readonly` connections refuse writes (PRAGMA query_only).

    `any_thread`: the connection may be closed by another thread than the one using it.
    Readers still open the file read-write: after a run was killed mid-transaction, SQLite
    must roll the hot journal back on the next open, which a read-only open cannot do.
    """
    if not os.path.exists(path):
        raise sqlite3.OperationalError("catalog {} is missing".format(path))
    conn = sqlite3.connect(str(path), timeout=60, isolation_level=None,
                           check_same_thread=not any_thread)
    # A rollback journal rather than WAL: the repository stays a plain set of files that
    # can be copied off-site with rsync while no run is writing.
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("PRAGMA synchronous=FULL")
    if readonly:
        conn.execute("PRAGMA query_only=1")
    return conn


def create(conn):
    """Create what the catalog lacks (an older one's tables were migrated when the exclusive
    lock was taken: Repository.lock)."""
    conn.executescript(SCHEMA)
    conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))


class transaction:
    """`with transaction(conn):` BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception."""

    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        return False


SNAPSHOT_COLUMNS = ("seq", "id", "started", "finished", "source", "host", "messages", "bytes",
                    "new_objects", "new_bytes", "read_files", "read_bytes", "warnings")


def snapshots(conn):
    """All complete snapshots, oldest first, as dicts."""
    rows = conn.execute("SELECT {} FROM snapshots ORDER BY seq".format(
        ", ".join(SNAPSHOT_COLUMNS))).fetchall()
    return [dict(zip(SNAPSHOT_COLUMNS, row)) for row in rows]


def last_verification(conn):
    row = conn.execute("SELECT time, snapshot, read_data, ok, damaged, checked FROM verifications"
                       " ORDER BY time DESC LIMIT 1").fetchone()
    if row is None:
        return None
    return {"time": row[0], "snapshot": row[1], "read_data": bool(row[2]), "ok": bool(row[3]),
            "damaged": row[4], "checked": row[5]}


# The values one statement may bind: 32 766 from SQLite 3.32 on (Debian 11 has 3.34), 999
# before; Python 3.11 and later can ask the connection.
_MAX_VARIABLES = 32766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999
_statements = {}        # (head, width, rows) -> a full statement's SQL text, built once


def rows_per_statement(db, width):
    """How many rows of `width` values insert_many() puts in one statement on `db`."""
    limit = db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) \
        if hasattr(db, "getlimit") else _MAX_VARIABLES
    # more rows to a statement gain nothing measurable (400 000 runs of ids: 0.19 s in
    # statements of 500 rows, 0.23 s of 4 096) and make its program, kept in the
    # connection's statement cache for the run, bigger
    return max(1, min(500, limit // width))


def _values_sql(head, width, rows):
    """`head` VALUES with `rows` groups of `width` parameters."""
    one = "(" + ",".join("?" * width) + ")"
    return head + " VALUES " + ",".join([one] * rows)


def insert_many(db, head, width, rows):
    """`head` ("INSERT INTO t", "INSERT OR REPLACE INTO t") with each of `rows` (tuples of
    `width` values, any iterable), many rows to a statement.

    Why not executemany(): it steps once per row, and hands the interpreter lock back around
    every step. Beside the scan's threads each row then waits to get the lock back: on
    2026-12-07, 110 000 message rows into a temporary table took 2.0 s that way beside four
    threads busy with lstat(2), and 0.24 s as statements of 500 rows (0.17 s and 0.13 s with
    no thread beside); 400 000 runs of ids 0.60 s and 0.19 s. A statement is one step: it
    fails or inserts as a whole, as executemany() does inside the caller's transaction."""
    per = rows_per_statement(db, width)
    rows = iter(rows)
    while True:
        chunk = list(itertools.islice(rows, per))
        if len(chunk) < 16:
            if chunk:
                db.executemany(_values_sql(head, width, 1), chunk)
            return
        if len(chunk) == per:
            sql = _statements.get((head, width, per))
            if sql is None:
                sql = _statements[(head, width, per)] = _values_sql(head, width, per)
        else:
            # the last, shorter chunk: a statement of its own size, not kept
            sql = _values_sql(head, width, len(chunk))
        db.execute(sql, list(itertools.chain.from_iterable(chunk)))
        if len(chunk) < per:
            return


def id_runs(ids):
    """[(first, last), ...]: the runs of consecutive integers of `ids` (any order, repeats
    allowed), ascending; every integer of a run is in `ids`."""
    out = []
    it = iter(sorted(ids))
    for first in it:
        last = first
        for i in it:
            if i > last + 1:
                out.append((first, last))
                first = i
            last = i
        out.append((first, last))
    return out


def insert_runs(db, seq, ids):
    """In a transaction of the caller: snapshot `seq` holds the message rows `ids`."""
    insert_many(db, "INSERT INTO snapshot_runs", 3,
                ((seq, first, last) for first, last in id_runs(ids)))


def drop_unreferenced_messages(db):
    """In a transaction of the caller: delete the message rows no snapshot holds any more
    (after snapshots were removed). The union of all runs, ascending, leaves gaps; the rows
    in the gaps go, each gap one range delete on the primary key."""
    covered = 0           # every id up to here is in some run or already handled
    for first, last in db.execute("SELECT first, last FROM snapshot_runs ORDER BY first"
                                  ).fetchall():
        if first > covered + 1:
            db.execute("DELETE FROM messages WHERE id > ? AND id < ?", (covered, first))
        covered = max(covered, last)
    db.execute("DELETE FROM messages WHERE id > ?", (covered,))


def migrate(conn):
    """Turn a catalog's table snapshot_messages (catalogs made before 2026-12-06) into
    snapshot_runs and the view, in one transaction; nothing to do on a newer one. The
    seal state of the old table goes with it (the next seal seals the runs whole)."""
    row = conn.execute("SELECT type FROM sqlite_master WHERE name = 'snapshot_messages'"
                       ).fetchone()
    if row is None or row[0] != "table":
        return
    with transaction(conn):
        conn.execute(_RUNS)
        seqs = [r[0] for r in conn.execute(
            "SELECT DISTINCT snapshot FROM snapshot_messages ORDER BY snapshot")]
        for seq in seqs:
            insert_runs(conn, seq, [r[0] for r in conn.execute(
                "SELECT message FROM snapshot_messages WHERE snapshot = ?", (seq,))])
        conn.execute("DROP TABLE snapshot_messages")
        conn.execute(_VIEW)
        for table in ("seal_state", "seal_dirty"):
            if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                            (table,)).fetchone():
                conn.execute("DELETE FROM {} WHERE tbl = 'snapshot_messages'".format(table))
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)",
                     (str(SCHEMA_VERSION),))
