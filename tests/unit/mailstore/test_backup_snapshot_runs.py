"""Which messages a snapshot holds is stored as runs of consecutive message ids (catalog.py):
the runs hold exactly the rows the run recorded, forgetting drops exactly the rows no snapshot
holds any more, and a catalog that still has the table snapshot_messages of catalogs made
before 2026-12-06 is read as it is and migrated by the first command that writes."""
import os
import random
import shutil
import sqlite3

import pytest
from hypothesis import given, settings, strategies as st

from backup_fixtures import cli
from mailstore import backup
from mailstore.backup import catalog

from tests.harness import make_tree, snapshot_tree

# the table as catalogs made before 2026-12-06 have it (catalog.py of that time)
OLD_TABLE = """CREATE TABLE snapshot_messages (
    snapshot INTEGER NOT NULL,
    message INTEGER NOT NULL,
    PRIMARY KEY (snapshot, message)
) WITHOUT ROWID"""


@given(st.lists(st.integers(min_value=1, max_value=200), max_size=120))
def test_id_runs_cover_exactly_the_ids(ids):
    runs = catalog.id_runs(ids)
    covered = [i for first, last in runs for i in range(first, last + 1)]
    assert covered == sorted(set(ids))
    # maximal runs: two runs never touch
    assert all(b[0] > a[1] + 1 for a, b in zip(runs, runs[1:]))


def members(db):
    """{snapshot seq: set of message ids} as the readers see it."""
    out = {}
    for seq, mid in db.execute("SELECT snapshot, message FROM snapshot_messages"):
        out.setdefault(seq, set()).add(mid)
    return out


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sets(st.integers(min_value=1, max_value=60), max_size=40), min_size=1,
                max_size=5), st.data())
def test_dropping_unreferenced_messages_keeps_exactly_the_held_rows(snapshots, data):
    db = sqlite3.connect(":memory:", isolation_level=None)
    catalog.create(db)
    db.executemany("INSERT INTO messages (id, user, folder, subdir, name, uniq, size, mtime_ns,"
                   " uid, gid, mode, ino, object) VALUES (?, 'u', '', 'cur', ?, ?, 1, 1, 0,"
                   " 0, 384, 1, 'x')", [(i, str(i), str(i)) for i in range(1, 61)])
    for seq, ids in enumerate(snapshots, 1):
        catalog.insert_runs(db, seq, ids)
    kept = data.draw(st.sets(st.sampled_from(range(1, len(snapshots) + 1))))
    db.execute("DELETE FROM snapshot_runs WHERE snapshot NOT IN ({})".format(
        ",".join(str(s) for s in kept) or "0"))
    catalog.drop_unreferenced_messages(db)
    left = {r[0] for r in db.execute("SELECT id FROM messages")}
    assert left == set().union(*(snapshots[s - 1] for s in kept))
    assert members(db) == {s: snapshots[s - 1] for s in kept if snapshots[s - 1]}


def to_old_layout(repo):
    """Turn the catalog back into the layout of catalogs made before 2026-12-06: the table
    snapshot_messages, no runs, no seal state of them."""
    db = sqlite3.connect(os.path.join(repo, "catalog.sqlite"), isolation_level=None)
    rows = db.execute("SELECT snapshot, message FROM snapshot_messages").fetchall()
    db.execute("BEGIN")
    db.execute("DROP VIEW snapshot_messages")
    db.execute("DROP TABLE snapshot_runs")
    db.execute(OLD_TABLE)
    db.executemany("INSERT INTO snapshot_messages VALUES (?, ?)", rows)
    db.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")
    db.execute("COMMIT")
    db.close()
    return sorted(rows)


def layout(repo):
    db = sqlite3.connect(os.path.join(repo, "catalog.sqlite"))
    kinds = dict(db.execute("SELECT name, type FROM sqlite_master WHERE name IN"
                            " ('snapshot_messages', 'snapshot_runs')"))
    rows = sorted(db.execute("SELECT snapshot, message FROM snapshot_messages").fetchall())
    db.close()
    return kinds, rows


