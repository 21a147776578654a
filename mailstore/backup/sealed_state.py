"""What the catalog keeps for its next seal, so that a seal re-encodes only what changed.

The big tables are sealed in groups of rows with stable keys (TRACKED): `messages` by id
range, `snapshot_runs` by snapshot and id range, `files` by snapshot, `objects`
by pack (one group per pack: a night's new objects land in its new packs; a prune that
rewrites packs moves objects, an UPDATE of their pack and offset). Every other table is
small and sealed whole every time (sealed.py).

Changes are tracked exactly, by triggers: every INSERT, UPDATE and DELETE of a tracked row
records its group (before and after an UPDATE) in `seal_dirty`. No fingerprint of a group
(a count, a sum) would do: an id used again after a prune, or an UPDATE that keeps every
length, would go unseen and the off-host copy would hold a stale catalog without a sign.
`INSERT OR REPLACE INTO objects` deletes the row it replaces without firing DELETE triggers
(recursive_triggers is off), so a BEFORE INSERT trigger records the group of the row an
insert may replace.

`seal_state` holds, per group, the chunk it was sealed as (name, length, SHA-256, rows,
plain bytes), and per tracked table a marker row (table '', group: the table's name) holding a keyed
fingerprint of the repository and key the state belongs to: a table without a fitting
marker is sealed whole (a repository sealed before this existed, a catalog rebuilt by
`unseal`, another key). The seal clears `seal_dirty` in the transaction that records the
new state; a seal cut short before it leaves both as they were, and the next one does the
work again. Neither table's rows are part of the sealed catalog (sealed_rows.py).
"""
from mailstore.backup import catalog

STATE = "seal_state"
DIRTY = "seal_dirty"
LOCAL = (STATE, DIRTY)

# rows per group: a group is a chunk of about 100-200 KiB of rows before deflating
_MESSAGES = 1024
_RUNS = 65536           # of message ids (a snapshot's runs of them: far fewer rows)
_SPLIT = 4294967296     # snapshot_runs' group: snapshot * _SPLIT + first // _RUNS

# table -> (its group as an SQL expression of a row, "{0}" the row's NEW. or OLD.; the
# query reading a group's rows in stream order, ?1 the group)
TRACKED = {
    "messages": (
        "{{0}}id / {}".format(_MESSAGES),
        "SELECT * FROM messages WHERE id >= ?1 * {0} AND id < (?1 + 1) * {0} "
        "ORDER BY id".format(_MESSAGES)),
    "snapshot_runs": (
        "{{0}}snapshot * {} + {{0}}first / {}".format(_SPLIT, _RUNS),
        "SELECT * FROM snapshot_runs WHERE snapshot = ?1 / {0} AND "
        "first >= (?1 % {0}) * {1} AND first < (?1 % {0} + 1) * {1} "
        "ORDER BY first".format(_SPLIT, _RUNS)),
    "files": ("{0}snapshot", "SELECT * FROM files WHERE snapshot = ?1 ORDER BY rowid"),
    "objects": ("{0}pack", "SELECT * FROM objects WHERE pack = ?1 ORDER BY offset, id"),
}

_TABLES = (
    "CREATE TABLE IF NOT EXISTS seal_state (tbl TEXT NOT NULL, grp NOT NULL, "
    "name TEXT NOT NULL, bytes INTEGER NOT NULL, sha256 TEXT NOT NULL, rows INTEGER NOT NULL, "
    "plain INTEGER NOT NULL, PRIMARY KEY (tbl, grp)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS seal_dirty (tbl TEXT NOT NULL, grp NOT NULL, "
    "PRIMARY KEY (tbl, grp)) WITHOUT ROWID",
)


def _triggers():
    """{name: CREATE TRIGGER statement} of every trigger that tracks changes."""
    out = {}
    for table, (group, _query) in TRACKED.items():
        mark = "INSERT OR IGNORE INTO seal_dirty VALUES ('{}', {});".format(table, "{}")
        bodies = {
            "insert": ("AFTER INSERT", mark.format(group.format("NEW."))),
            "delete": ("AFTER DELETE", mark.format(group.format("OLD."))),
            "update": ("AFTER UPDATE", mark.format(group.format("OLD.")) + " " +
                       mark.format(group.format("NEW."))),
        }
        if table == "objects":
            # the row an INSERT OR REPLACE replaces (its DELETE fires no trigger)
            bodies["replace"] = (
                "BEFORE INSERT", "INSERT OR IGNORE INTO seal_dirty SELECT 'objects', pack "
                "FROM objects WHERE id = NEW.id;")
        for op, (when, body) in bodies.items():
            name = "seal_dirty_{}_{}".format(table, op)
            out[name] = "CREATE TRIGGER IF NOT EXISTS {} {} ON {} BEGIN {} END".format(
                name, when, table, body)
    return out


def ensure(db):
    """Create the state and trigger tables and the triggers where missing (nothing
    uncommitted in `db`, the exclusive lock held). A catalog that lacked any trigger may
    have changed unseen: its state is dropped, so the next seal seals every group."""
    triggers = _triggers()
    have = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    if set(triggers) <= have:
        return
    with catalog.transaction(db):
        for sql in _TABLES:
            db.execute(sql)
        for name, sql in triggers.items():
            if name not in have:
                db.execute(sql)
        db.execute("DELETE FROM seal_state")


def load(db, fingerprint):
    """(state, dirty) in the open read transaction: state {table: {group: [name, bytes,
    sha256, rows, plain bytes]}} of the tables whose marker fits `fingerprint` (the others
    are missing: seal them whole), dirty {table: set of groups}."""
    marked = {row[0] for row in db.execute(
        "SELECT grp FROM seal_state WHERE tbl = '' AND name = ?", (fingerprint,))}
    state = {table: {} for table in TRACKED if table in marked}
    for row in db.execute("SELECT tbl, grp, name, bytes, sha256, rows, plain FROM seal_state "
                          "WHERE tbl != ''"):
        if row[0] in state:
            state[row[0]][row[1]] = list(row[2:])
    dirty = {table: set() for table in TRACKED}
    for table, group in db.execute("SELECT tbl, grp FROM seal_dirty"):
        dirty.setdefault(table, set()).add(group)
    return state, dirty


def all_groups(db, table):
    """Every group `table` has rows in (a table sealed whole)."""
    return {row[0] for row in db.execute("SELECT DISTINCT {} FROM {}".format(
        TRACKED[table][0].format(""), table))}


def record(db, fingerprint, state):
    """After the manifest is in place: the new state, and nothing dirty, in one
    transaction."""
    with catalog.transaction(db):
        db.execute("DELETE FROM seal_dirty")
        db.execute("DELETE FROM seal_state")
        db.executemany("INSERT INTO seal_state VALUES ('', ?, ?, 0, '', 0, 0)",
                       [(table, fingerprint) for table in state])
        db.executemany("INSERT INTO seal_state VALUES (?, ?, ?, ?, ?, ?, ?)",
                       [(table, group) + tuple(entry) for table, groups in state.items()
                        for group, entry in groups.items()])
