"""inotify watches (mailstore.migrate.dirwatch) and the cut-over's use of them
(delta.refresh with watch=): what a watch reports, and when it declines to vouch."""
import os

import pytest

from mailstore import maildir
from mailstore.migrate import delta as md
from mailstore.migrate.dirwatch import DirWatch

from tests.harness import maildir_trees as trees

MSGS = [("", "new", "1.M1.h,S=3", "", b"abc", 1_500_000_000_000_000_000),
        ("", "cur", "2.M2.h,S=5", "S", b"hello", 1_500_000_001_000_000_000),
        (".Sent", "cur", "3.M3.h", "RS", b"", 1_500_000_002_000_000_000)]
OLD_NS = 1_500_000_000_000_000_000


@pytest.fixture
def watch():
    w = DirWatch()
    if w.fd is None:
        pytest.skip("no inotify on this system")
    yield w
    w.close()


def _ino(path):
    return os.lstat(path).st_ino


def test_last_event_of_each_name_decides(tmp_path, watch):
    d = tmp_path / "cur"
    d.mkdir()
    (d / "old").write_bytes(b"x")
    (d / "flagged").write_bytes(b"y")
    assert watch.watch("k", str(d))
    (d / "new").write_bytes(b"z")                       # created
    os.rename(d / "flagged", d / "flagged:2,S")         # renamed in place
    os.unlink(d / "old")                                # expunged
    (d / "brief").write_bytes(b"b")
    os.rename(d / "brief", tmp_path / "elsewhere")      # came and went
    assert watch.changes("k", _ino(d)) == {"new": True, "flagged": False,
                                           "flagged:2,S": True, "old": False,
                                           "brief": False}
    assert watch.watch("k", str(d))                      # a new look: forgotten
    assert watch.changes("k", _ino(d)) == {}


def test_a_replaced_or_moved_directory_is_not_vouched_for(tmp_path, watch):
    d = tmp_path / "cur"
    d.mkdir()
    assert watch.watch("k", str(d))
    old_inode = _ino(d)
    os.rename(d, tmp_path / "moved")
    d.mkdir()
    (d / "m").write_bytes(b"x")
    assert watch.changes("k", _ino(d)) is None          # another directory at the path
    assert watch.changes("k", old_inode) is None        # the watched one moved away
    assert watch.changes("unknown", _ino(d)) is None


