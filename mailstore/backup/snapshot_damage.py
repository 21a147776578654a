"""Snapshots that fail their check, as the catalog remembers them.

A snapshot whose record or rows no longer match their authentication (auth.py: bit rot in the
catalog, a changed row) cannot be restored, and a run must not build on it: its rows are what
the next snapshot would take over unread. `verify` and `run` record each such snapshot they
find in the catalog table `damaged_snapshots` (its id, what is wrong, when it was found), so
that `status()` (and the monitoring check) can say so without hashing any row, and the next run
reads the newest snapshot's rows from the catalog (not the index cache) when it is on the list.

A record goes away with its snapshot (`forget`, `prune`) and when a later check of that
snapshot finds it intact again. The table is not authenticated: it only ever makes mailstore
check more, never trust more.
"""

# one statement: run with execute(), never executescript(), which would COMMIT the
# caller's transaction first
SCHEMA = """
CREATE TABLE IF NOT EXISTS damaged_snapshots (
    id TEXT PRIMARY KEY,
    problem TEXT NOT NULL,
    found REAL NOT NULL
) WITHOUT ROWID
"""


def create(db):
    db.execute(SCHEMA)


def record(db, found, intact, now):
    """In a transaction of the caller: `found` ({snapshot id: problem}) are damaged, the ids
    in `intact` were checked and found intact."""
    create(db)
    db.executemany("DELETE FROM damaged_snapshots WHERE id = ?", ((i,) for i in intact))
    db.executemany("INSERT OR REPLACE INTO damaged_snapshots VALUES (?, ?, ?)",
                   ((sid, problem, now) for sid, problem in sorted(found.items())))


def forget(db, ids):
    """In a transaction of the caller: snapshots `ids` are gone."""
    if _has_table(db):
        db.executemany("DELETE FROM damaged_snapshots WHERE id = ?", ((i,) for i in ids))


def recorded(db):
    """[{"id", "problem", "found", "newest"}] of the recorded damaged snapshots that are still
    in the repository, oldest first; `newest`: it is the newest snapshot."""
    if not _has_table(db):
        return []
    newest = db.execute("SELECT max(seq) FROM snapshots").fetchone()[0]
    return [{"id": sid, "problem": problem, "found": found, "newest": seq == newest}
            for seq, sid, problem, found in db.execute(
                "SELECT s.seq, d.id, d.problem, d.found FROM damaged_snapshots d"
                " JOIN snapshots s ON s.id = d.id ORDER BY s.seq")]


def _has_table(db):
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND"
                      " name = 'damaged_snapshots'").fetchone() is not None
