"""The plaintext of a sealed catalog of format 2: the catalog as a stream of rows, in
chunks (sealed.py encrypts and names them, and reuses the ones whose rows did not change).

Why rows and not the SQLite file: a night's run changes pages all over the file (B-trees
move rows between pages), so chunks of the file nearly all change; a stream of the rows,
cut into groups of rows with stable keys (sealed_state.py), changes only in the groups
whose rows were added, changed or removed; the other chunks come out byte for byte the same
(and keep their names), and a seal need not even read them again.

The stream is lines of ASCII JSON, one per line (no pickle or marshal: the reader rebuilds
a database from it and must not run anything else):
    {"schema": [[type, name, table, sql], ...]}   sqlite_master's entries with sql, in order
    {"user_version": N}
    {"table": name, "columns": [column, ...]}   then its rows: [value, ...] each
    ...
    {"end": rows}            the number of rows before it: a stream cut short fails
A row is a JSON array, every other line an object; values are JSON numbers, strings and
null, a BLOB is {"b": base64}.

Chunks, in stream order: the schema and user_version; for each tracked table
(sealed_state.TRACKED) its table line alone, then one chunk per group in the order of the
groups' keys; last every row of the other tables (small: snapshots, packs, meta, scan_dirs,
...) and the end line, which change with every seal. The seal state's own tables are in the
schema but their rows are not in the stream.
"""
import base64
import json
import sqlite3

from mailstore.backup import sealed_state

_BATCH = 5000


class StreamError(ValueError):
    """The decrypted stream is not what sealed_rows writes (one line saying what)."""


def _blob(value):
    if isinstance(value, bytes):
        return {"b": base64.b64encode(value).decode("ascii")}
    raise TypeError("cannot encode {!r}".format(type(value)))


# (check_circular off: rows hold no containers; one encoder call per row is most of a seal)
_ENCODE = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), check_circular=False,
                           default=_blob).encode


def _line(item):
    return (_ENCODE(item) + "\n").encode("ascii")


def _blob_value(obj):
    """json.loads' object_hook: {"b": base64} is a BLOB; other objects stay dicts."""
    if len(obj) == 1 and "b" in obj:
        if not isinstance(obj["b"], str):
            raise ValueError("a damaged value")
        return base64.b64decode(obj["b"].encode("ascii"), validate=True)
    return obj


def head(db):
    """The stream's first chunk: the schema (sqlite_master's entries with sql, the seal
    state's tables and triggers too) and user_version."""
    schema = db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT"
                        " NULL AND name NOT LIKE 'sqlite_stat%' ORDER BY rowid").fetchall()
    return _line({"schema": [list(row) for row in schema]}) + _line(
        {"user_version": db.execute("PRAGMA user_version").fetchone()[0]})


def tables(db):
    """(tracked, whole): the tables sealed in groups (sealed_state.TRACKED) and those sealed
    whole every time, each in the schema's order; the seal state's own are neither."""
    names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                      "AND sql IS NOT NULL AND name NOT LIKE 'sqlite_stat%' "
                                      "ORDER BY rowid")]
    return ([n for n in names if n in sealed_state.TRACKED],
            [n for n in names if n not in sealed_state.TRACKED and
             n not in sealed_state.LOCAL])


def table_line(db, table):
    """The line that starts the rows of `table` (a chunk of its own: it never changes)."""
    cur = db.execute('SELECT * FROM "{}" LIMIT 0'.format(table))
    return _line({"table": table, "columns": [d[0] for d in cur.description]})


def _rows(cur):
    out, count = [], 0
    triples = len(cur.description) == 3
    while True:
        rows = cur.fetchmany(_BATCH)
        if not rows:
            return b"".join(out), count
        if triples and all(type(a) is int and type(b) is int and type(c) is int
                           for a, b, c in rows):
            # snapshot_runs, a new snapshot's runs: the very bytes the encoder writes for
            # three integers, at a fraction of its cost
            out.append(b"".join([b"[%d,%d,%d]\n" % row for row in rows]))
        else:
            out.extend(map(_line, rows))
        count += len(rows)


def group(db, table, key):
    """(bytes, rows) of the rows of one group of a tracked table, in order."""
    return _rows(db.execute(sealed_state.TRACKED[table][1], (key,)))


def tail(db, whole, count):
    """The stream's last chunk: every row of the tables in `whole`, and the end line (after
    `count` rows before it)."""
    out = []
    for table in whole:
        out.append(table_line(db, table))
        raw, rows = _rows(db.execute('SELECT * FROM "{}" ORDER BY rowid'.format(table)
                                     if _has_rowid(db, table) else
                                     'SELECT * FROM "{}"'.format(table)))
        out.append(raw)
        count += rows
    out.append(_line({"end": count}))
    return b"".join(out)


def _has_rowid(db, table):
    sql = db.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    return "WITHOUT ROWID" not in sql.upper()


