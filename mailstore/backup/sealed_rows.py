"""The plaintext of a sealed catalog of format 2: the catalog as a stream of rows, cut into
chunks at rows chosen by their content (sealed.py encrypts and names the chunks).

Why rows and not the SQLite file: a night's run changes pages all over the file (B-trees
move rows between pages), so chunks of the file nearly all change; a stream of the rows in a
fixed order changes only where rows were added, changed or removed, and a cut made at a row
picked by its own bytes lands at the same row again in the next night's stream, so the
chunks around an unchanged stretch come out byte for byte the same (and keep their names).

The stream is lines of ASCII JSON, one per line (no pickle or marshal: the reader rebuilds
a database from it and must not run anything else):
    {"schema": [[type, name, table, sql], ...]}   sqlite_master's entries with sql, in order
    {"user_version": N}
    {"table": name, "columns": [column, ...]}   then its rows: [value, ...] each, in ORDER
    ...
    {"end": rows}            the number of rows before it: a stream cut short fails
A row is a JSON array, every other line an object; values are JSON numbers, strings and
null, a BLOB is {"b": base64}.

Rows come in an order that keeps old rows together: a table with a rowid in rowid order
(new rows at its end), one without in its primary key's order, but `objects` by pack and
offset: its key is a keyed hash, so new objects would land everywhere; by pack they land in
the few places of the night's new packs.

A chunk ends after a row whose CRC-32 falls below a threshold proportional to the row's
length (a cut every TARGET bytes on average, whatever the rows' sizes), not before MIN
bytes, and always by MAX bytes.
"""
import base64
import json
import sqlite3
import zlib

MIN = 16 * 1024
TARGET = 48 * 1024
MAX = 4 * 1024 * 1024
ORDER = {"objects": "pack, offset, id"}
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


def _order(db, table):
    if table in ORDER:
        return ORDER[table]
    columns = db.execute('PRAGMA table_info("{}")'.format(table)).fetchall()
    key = [c[1] for c in sorted(columns, key=lambda c: c[5]) if c[5]]
    without_rowid = db.execute("SELECT sql FROM sqlite_master WHERE name = ?",
                               (table,)).fetchone()[0]
    if without_rowid and "WITHOUT ROWID" in without_rowid.upper():
        return ", ".join('"{}"'.format(k) for k in key)
    return "rowid"


def _lines(db):
    """Every line of the stream of the open catalog `db`, read in one transaction."""
    schema = db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT"
                        " NULL AND name NOT LIKE 'sqlite_stat%' ORDER BY rowid").fetchall()
    yield _line({"schema": [list(row) for row in schema]})
    yield _line({"user_version": db.execute("PRAGMA user_version").fetchone()[0]})
    count = 0
    for kind, name, _table, _sql in schema:
        if kind != "table":
            continue
        cur = db.execute('SELECT * FROM "{}" ORDER BY {}'.format(name, _order(db, name)))
        yield _line({"table": name, "columns": [d[0] for d in cur.description]})
        while True:
            rows = cur.fetchmany(_BATCH)
            if not rows:
                break
            for line in map(_line, rows):
                yield line
            count += len(rows)
    yield _line({"end": count})


def chunks(db):
    """Yield the stream of the open catalog `db` in chunks (bytes, whole lines each); the
    caller keeps writers out (the exclusive lock) while it reads."""
    pending, size = [], 0
    for line in _lines(db):
        pending.append(line)
        size += len(line)
        if size >= MAX or (size >= MIN and zlib.crc32(line) * TARGET < len(line) << 32):
            yield b"".join(pending)
            pending, size = [], 0
    if pending:
        yield b"".join(pending)


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

