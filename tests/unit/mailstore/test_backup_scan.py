"""The incremental scan of `backup run` (mailstore/backup/scan.py): what it skips, and that
everything it must see is still seen."""
import os
import time

import pytest

from mailstore import backup, maildir
from mailstore.backup import scan
from mailstore.backup.repository import Repository

from tests.harness import make_tree, message_bytes, message_paths, snapshot_tree, write

OLD = 1_650_000_000_000_000_000     # make_tree's directory mtime: far older than any run


@pytest.fixture
def repo(tmp_path):
    backup.init(tmp_path / "repo")
    return str(tmp_path / "repo")


@pytest.fixture
def listed(monkeypatch):
    """The new/ and cur/ directories os.listdir is called on (what rescan_user re-lists)."""
    seen = []
    real = os.listdir

    def spy(path="."):
        if os.path.basename(os.fsdecode(path)) in ("new", "cur"):
            seen.append(os.fsdecode(path))
        return real(path)
    monkeypatch.setattr(os, "listdir", spy)
    return seen


def _rel(paths, root):
    return sorted(os.path.relpath(p, str(root)) for p in paths)


def test_first_run_full_then_incremental_and_untouched_directories_are_not_listed(
        tmp_path, repo, listed):
    src = tmp_path / "src"
    make_tree(src)
    assert backup.run(repo, src)["scan"] == "full"
    second = backup.run(repo, src)
    # the first run recorded no directory state: every message directory is listed once
    assert second["scan"] == "incremental" and second["messages"] == 16
    assert len(listed) == 10            # new/ and cur/ of 5 folders (alice 3, bob 2)
    del listed[:]
    third = backup.run(repo, src)
    assert third["scan"] == "incremental" and third["messages"] == 16
    assert third["read_files"] == 0 and listed == []
    backup.restore(repo, "latest", tmp_path / "dst")
    assert snapshot_tree(tmp_path / "dst") == snapshot_tree(src)


def test_a_message_added_to_an_otherwise_unchanged_folder_is_picked_up(tmp_path, repo, listed):
    src = tmp_path / "src"
    make_tree(src)
    for _ in range(3):
        backup.run(repo, src)
    del listed[:]
    data = message_bytes("alice", ".Sent", 50, b"delivered later")
    write(str(src / "alice/Maildir/.Sent/new/1800000000.M5P5.mail,S=9"), data,
          1_800_000_000_000_000_000)
    gone = message_paths(src / "bob/Maildir/cur")[0]
    os.unlink(gone)                                         # an expunge elsewhere
    result = backup.run(repo, src)
    assert result["scan"] == "incremental"
    assert result["messages"] == 16 and result["read_files"] == 1
    assert result["read_bytes"] == len(data)
    # only the two directories that changed were listed again
    assert _rel(listed, src) == ["alice/Maildir/.Sent/new", "bob/Maildir/cur"]
    backup.restore(repo, "latest", tmp_path / "dst")
    assert snapshot_tree(tmp_path / "dst") == snapshot_tree(src)


def test_flag_renames_in_incremental_runs_cost_no_read(tmp_path, repo):
    src = tmp_path / "src"
    make_tree(src)
    backup.run(repo, src)
    backup.run(repo, src)
    for path in message_paths(src / "alice"):
        folder_dir = os.path.dirname(os.path.dirname(path))
        unique = os.path.basename(path).split(":")[0]
        os.rename(path, os.path.join(folder_dir, "cur", unique + ":2,FRS"))
    result = backup.run(repo, src)
    assert result["scan"] == "incremental"
    assert (result["read_files"], result["new_objects"], result["messages"]) == (0, 0, 16)
    backup.restore(repo, "latest", tmp_path / "dst")
    assert snapshot_tree(tmp_path / "dst") == snapshot_tree(src)


