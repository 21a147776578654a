"""Objects the repository has lost, and how the next run heals them.

A pack can go missing (a deleted file, a bad restore of the backup disk) or an object in it
can be damaged (a flipped bit that only `verify --read-data` sees). The catalog still names
such an object, so without more a run would go on reusing it: every new snapshot would point
at the dead object, however often the source is read again.

Hence the catalog table `damaged_objects`: `verify` records every damaged object it finds,
and every run adds the objects of packs that are missing or shorter than their records (a
stat per pack, cheap). A run does not reuse such an object: the messages and files that used
it are read again from the source, and content with the same id is stored anew (the catalog's
row then points at the new copy, so the OLD snapshots holding that content are restorable
again too; the id is the content's hash, so it is the same content). An object whose content
the run did not find in the source any more is marked lost for good (`lost_at`: that run's
snapshot) and `verify` keeps reporting it, with the snapshots that hold it, until `prune`
forgets them.
"""
import os

from mailstore.backup.objects import pack_path

# one statement: run with execute(), never executescript(), which would COMMIT the
# caller's transaction first
SCHEMA = """
CREATE TABLE IF NOT EXISTS damaged_objects (
    id TEXT PRIMARY KEY,
    problem TEXT NOT NULL,
    found REAL NOT NULL,
    lost_at TEXT
) WITHOUT ROWID
"""


def create(db):
    db.execute(SCHEMA)


def record_damaged(db, damaged, now):
    """Record `damaged` ({object id: problem}, found by verify) in a transaction of the
    caller; an object recorded before keeps its `lost_at`."""
    create(db)
    db.executemany(
        "INSERT INTO damaged_objects (id, problem, found) VALUES (?, ?, ?)"
        " ON CONFLICT (id) DO UPDATE SET problem = excluded.problem, found = excluded.found",
        ((oid, problem, now) for oid, problem in damaged.items()))


def lost_at(db, ids):
    """{object id: snapshot id} for those of `ids` a run did not find in its source."""
    if not _has_table(db):
        return {}
    found = {}
    ids = sorted(ids)
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        found.update(db.execute(
            "SELECT id, lost_at FROM damaged_objects WHERE lost_at IS NOT NULL AND id IN ({})"
            .format(",".join("?" * len(chunk))), chunk))
    return found


def find_lost(db, packs_dir):
    """(ids of the objects a run must not reuse, names of the packs missing on disk).

    Recorded damaged objects, plus the objects of packs missing on disk and those lying
    beyond the end of a pack that is shorter than recorded."""
    lost = {row[0] for row in db.execute("SELECT id FROM damaged_objects")}
    missing = []
    for name, size in db.execute("SELECT name, size FROM packs").fetchall():
        try:
            disk_size = os.stat(pack_path(packs_dir, name)).st_size
        except FileNotFoundError:
            missing.append(name)
            lost.update(r[0] for r in db.execute("SELECT id FROM objects WHERE pack = ?",
                                                  (name,)))
            continue
        if disk_size < size:
            lost.update(r[0] for r in db.execute(
                "SELECT id FROM objects WHERE pack = ? AND offset + length > ?",
                (name, disk_size)))
    return lost, missing


def record_run(db, lost, restored, missing_packs, snapshot_id, now):
    """In the run's commit: forget the lost objects it stored again, mark the rest lost for
    good (their content was not in the source), drop the missing packs nothing points at."""
    db.executemany("DELETE FROM damaged_objects WHERE id = ?", ((oid,) for oid in restored))
    db.executemany(
        "INSERT INTO damaged_objects (id, problem, found, lost_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (id) DO UPDATE SET lost_at = excluded.lost_at",
        ((oid, "its pack is missing or truncated", now, snapshot_id)
         for oid in sorted(lost - restored)))
    db.executemany("DELETE FROM packs WHERE name = ? AND NOT EXISTS"
                   " (SELECT 1 FROM objects WHERE pack = ?)",
                   ((name, name) for name in missing_packs))


def _has_table(db):
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND"
                      " name = 'damaged_objects'").fetchone() is not None
