"""cleanup-source, which deletes the source mail, interrupted and failing.

kill -9 at every kind of point of the deletion (between unlinks, between the unlinks and the
directory removals, between those), a read error (EIO) in the byte comparison that decides,
a source that refuses deletion (a real read-only mount: EROFS), and a target user that cannot
be scanned. Whatever happens, the target is untouched, a user is either left alone or its
source partly deleted with every deleted file's copy in the target, and a re-run finishes
the job.
"""
import errno
import os
import signal
import stat
import subprocess
import sys

import pytest

from mailstore import migrate as migration

from tests.harness import maildir_trees as trees
import mounts

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))))
USERS = ("alice", "bob")
MSGS = [("", "new", "1.M1.h,S=3", "", b"abc", 1_500_000_000_000_000_000),
        ("", "cur", "2.M2.h,S=5", "S", b"hello", 1_500_000_001_000_000_000),
        (".Sent", "cur", "3.M3.h", "RS", b"", 1_500_000_002_000_000_000),
        (".A.B", "cur", "4.M4.h", "FS", b"x" * 300000, 1_500_000_003_000_000_000)]

# cleanup-source in a child that SIGKILLs itself at its N-th unlink or rmdir (real kill -9:
# nothing of the run's bookkeeping survives, only what the file system holds)
KILLER = r"""
import os, signal, sys
from mailstore import migrate
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
calls = [0]
def counted(name):
    orig = getattr(os, name)
    def op(*a, **k):
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return orig(*a, **k)
    setattr(os, name, op)
counted("unlink")
counted("rmdir")
r = migrate.cleanup_source(src, dst)
print("finished", calls[0], r.ok)
"""


@pytest.fixture
def migrated(tmp_path):
    """Both users migrated (copied); returns (src, dst, the target as it was then)."""
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    os.makedirs(src)
    os.makedirs(dst)
    trees.make_user(src, "alice", MSGS)
    trees.make_user(src, "bob", MSGS[:2])
    r = migration.migrate(src, dst, force_copy=True)
    assert r.ok, r.as_dict()
    return src, dst, {u: trees.snapshot(dst, u) for u in USERS}


def _kill_at(src, dst, n):
    return subprocess.run([sys.executable, "-c", KILLER, src, dst, str(n)], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)


def _assert_target_untouched(dst, target):
    for u in USERS:
        assert trees.snapshot(dst, u) == target[u], u


def _assert_done(src, dst, target):
    r = migration.cleanup_source(src, dst)
    assert r.ok, r.as_dict()
    for u in USERS:
        assert not os.path.lexists(os.path.join(src, u)), u
    _assert_target_untouched(dst, target)


def _total_operations(migrated):
    """How many unlinks and rmdirs an uninterrupted clean-up of `migrated` makes."""
    child = _kill_at(*migrated[:2], 10**6)
    assert child.returncode == 0, child.stderr
    return int(child.stdout.split()[1])


def test_kill_9_at_every_deletion_step_then_rerun(tmp_path):
    # the number of steps, from an uninterrupted run on a copy of the same trees
    src, dst = str(tmp_path / "probe-src"), str(tmp_path / "probe-dst")
    for d in (src, dst):
        os.makedirs(d)
    trees.make_user(src, "alice", MSGS)
    trees.make_user(src, "bob", MSGS[:2])
    assert migration.migrate(src, dst, force_copy=True).ok
    total = _total_operations((src, dst))
    assert total > 30                     # files and directories of both users
    for n in range(1, total + 1):
        base = tmp_path / str(n)
        src, dst = str(base / "src"), str(base / "dst")
        os.makedirs(src)
        os.makedirs(dst)
        trees.make_user(src, "alice", MSGS)
        trees.make_user(src, "bob", MSGS[:2])
        assert migration.migrate(src, dst, force_copy=True).ok
        target = {u: trees.snapshot(dst, u) for u in USERS}
        source = {u: trees.snapshot(src, u) for u in USERS}
        child = _kill_at(src, dst, n)
        assert child.returncode == -signal.SIGKILL, (n, child.stdout, child.stderr)
        _assert_target_untouched(dst, target)
        for u in USERS:
            # what is left of the source is part of what was there: nothing moved or rewritten
            left = trees.snapshot(src, u) if os.path.lexists(os.path.join(src, u)) else {}
            assert all(source[u].get(rel) == facts or
                       (stat.S_ISDIR(facts[0]) and rel in source[u])     # an mtime moved
                       for rel, facts in left.items()), (n, u)
        _assert_done(src, dst, target)


