#!/usr/bin/env python3
"""The catalog's bulk inserts: executemany() against catalog.insert_many, side by side.

    PYTHONPATH=$PWD python bench/catalog_inserts.py [--rows 110000] [--runs 400000]
        [--busy 4] [--repeat 3]

A nightly run at a million messages inserts about 110 000 message rows (new mail and flag
changes) into its temporary table while the scan's threads list directories and lstat(2)
files, and about 400 000 runs of ids at its commit. executemany() steps once per row and
hands the interpreter lock back around each step; insert_many puts up to 500 rows in one
statement. This times both on the catalog's own tables (catalog.create, a file in a new
temporary directory): the message rows with no other thread and beside `--busy` threads
that call os.lstat in a loop (as the scan's do), and the runs of ids. It prints seconds
(best of `--repeat`) and the ratio; nothing is kept.
"""
import argparse
import os
import sqlite3
import sys
import tempfile
import threading
import time

from mailstore.backup import catalog


def message_rows(n):
    return [(i, "user{:02d}".format(i % 50), ".Archive", "cur",
             "1700000000.M{}P1.mail,S=1234:2,S".format(i), "1700000000.M{}P1.mail,S=1234".format(i),
             1234, 1700000000123456789 + i, 5000, 5000, 0o600, 1000000 + i, "ab" * 32)
            for i in range(1, n + 1)]


class Busy:
    """`count` threads calling os.lstat in a loop until stopped."""

    def __init__(self, count, path):
        self._stop = False
        self._threads = [threading.Thread(target=self._loop, args=(path,)) for _ in range(count)]

    def _loop(self, path):
        while not self._stop:
            os.lstat(path)

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop = True
        for t in self._threads:
            t.join()


def timed(db, fill, table):
    db.execute("DELETE FROM {}".format(table))
    start = time.perf_counter()
    with catalog.transaction(db):
        fill()
    return time.perf_counter() - start


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=110000, help="message rows")
    p.add_argument("--runs", type=int, default=400000, help="runs of ids")
    p.add_argument("--busy", type=int, default=4, help="threads calling lstat beside")
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args(argv)
    if min(a.rows, a.runs, a.repeat) < 1 or a.busy < 0:
        p.error("--rows, --runs and --repeat above 0, --busy 0 or more")
    rows = message_rows(a.rows)
    runs = [(7, i * 3, i * 3 + 1) for i in range(a.runs)]
    with tempfile.TemporaryDirectory(prefix="mailstore-bench-inserts-") as work:
        db = sqlite3.connect(os.path.join(work, "catalog.sqlite"), isolation_level=None)
        catalog.create(db)
        db.execute("CREATE TEMP TABLE new_messages AS SELECT * FROM messages WHERE 0")
        marks = "(" + ",".join("?" * 13) + ")"
        cases = [
            ("message rows, no thread beside", 0, "temp.new_messages",
             lambda: db.executemany("INSERT INTO temp.new_messages VALUES " + marks, rows),
             lambda: catalog.insert_many(db, "INSERT INTO temp.new_messages", 13, rows)),
            ("message rows, {} lstat threads beside".format(a.busy), a.busy,
             "temp.new_messages",
             lambda: db.executemany("INSERT INTO temp.new_messages VALUES " + marks, rows),
             lambda: catalog.insert_many(db, "INSERT INTO temp.new_messages", 13, rows)),
            ("runs of ids", 0, "snapshot_runs",
             lambda: db.executemany("INSERT INTO snapshot_runs VALUES (?, ?, ?)", runs),
             lambda: catalog.insert_many(db, "INSERT INTO snapshot_runs", 3, runs)),
        ]
        print("{:<40} {:>12} {:>12} {:>7}".format("", "executemany", "insert_many", "ratio"))
        for label, busy, table, many, bulk in cases:
            with Busy(busy, work):
                old = min(timed(db, many, table) for _ in range(a.repeat))
                new = min(timed(db, bulk, table) for _ in range(a.repeat))
            print("{:<40} {:>10.3f} s {:>10.3f} s {:>6.1f}x".format(label, old, new, old / new))
        db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