def test_a_directory_whose_mtime_was_reset_is_listed_again(tmp_path, repo):
    """rsync -a or a restore put back a directory's old mtime after changing its entries:
    the ctime (which utime(2) moves) tells."""
    src = tmp_path / "src"
    make_tree(src)
    backup.run(repo, src)
    backup.run(repo, src)
    inbox_new = src / "bob/Maildir/new"
    before = os.lstat(str(inbox_new)).st_mtime_ns
    data = message_bytes("bob", "", 77, b"slipped in")
    write(str(inbox_new / "1800000001.M7P7.mail,S=9"), data, 1_800_000_000_000_000_000)
    os.utime(str(inbox_new), ns=(before, before))
    assert os.lstat(str(inbox_new)).st_mtime_ns == before
    result = backup.run(repo, src)
    assert result["messages"] == 17 and result["read_files"] == 1


def _previous_for(repo_path, src, user, scan_started_ns):
    """scan.Previous for `user` from the newest snapshot, with a chosen scan start and the
    directory state of NOW (as if nothing but the mtime rule decided)."""
    with Repository(repo_path) as r:
        seq, = r.db.execute("SELECT max(seq) FROM snapshots").fetchone()
        rows = r.db.execute(
            "SELECT m.id, m.user, m.folder, m.subdir, m.name, m.uniq, m.size, m.mtime_ns,"
            " m.uid, m.gid, m.mode, m.ino, m.object FROM snapshot_messages s JOIN messages m"
            " ON m.id = s.message WHERE s.snapshot = ? AND m.user = ?", (seq, user)).fetchall()
        meta = {"scan_started_ns": scan_started_ns}
        previous = scan.load_previous(r.db, seq, meta, {user: rows})
    dirs = previous.dirs[user]
    previous.dir_state[user] = scan.stat_dirs(os.path.join(str(src), user),
                                              list(scan._message_dirs(dirs)))
    return previous


def test_a_directory_changed_in_the_tick_it_was_listed_is_listed_again(tmp_path, repo):
    """A directory whose recorded mtime is not more than a second older than the previous
    scan's start may have changed after it was listed without its mtime moving: never
    skipped. Same setup one second later: skipped (so the test can tell)."""
    src = tmp_path / "src"
    make_tree(src)
    backup.run(repo, src)
    inbox_new = str(src / "bob/Maildir/new")
    mtime = os.lstat(inbox_new).st_mtime_ns
    assert mtime == OLD
    # a message the previous scan did not see, in a directory whose mtime is as recorded
    write(os.path.join(inbox_new, "1800000002.M8P8.mail,S=9"), b"Subject: x\n\nx\n",
          1_800_000_000_000_000_000)
    os.utime(inbox_new, ns=(mtime, mtime))

    tree, _rows, _state = scan.scan_user(str(src), "bob",
                                         _previous_for(repo, src, "bob", mtime + 999_999_999))
    assert "1800000002.M8P8.mail,S=9" in [m.name for m in tree.messages]
    tree, _rows, _state = scan.scan_user(str(src), "bob",
                                         _previous_for(repo, src, "bob", mtime + 1_000_000_001))
    assert "1800000002.M8P8.mail,S=9" not in [m.name for m in tree.messages]


def test_full_scan_weekly_on_request_and_when_the_source_changes(tmp_path, repo):
    src = tmp_path / "src"
    make_tree(src)
    t = 1_790_000_000.0
    assert backup.run(repo, src, now=lambda: t)["scan"] == "full"
    assert backup.run(repo, src, now=lambda: t + 86400)["scan"] == "incremental"
    assert backup.run(repo, src, now=lambda: t + 6 * 86400)["scan"] == "incremental"
    assert backup.run(repo, src, now=lambda: t + 7 * 86400)["scan"] == "full"
    assert backup.run(repo, src, now=lambda: t + 8 * 86400)["scan"] == "incremental"
    assert backup.run(repo, src, now=lambda: t + 9 * 86400, full_scan=True)["scan"] == "full"
    os.rename(str(src), str(tmp_path / "moved"))
    assert backup.run(repo, tmp_path / "moved", now=lambda: t + 10 * 86400)["scan"] == "full"