def test_overflowed_queue_is_not_vouched_for_until_watched_again(tmp_path, watch):
    d = tmp_path / "cur"
    d.mkdir()
    assert watch.watch("k", str(d))
    limit = int(open("/proc/sys/fs/inotify/max_queued_events").read())
    if limit > 40000:
        pytest.skip("fs.inotify.max_queued_events is %d here" % limit)
    for i in range(limit // 2 + 10):                    # 2 events each, never drained
        p = d / str(i)
        p.write_bytes(b"")
        os.unlink(p)
    assert watch.changes("k", _ino(d)) is None
    assert watch.overflows == 1
    assert watch.watch("k", str(d))
    (d / "after").write_bytes(b"")
    assert watch.changes("k", _ino(d)) == {"after": True}


def test_refresh_sees_a_change_the_mtime_hides(tmp_path, watch):
    """A rename whose directory mtime is put back to an old value: refresh without a watch
    trusts the mtime and misses it (test_migrate_delta); with the watch it is seen."""
    root = str(tmp_path)
    md_dir = trees.make_user(root, "alice", MSGS)
    cur = os.path.join(md_dir, "cur")
    os.utime(cur, ns=(OLD_NS, OLD_NS))
    md.watch_user(watch, root, "alice")
    before = md.refresh(root, "alice", None)
    os.rename(os.path.join(cur, "2.M2.h,S=5:2,S"), os.path.join(cur, "2.M2.h,S=5:2,RS"))
    trees.write(os.path.join(cur, "7.M7.h:2,S"), b"new mail")
    os.utime(cur, ns=(OLD_NS, OLD_NS))
    blind = md.refresh(root, "alice", before)
    assert sorted(blind.dirs[("", "cur")]) == ["2.M2.h,S=5:2,S"]
    seen = md.refresh(root, "alice", before, watch=watch)
    assert sorted(seen.dirs[("", "cur")]) == ["2.M2.h,S=5:2,RS", "7.M7.h:2,S"]
    m = seen.dirs[("", "cur")]["7.M7.h:2,S"]
    assert (m.size, m.unique, m.info) == (8, "7.M7.h", "2,S")
    assert seen.dirs[(".Sent", "cur")] is before.dirs[(".Sent", "cur")]   # untouched: reused
    assert md.refresh(root, "alice", None).dirs == seen.dirs                # = a full look


def test_refresh_lists_a_replaced_directory_again(tmp_path, watch):
    root = str(tmp_path)
    md_dir = trees.make_user(root, "alice", MSGS)
    cur = os.path.join(md_dir, "cur")
    md.watch_user(watch, root, "alice")
    before = md.refresh(root, "alice", None)
    os.rename(cur, os.path.join(md_dir, "cur.old"))
    os.mkdir(cur)
    trees.write(os.path.join(cur, "8.M8.h:2,"), b"other")
    again = md.refresh(root, "alice", before, watch=watch)
    assert sorted(again.dirs[("", "cur")]) == ["8.M8.h:2,"]


def test_refresh_keeps_reporting_what_is_not_a_message(tmp_path, watch):
    """A symlink found in cur/ by the look the cut-over builds on is still reported when
    cur/ is not listed again (watched, or an old unchanged mtime)."""
    root = str(tmp_path)
    md_dir = trees.make_user(root, "alice", MSGS)
    cur = os.path.join(md_dir, "cur")
    os.symlink("/etc/shadow", os.path.join(cur, "evil:2,S"))
    os.utime(cur, ns=(OLD_NS, OLD_NS), follow_symlinks=False)
    md.watch_user(watch, root, "alice")
    before = md.refresh(root, "alice", None)
    assert [a.relpath for a in before.tree.anomalies] == ["Maildir/cur/evil:2,S"]
    for w in (watch, None):
        again = md.refresh(root, "alice", before, watch=w)
        assert [a.relpath for a in again.tree.anomalies] == ["Maildir/cur/evil:2,S"]
    os.unlink(os.path.join(cur, "evil:2,S"))
    gone = md.refresh(root, "alice", before, watch=watch)
    assert gone.tree.anomalies == []


def test_refresh_brings_the_rest_of_the_tree_up_to_date_without_walking_it(
        tmp_path, watch, monkeypatch):
    """Dovecot files changed in place, removed, a directory's mode changed: refresh with the
    watch equals a fresh skeleton scan, and took it from the events, not from a walk."""
    root = str(tmp_path)
    md_dir = trees.make_user(root, "alice", MSGS)
    uidlist = os.path.join(md_dir, "dovecot-uidlist")
    index = os.path.join(md_dir, ".Sent", "dovecot.index.log")
    trees.write(index, b"log")
    md.watch_user(watch, root, "alice")
    before = md.refresh(root, "alice", None)
    with open(uidlist, "ab") as f:                       # appended in place
        f.write(b"3 S.M3.h\n")
    os.unlink(index)
    os.chmod(os.path.join(md_dir, ".Sent"), 0o750)
    walks = []
    real = maildir.scan_user_skeleton
    monkeypatch.setattr(maildir, "scan_user_skeleton",
                        lambda *a: walks.append(a) or real(*a))
    again = md.refresh(root, "alice", before, watch=watch)
    assert walks == []
    fresh = real(root, "alice")
    assert again.tree._replace(scanned_ns=0) == fresh._replace(scanned_ns=0)
    assert [e.size for e in again.tree.control if e.relpath == "Maildir/dovecot-uidlist"] \
        == [os.path.getsize(uidlist)]
    # a file that appeared: only a walk can say what it is
    trees.write(os.path.join(md_dir, ".Sent", "dovecot.index"), b"new index")
    newer = md.refresh(root, "alice", before, watch=watch)
    assert len(walks) == 1
    assert newer.tree._replace(scanned_ns=0) == real(root, "alice")._replace(scanned_ns=0)


def test_a_rename_is_reported_with_its_origin_while_the_file_is_untouched(tmp_path, watch):
    new, cur = tmp_path / "new", tmp_path / "cur"
    for d in (new, cur):
        d.mkdir()
    for path in (new / "a", cur / "b", cur / "c", cur / "d"):
        path.write_bytes(b"x")
    (tmp_path / "outside").write_bytes(b"x")
    assert watch.watch("new", str(new)) and watch.watch("cur", str(cur))
    os.rename(new / "a", cur / "a:2,")                   # new -> cur
    os.rename(cur / "b", cur / "b:2,S")                  # a flag change
    os.chmod(cur / "c", 0o644)                           # changed in place, then renamed:
    os.rename(cur / "c", cur / "c:2,T")                  # the old look is stale for it
    os.rename(tmp_path / "outside", cur / "e")           # from an unwatched directory
    os.rename(cur / "d", cur / "d:2,S")
    os.rename(cur / "d:2,S", cur / "d:2,ST")             # its origin was itself renamed
    assert watch.moved_from("cur") == {"a:2,": ("new", "a"), "b:2,S": ("cur", "b")}
    assert watch.changes("cur", _ino(cur))["c:2,T"] is True
    os.unlink(cur / "b:2,S")
    (cur / "b:2,S").write_bytes(b"another file")         # the name now holds another file
    assert watch.moved_from("cur") == {"a:2,": ("new", "a")}


def test_refresh_takes_renamed_messages_from_the_previous_look(tmp_path, watch, monkeypatch):
    """A flag change or a move new -> cur costs no lstat: rename(2) keeps the facts the
    previous look recorded. A file changed in place before its rename is looked at."""
    root = str(tmp_path)
    md_dir = trees.make_user(root, "alice", MSGS)
    md.watch_user(watch, root, "alice")
    before = md.refresh(root, "alice", None)
    cur = os.path.join(md_dir, "cur")
    os.rename(os.path.join(md_dir, "new", "1.M1.h,S=3"), os.path.join(cur, "1.M1.h,S=3:2,"))
    os.rename(os.path.join(cur, "2.M2.h,S=5:2,S"), os.path.join(cur, "2.M2.h,S=5:2,RS"))
    sent = os.path.join(md_dir, ".Sent", "cur")
    os.chmod(os.path.join(sent, "3.M3.h:2,RS"), 0o640)
    os.rename(os.path.join(sent, "3.M3.h:2,RS"), os.path.join(sent, "3.M3.h:2,S"))
    looked = []
    real = md._look
    monkeypatch.setattr(md, "_look", lambda *a: looked.append(a[4]) or real(*a))
    again = md.refresh(root, "alice", before, watch=watch)
    assert looked == ["3.M3.h:2,S"]
    assert again.dirs == md.refresh(root, "alice", None).dirs          # = a full look
    assert again.dirs[(".Sent", "cur")]["3.M3.h:2,S"].mode == 0o640
    assert again.changed[("", "cur")] == {"1.M1.h,S=3:2,", "2.M2.h,S=5:2,S",
                                          "2.M2.h,S=5:2,RS"}


def test_queued_says_how_much_waits_to_be_read(tmp_path, watch):
    d = tmp_path / "cur"
    d.mkdir()
    assert watch.watch("k", str(d))
    assert watch.queued() == 0
    (d / "a").write_bytes(b"x")
    assert watch.queued() > 0
    watch.drain()
    assert watch.queued() == 0
    assert watch.changes("k", _ino(d)) == {"a": True}