def chunks(db):
    """The whole stream of the open catalog `db`, chunk by chunk, every group encoded (what
    sealed.write makes of a catalog without seal state); the caller keeps writers out."""
    tracked, whole = tables(db)
    yield head(db)
    count = 0
    for table in tracked:
        yield table_line(db, table)
        for key in sorted(sealed_state.all_groups(db, table)):
            raw, rows = group(db, table, key)
            count += rows
            yield raw
    yield tail(db, whole, count)


class Loader:
    """Rebuilds a catalog database at `path` (a new file) from the stream's chunks, fed in
    order (`feed`), then `finish()`: tables first, their rows, the indexes last."""

    def __init__(self, path):
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("BEGIN")
        self.later = []
        self.tables = {}
        self.table = None
        self.insert = None
        self.rows = []
        self.count = 0
        self.state = "schema"

    def feed(self, data):
        if not data.endswith(b"\n"):
            raise StreamError("a chunk does not end at a row")
        # its lines as one JSON array: a line holds no raw newline (JSON escapes it)
        try:
            items = json.loads(b"[" + data[:-1].replace(b"\n", b",") + b"]",
                               object_hook=_blob_value)
        except ValueError:
            raise StreamError("a row is not readable") from None
        for item in items:
            if isinstance(item, list) and self.state == "rows" and self.insert is not None:
                self.rows.append(item)
                if len(self.rows) >= _BATCH:
                    self._flush()
            else:
                self._item(item)

    def _item(self, item):
        """A line that is not a row of the current table (rows go straight to `rows`)."""
        if self.state == "done":
            raise StreamError("rows follow its end")
        if self.state == "schema":
            self._schema(item)
        elif self.state == "pragma":
            version = item.get("user_version") if isinstance(item, dict) else None
            if not isinstance(version, int) or isinstance(version, bool) or len(item) != 1:
                raise StreamError("no user_version line after the schema")
            self.db.execute("PRAGMA user_version = {:d}".format(version))
            self.state = "rows"
        elif isinstance(item, dict):
            self._flush()
            if set(item) == {"table", "columns"}:
                self._start_table(item["table"], item["columns"])
            elif set(item) == {"end"}:
                if item["end"] != self.count:
                    raise StreamError("it ends after {} rows, its end says {}".format(
                        self.count, item["end"]))
                self.state = "done"
            else:
                raise StreamError("an unknown line")
        else:
            raise StreamError("a row outside a table")

    def _schema(self, item):
        if not (isinstance(item, dict) and set(item) == {"schema"} and
                isinstance(item["schema"], list)):
            raise StreamError("it does not start with the schema")
        try:
            for kind, name, _table, sql in item["schema"]:
                if not all(isinstance(v, str) for v in (kind, name, sql)):
                    raise StreamError("a damaged schema entry")
                if kind == "table":
                    if not name.startswith("sqlite_"):
                        self.db.execute(sql)
                    self.tables[name] = None
                else:
                    self.later.append(sql)
        except (TypeError, ValueError):
            raise StreamError("a damaged schema entry") from None
        except sqlite3.Error as e:
            raise StreamError("its schema fails: {}".format(e)) from None
        self.state = "pragma"

    def _start_table(self, name, columns):
        if name not in self.tables or self.tables[name] is not None:
            raise StreamError("rows of table {!r}, which its schema lacks or which came "
                              "before".format(name)[:120])
        known = [c[1] for c in self.db.execute('PRAGMA table_info("{}")'.format(name))]
        if not isinstance(columns, list) or columns != known:
            raise StreamError("the columns of table {} are not its schema's".format(name))
        self.tables[name] = True
        if name == "sqlite_sequence":   # filled by the rows of AUTOINCREMENT tables already
            self.db.execute("DELETE FROM sqlite_sequence")
        self.table = name
        self.insert = 'INSERT INTO "{}" ({}) VALUES ({})'.format(
            name, ", ".join('"{}"'.format(c) for c in columns), ", ".join("?" * len(columns)))

    def _flush(self):
        # (executemany checks each row: its number of values, and that each is a number,
        # text, null or a BLOB)
        if self.rows:
            try:
                self.db.executemany(self.insert, self.rows)
            except (sqlite3.Error, ValueError, TypeError) as e:
                raise StreamError("rows of {} do not fit it: {}".format(self.table, e)) \
                    from None
            self.count += len(self.rows)
            self.rows = []

    def finish(self):
        """Create the indexes and commit; StreamError if the stream did not reach its end."""
        if self.state != "done":
            raise StreamError("it ends early")
        try:
            for sql in self.later:
                self.db.execute(sql)
            self.db.execute("COMMIT")
        except sqlite3.Error as e:
            raise StreamError("its schema fails: {}".format(e)) from None

    def close(self):
        self.db.close()