def test_a_previous_snapshot_without_scan_state_means_a_full_scan(tmp_path, repo):
    src = tmp_path / "src"
    make_tree(src)
    backup.run(repo, src)
    with Repository(repo) as r:
        r.db.execute("DELETE FROM meta WHERE key = ?", (scan.META_KEY,))
    assert backup.run(repo, src)["scan"] == "full"
    assert backup.run(repo, src)["scan"] == "incremental"


def test_in_place_metadata_changes_wait_for_the_full_scan(tmp_path, repo):
    """The stated assumption: a message file is never changed in place. A chmod of a message
    (which no mail software does) is not looked for by an incremental run; the full scan
    records it."""
    src = tmp_path / "src"
    make_tree(src)
    backup.run(repo, src)
    path = message_paths(src / "alice/Maildir/cur")[0]
    os.chmod(path, 0o604)
    rel = os.path.relpath(path, str(src))
    assert backup.run(repo, src)["scan"] == "incremental"
    backup.restore(repo, "latest", tmp_path / "inc")
    assert os.lstat(str(tmp_path / "inc" / rel)).st_mode & 0o777 != 0o604
    assert backup.run(repo, src, full_scan=True)["scan"] == "full"
    backup.restore(repo, "latest", tmp_path / "full")
    assert os.lstat(str(tmp_path / "full" / rel)).st_mode & 0o777 == 0o604
    assert snapshot_tree(tmp_path / "full") == snapshot_tree(src)


def test_names_that_are_not_utf8_survive_incremental_runs(tmp_path, repo):
    src = tmp_path / "src"
    make_tree(src)
    folder = os.path.join(os.fsencode(str(src)), b"alice/Maildir/.Caf\xe9")
    for sub in (b"cur", b"new", b"tmp"):
        os.makedirs(os.path.join(folder, sub))
    name = b"1800000000.M1P1.h\xff,S=9:2,S"
    with open(os.path.join(folder, b"cur", name), "wb") as f:
        f.write(b"Subject: latin\n\nbody\n")
    for d in (folder + b"/cur", folder + b"/new", folder + b"/tmp", folder):
        os.utime(d, ns=(OLD, OLD))
    runs = [backup.run(repo, src) for _ in range(3)]
    assert [r["scan"] for r in runs] == ["full", "incremental", "incremental"]
    assert [r["messages"] for r in runs] == [17, 17, 17]
    assert runs[2]["read_files"] == 0 and not runs[2]["warnings"]
    # flags change on the Latin-1 named message: a rename, no read
    os.rename(os.path.join(folder, b"cur", name), os.path.join(folder, b"cur", name[:-1] + b"FS"))
    fourth = backup.run(repo, src)
    assert fourth["messages"] == 17 and fourth["read_files"] == 0
    backup.restore(repo, "latest", tmp_path / "dst")
    assert snapshot_tree(tmp_path / "dst") == snapshot_tree(src)


def test_a_snapshot_holds_the_rows_its_run_recorded_not_the_previous_snapshots(tmp_path, repo):
    """The new snapshot's runs of message ids are made from what its run recorded, not
    taken from the previous snapshot's: a row the previous snapshot lost in the catalog (its
    cached list still had it) is in the new one."""
    src = tmp_path / "src"
    make_tree(src)
    backup.run(repo, src)
    with Repository(repo) as r:
        first, last = r.db.execute("SELECT first, last FROM snapshot_runs").fetchone()
        assert last - first == 15           # one run: all 16 messages
        r.db.execute("UPDATE snapshot_runs SET first = first + 1")
    second = backup.run(repo, src)
    assert second["messages"] == 16
    with Repository(repo) as r:
        count, = r.db.execute("SELECT count(*) FROM snapshot_messages WHERE snapshot ="
                              " (SELECT max(seq) FROM snapshots)").fetchone()
    assert count == 16
    backup.restore(repo, "latest", tmp_path / "dst")
    assert snapshot_tree(tmp_path / "dst") == snapshot_tree(src)