@pytest.fixture
def old_repo(tmp_path):
    """An encrypted repository with three snapshots (messages renamed and added between
    them) whose catalog has the old layout: (repo, key, src, rows before)."""
    repo, key, src = str(tmp_path / "repo"), str(tmp_path / "key"), str(tmp_path / "src")
    backup.init(repo, key_file=key)
    make_tree(src)
    rng = random.Random(3)
    for day in range(3):
        for user in ("alice", "bob"):
            cur = os.path.join(src, user, "Maildir", "cur")
            for name in rng.sample(sorted(os.listdir(cur)), 2):
                os.rename(os.path.join(cur, name), os.path.join(cur, name + "T"))
            with open(os.path.join(src, user, "Maildir", "new", "day{}.x".format(day)),
                      "w") as f:
                f.write("Subject: day {}\n\nbody\n".format(day))
        backup.run(repo, src, key_file=key)
    before = to_old_layout(repo)
    assert layout(repo)[0] == {"snapshot_messages": "table"}
    return repo, key, src, before


def test_readers_work_on_a_catalog_of_the_old_layout(old_repo, tmp_path):
    repo, key, src, _before = old_repo
    r = cli("verify", repo, "--read-data", "--key-file", key)
    assert r.returncode == 0, r.stderr
    backup.restore(repo, "latest", tmp_path / "dst", key_file=key)
    assert snapshot_tree(tmp_path / "dst") == snapshot_tree(src)
    # a reader changes nothing
    assert layout(repo)[0] == {"snapshot_messages": "table"}


def test_the_next_run_migrates_to_runs_and_keeps_every_snapshot(old_repo, tmp_path):
    repo, key, src, before = old_repo
    run = backup.run(repo, src, key_file=key)
    kinds, rows = layout(repo)
    assert kinds == {"snapshot_messages": "view", "snapshot_runs": "table"}
    # the three older snapshots hold what they held, and the new one was added on top
    assert [r for r in rows if r[0] <= 3] == before
    assert len([r for r in rows if r[0] == 4]) == run["messages"]
    r = cli("verify", repo, "--read-data", "--key-file", key)
    assert r.returncode == 0, r.stderr
    for snapshot in backup.list_snapshots(repo, key):
        target = tmp_path / snapshot["id"]
        backup.restore(repo, snapshot["id"], target, key_file=key)
    backup.restore(repo, "latest", tmp_path / "dst", key_file=key)
    assert snapshot_tree(tmp_path / "dst") == snapshot_tree(src)


def test_forget_migrates_and_drops_the_rows_only_the_forgotten_snapshot_held(old_repo):
    repo, key, _src, before = old_repo
    first = backup.list_snapshots(repo, key)[0]["id"]
    backup.forget(repo, first, key_file=key)
    kinds, rows = layout(repo)
    assert kinds == {"snapshot_messages": "view", "snapshot_runs": "table"}
    assert rows == [r for r in before if r[0] != 1]
    db = sqlite3.connect(os.path.join(repo, "catalog.sqlite"))
    ids = {r[0] for r in db.execute("SELECT id FROM messages")}
    db.close()
    assert ids == {m for _s, m in rows}
    r = cli("verify", repo, "--read-data", "--key-file", key)
    assert r.returncode == 0, r.stderr


def test_the_off_host_copy_of_a_migrated_catalog_restores(old_repo, tmp_path):
    """The sealed catalog (what the off-host copy gets) is written anew from the runs."""
    repo, key, src, _before = old_repo
    backup.run(repo, src, key_file=key)
    view = backup.export(repo)
    copy = str(tmp_path / "copy")
    shutil.copytree(view, copy)
    shutil.rmtree(view)
    assert not os.path.exists(os.path.join(copy, "catalog.sqlite"))
    assert [s["id"] for s in backup.list_snapshots(copy, key)] == \
        [s["id"] for s in backup.list_snapshots(repo, key)]
    r = cli("restore", copy, "latest", str(tmp_path / "dst"), "--key-file", key)
    assert r.returncode == 0, r.stderr
    assert snapshot_tree(tmp_path / "dst") == snapshot_tree(src)