def _eio_below(directory):
    """An os.read that fails with EIO for every file below `directory` (found through
    /proc/self/fd), and reads every other file."""
    below = os.path.realpath(directory) + "/"
    orig = os.read

    def read(fd, n):
        if os.readlink("/proc/self/fd/%d" % fd).startswith(below):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return orig(fd, n)
    return read


def test_eio_reading_the_source_in_the_comparison_leaves_that_user_alone(migrated,
                                                                       monkeypatch):
    # Injected at a seam (os.read): a real read error needs a failing block device
    # (dm-error, dm-flakey), which the test machine does not have.
    src, dst, target = migrated
    source = trees.snapshot(src, "alice")
    with monkeypatch.context() as m:
        m.setattr(os, "read", _eio_below(os.path.join(src, "alice")))
        r = migration.cleanup_source(src, dst)
    by_user = {u["user"]: u for u in r.users}
    assert not r.ok
    assert not by_user["alice"]["ok"] and by_user["alice"]["deleted_files"] == 0
    assert any("Input/output error" in p for p in by_user["alice"]["problems"]), by_user
    assert trees.snapshot(src, "alice") == source        # not one file deleted
    assert by_user["bob"]["ok"] and not os.path.lexists(os.path.join(src, "bob"))
    _assert_done(src, dst, target)                       # the disk answers again: re-run


def test_eio_reading_the_target_in_the_comparison_leaves_that_user_alone(migrated,
                                                                       monkeypatch):
    src, dst, target = migrated                          # (seam: as above)
    source = trees.snapshot(src, "alice")
    with monkeypatch.context() as m:
        m.setattr(os, "read", _eio_below(os.path.join(dst, "alice")))
        r = migration.cleanup_source(src, dst, users=["alice"])
    assert not r.ok and r.users[0]["deleted_files"] == 0
    assert any("Input/output error" in p for p in r.users[0]["problems"]), r.as_dict()
    assert trees.snapshot(src, "alice") == source
    _assert_done(src, dst, target)


def test_a_read_only_source_is_reported_and_a_rerun_finishes(migrated):
    """A real EROFS: alice's source directory bind-mounted read-only over itself."""
    src, dst, target = migrated
    mounts.require_root()
    alice = os.path.join(src, "alice")
    source = trees.snapshot(src, "alice")
    subprocess.run(["mount", "--bind", alice, alice], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", alice], check=True)
        r = migration.cleanup_source(src, dst)
        by_user = {u["user"]: u for u in r.users}
        assert not r.ok and not by_user["alice"]["ok"]
        assert by_user["alice"]["deleted_files"] == 0
        problems = by_user["alice"]["problems"]
        # (the user directory itself is the mount point: busy, not read-only)
        assert problems and all("Read-only file system" in p or p.startswith(".: left in")
                                for p in problems), problems
        assert trees.snapshot(src, "alice") == source
        assert by_user["bob"]["ok"] and not os.path.lexists(os.path.join(src, "bob"))
    finally:
        subprocess.run(["umount", alice], check=True)
    _assert_done(src, dst, target)


def test_a_target_user_that_cannot_be_scanned_leaves_the_source_alone(migrated):
    src, dst, target = migrated
    source = trees.snapshot(src, "bob")
    moved = os.path.join(dst, "bob.elsewhere")
    os.rename(os.path.join(dst, "bob"), moved)
    os.symlink("bob.elsewhere", os.path.join(dst, "bob"))  # the scan refuses symlinks
    r = migration.cleanup_source(src, dst, users=["bob"])
    assert not r.ok and "symbolic link" in r.users[0]["problems"][0]
    assert trees.snapshot(src, "bob") == source
    os.unlink(os.path.join(dst, "bob"))
    os.rename(moved, os.path.join(dst, "bob"))
    _assert_done(src, dst, target)
