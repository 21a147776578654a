"""catalog.insert_many puts many rows in one INSERT statement (executemany steps once per row
and hands the interpreter lock back each time): the rows that land are exactly those given,
whatever their number against the statement size, with every value kind a catalog row holds
(text, integers, null, BLOB names that are not UTF-8), OR REPLACE keeps its meaning, and a row
that breaks a constraint fails the insert with SQLite's own error."""
import sqlite3

import pytest
from hypothesis import given, settings, strategies as st

from mailstore.backup import catalog

WIDTH = 4


def table():
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name, size, extra)")
    return db


def rows_of(db):
    return db.execute("SELECT id, name, size, extra FROM t ORDER BY id").fetchall()


def sized(n, start=1):
    return [(i, "msg{}".format(i), i * 1000, None if i % 3 else b"\xff\xfe raw")
            for i in range(start, start + n)]


@pytest.mark.parametrize("count", [0, 1, 15, 16, 17, "per - 1", "per", "per + 1",
                                   "2 * per + 17"])
def test_every_row_lands_once_whatever_the_count(count):
    db = table()
    per = catalog.rows_per_statement(db, WIDTH)
    n = count if isinstance(count, int) else eval(count, {"per": per})
    rows = sized(n)
    # a generator, as the commit passes some of them
    catalog.insert_many(db, "INSERT INTO t", WIDTH, (r for r in rows))
    assert rows_of(db) == rows


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.text(max_size=8), st.binary(max_size=8), st.none()),
                          st.integers(min_value=-2 ** 63, max_value=2 ** 63 - 1)),
                max_size=60))
def test_values_are_stored_as_executemany_stores_them(values):
    rows = [(i + 1, name, size, None) for i, (name, size) in enumerate(values)]
    one, other = table(), table()
    catalog.insert_many(one, "INSERT INTO t", WIDTH, rows)
    other.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", rows)
    assert rows_of(one) == rows_of(other)
    assert one.execute("SELECT group_concat(typeof(name)) FROM t").fetchone() == \
        other.execute("SELECT group_concat(typeof(name)) FROM t").fetchone()


def test_or_replace_keeps_the_last_row_of_an_id():
    db = table()
    per = catalog.rows_per_statement(db, WIDTH)
    first = sized(per + 20)
    again = [(i, "again", 0, None) for i in range(10, per + 10)]
    catalog.insert_many(db, "INSERT INTO t", WIDTH, first)
    catalog.insert_many(db, "INSERT OR REPLACE INTO t", WIDTH, again)
    got = dict((r[0], r[1]) for r in rows_of(db))
    assert len(got) == per + 20
    assert all(got[i] == "again" for i in range(10, per + 10))
    assert got[9] == "msg9" and got[per + 10] == "msg{}".format(per + 10)


def test_a_duplicate_id_fails_with_sqlites_error_and_a_transaction_keeps_nothing():
    db = table()
    per = catalog.rows_per_statement(db, WIDTH)
    rows = sized(per + 30)
    rows[per + 5] = rows[3]         # in the second statement, a row the first one wrote
    db.execute("BEGIN")
    with pytest.raises(sqlite3.IntegrityError):
        catalog.insert_many(db, "INSERT INTO t", WIDTH, rows)
    db.execute("ROLLBACK")
    assert rows_of(db) == []
