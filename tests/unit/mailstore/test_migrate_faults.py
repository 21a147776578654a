"""The migration's error paths: a failed flush of the target, errors in the final pass and in
the verification, and a full target disk.

In every case no user is recorded as done unless its target is complete and verified, the
source is untouched, and a re-run (once the fault is gone) makes the target exactly the
source. The full disk is real (the target on a small tmpfs); EIO comes from seams, each
saying why no real component gives it here.
"""
import errno
import json
import os
import subprocess
import sys

import pytest

from mailstore import migrate as migration
from mailstore.migrate import cutover
from mailstore.migrate import execute as mx
from mailstore.migrate.journal import Journal

from tests.harness import maildir_trees as trees
import mounts

USERS = ("alice", "bob")
MSGS = [("", "new", "1.M1.h,S=3", "", b"abc", 1_500_000_000_000_000_000),
        ("", "cur", "2.M2.h,S=5", "S", b"hello", 1_500_000_001_000_000_000),
        (".Sent", "cur", "3.M3.h", "RS", b"", 1_500_000_002_000_000_000),
        (".A.B", "cur", "4.M4.h", "FS", b"x" * 300000, 1_500_000_003_000_000_000)]
LATE = "9.M9.late"          # delivered while the quiesce hook runs: the final pass copies it


def _roots(tmp_path, src=None, dst=None):
    src = str(src or tmp_path / "src")
    dst = str(dst or tmp_path / "dst")
    os.makedirs(src, exist_ok=True)
    os.makedirs(dst, exist_ok=True)
    trees.make_user(src, "alice", MSGS)
    trees.make_user(src, "bob", MSGS[:2])
    return src, dst


def _late_delivery(src, user="alice", size=1000):
    """A quiesce hook that delivers one more message just before the cut-over (as if the
    MTA's last delivery raced the hook): the final pass, not the live copy, copies it."""
    path = os.path.join(src, user, "Maildir", "new", LATE)
    return "head -c %d /dev/urandom > %s" % (size, path)


def _done(dst):
    return Journal(dst).users("done")


def _assert_exact(src, dst, users=USERS):
    for u in users:
        assert trees.snapshot(dst, u) == trees.snapshot(src, u), u
    assert not os.listdir(os.path.join(dst, mx.STATE_DIR, "tmp"))


def _assert_rerun_finishes(src, dst, users=USERS):
    before = {u: trees.snapshot(src, u) for u in users}
    r = migration.migrate(src, dst, force_copy=True)
    assert r.ok, r.as_dict()
    assert _done(dst) == sorted(users)
    _assert_exact(src, dst, users)
    assert {u: trees.snapshot(src, u) for u in users} == before      # source untouched


def test_a_failed_flush_of_the_target_marks_every_user_unverified(tmp_path, monkeypatch):
    # Seam: syncfs(2) fails with EIO when the disk loses a write-back; no component of the
    # test machine can be made to do that without a failing block device (dm-error).
    src, dst = _roots(tmp_path)

    def fail(path):
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    with monkeypatch.context() as m:
        m.setattr(mx, "sync_filesystem", fail)
        r = migration.migrate(src, dst, force_copy=True, processes=1)
    assert not r.ok
    for u in r.users:
        assert not u.verified and not u.done and not u.ok, u.as_dict()
        assert any(e.startswith("flushing the target file system:") and
                   "Input/output error" in e for e in u.errors), u.errors
    assert _done(dst) == []                 # nobody recorded as migrated
    _assert_rerun_finishes(src, dst)


def test_a_failed_flush_in_worker_processes_marks_every_user_unverified(tmp_path,
                                                                        monkeypatch):
    """The same with the users shared out across forked workers (each flushes and
    verifies the users it copied, and reports back to the main process)."""
    src, dst = _roots(tmp_path)

    def fail(path):
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    with monkeypatch.context() as m:
        m.setattr(mx, "sync_filesystem", fail)
        r = migration.migrate(src, dst, force_copy=True, processes=2)
    assert not r.ok and all(not u.done and not u.verified for u in r.users), r.as_dict()
    assert _done(dst) == []
    _assert_rerun_finishes(src, dst)


def test_eio_reading_a_message_in_the_final_pass(tmp_path, monkeypatch):
    # Seam: reading the late message (os.pread, how a small message is copied) fails with
    # EIO (a real one needs a failing disk).
    src, dst = _roots(tmp_path)
    late = os.path.join(os.path.realpath(src), "alice", "Maildir", "new", LATE)
    orig = os.pread

    def pread(fd, n, offset):
        if os.readlink("/proc/self/fd/%d" % fd) == late:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return orig(fd, n, offset)
    with monkeypatch.context() as m:
        m.setattr(os, "pread", pread)
        r = migration.migrate(src, dst, force_copy=True, processes=1,
                              quiesce=_late_delivery(src))
    by_user = {u.user: u for u in r.users}
    assert not r.ok
    alice = by_user["alice"]
    assert not alice.done and any("Input/output error" in e for e in alice.errors), \
        alice.as_dict()
    assert not os.path.exists(os.path.join(dst, "alice", "Maildir", "new", LATE))
    assert by_user["bob"].ok                 # one user's fault is not the others'
    assert _done(dst) == ["bob"]
    _assert_rerun_finishes(src, dst)


def test_an_error_looking_at_the_target_in_the_verification(tmp_path, monkeypatch):
    # Seam: the verification's fresh look at alice's target fails (EIO listing a directory;
    # as root no permission can make the look fail, and a real EIO needs a failing disk).
    src, dst = _roots(tmp_path)
    orig = cutover.verify_copy

    def verify_copy(source_root, target_root, r, *a, **k):
        if r.user == "alice":
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return orig(source_root, target_root, r, *a, **k)
    with monkeypatch.context() as m:
        m.setattr(cutover, "verify_copy", verify_copy)
        r = migration.migrate(src, dst, force_copy=True, processes=1)
    by_user = {u.user: u for u in r.users}
    assert not r.ok
    assert not by_user["alice"].done and not by_user["alice"].verified
    assert "verification: [Errno 5] Input/output error" in by_user["alice"].errors
    assert by_user["bob"].ok and _done(dst) == ["bob"]
    _assert_rerun_finishes(src, dst)


def test_the_target_disk_fills_up_during_the_live_copy(tmp_path):
    """A real ENOSPC: the target root on a 1 MiB tmpfs, alice's mail 2 MiB."""
    src = str(tmp_path / "src")
    with mounts.small_tmpfs(tmp_path / "target", "1m") as mnt:
        dst = str(mnt / "mail")
        os.makedirs(src)
        trees.make_user(src, "alice", MSGS + [
            (".A.B", "cur", "5.M5.h", "S", os.urandom(2 << 20), 1_500_000_004_000_000_000)])
        trees.make_user(src, "bob", MSGS[:2])
        before = {u: trees.snapshot(src, u) for u in USERS}
        r = migration.migrate(src, dst, processes=1)
        by_user = {u.user: u for u in r.users}
        assert not r.ok and not by_user["alice"].done
        assert any("No space left on device" in e for e in by_user["alice"].errors), \
            by_user["alice"].as_dict()
        assert "alice" not in _done(dst)
        assert {u: trees.snapshot(src, u) for u in USERS} == before       # source untouched
        # what reached the target is whole: no torn message under a final name
        for key, paths in trees.messages_by_key(dst, "alice").items():
            for rel in paths:
                with open(os.path.join(dst, "alice", "Maildir", rel), "rb") as f, \
                        open(os.path.join(src, "alice", "Maildir", rel), "rb") as g:
                    assert f.read() == g.read(), rel
        assert not os.listdir(os.path.join(dst, mx.STATE_DIR, "tmp"))  # staging given back
        mounts.resize(mnt, "8m")            # the operator makes room
        _assert_rerun_finishes(src, dst)


def test_the_target_disk_fills_up_in_the_final_pass(tmp_path):
    """A real ENOSPC while delivery is deferred: the quiesce hook fills the target's file
    system (someone else's write) and a late message must still be copied."""
    src = str(tmp_path / "src")
    with mounts.small_tmpfs(tmp_path / "target", "4m") as mnt:
        dst = str(mnt / "mail")
        _roots(tmp_path, src=src, dst=dst)
        hook = "%s && head -c 64m /dev/zero > %s/filler 2>/dev/null; true" % (
            _late_delivery(src, size=256 * 1024), mnt)
        r = migration.migrate(src, dst, force_copy=True, processes=1, quiesce=hook)
        by_user = {u.user: u for u in r.users}
        assert not r.ok and not by_user["alice"].done, by_user["alice"].as_dict()
        assert any("No space left on device" in e for e in by_user["alice"].errors)
        assert "alice" not in _done(dst)
        assert not os.path.exists(os.path.join(dst, "alice", "Maildir", "new", LATE))
        os.unlink(os.path.join(str(mnt), "filler"))
        _assert_rerun_finishes(src, dst)


# The journal on a full disk. write(2) to a regular file that meets ENOSPC part-way returns
# a short count, not an error: the record would be torn, and the next record appended to
# the same line - both lost to every later run (a lost "done" makes a later run treat a
# user whose mail is already delivered to the target as one still to copy).
PAD_AND_FILL = r"""
import json, os, sys
journal, mnt = sys.argv[1], sys.argv[2]
page = os.statvfs(mnt).f_frsize
size = os.path.getsize(journal)
# earlier records (as a long-running migration has them): the journal ends 10 bytes before
# a page boundary, so the next record needs a page
pad = -(size + len('{"event": "pad", "x": ""}\n') + 10) % page
with open(journal, "a") as f:
    f.write(json.dumps({"event": "pad", "x": "x" * pad}) + "\n")
assert (os.path.getsize(journal) + 10) % page == 0
with open(os.path.join(mnt, "filler"), "wb", buffering=0) as f:
    try:
        while True:
            f.write(b"\0" * 4096)
    except OSError:
        pass
"""


def _pad_and_fill(journal, mnt):
    subprocess.run([sys.executable, "-c", PAD_AND_FILL, journal, str(mnt)], check=True,
                   stderr=subprocess.PIPE)


def test_a_journal_record_the_full_disk_cuts_short_is_not_half_written(tmp_path):
    with mounts.small_tmpfs(tmp_path / "target", "1m") as mnt:
        journal = Journal(str(mnt))
        journal.record("claim", "alice")
        _pad_and_fill(journal.path, mnt)
        with pytest.raises(OSError) as e:
            journal.record("done", "alice", mode="copy", messages=4, bytes=300008)
        assert e.value.errno == errno.ENOSPC
        assert not journal.has("done", "alice")                 # not believed written
        assert not Journal(str(mnt)).has("done", "alice")
        os.unlink(os.path.join(str(mnt), "filler"))
        journal.record("done", "bob", mode="copy")
        again = Journal(str(mnt))
        assert again.has("claim", "alice") and again.has("done", "bob")
        assert not again.has("done", "alice")
        with open(journal.path, "rb") as f:
            data = f.read()
        assert data.endswith(b"\n") and all(json.loads(l) for l in data.splitlines())


def test_a_journal_with_a_torn_last_line_takes_the_next_record_whole(tmp_path):
    """A kill -9 (or power loss) in the middle of an append leaves a torn last line."""
    journal = Journal(str(tmp_path))
    journal.record("claim", "alice")
    with open(journal.path, "ab") as f:
        f.write(b'{"event": "done", "us')
    Journal(str(tmp_path)).record("done", "bob", mode="copy")
    again = Journal(str(tmp_path))
    assert again.has("claim", "alice") and again.has("done", "bob")
    assert not again.has("done", "alice")


def test_the_target_disk_full_when_the_verified_users_are_recorded(tmp_path):
    """The cut-over verified every user, then the journal's "done" records do not fit:
    the run says so, records nobody, runs the resume hook; a re-run finishes."""
    src = str(tmp_path / "src")
    log = tmp_path / "hooks.log"
    with mounts.small_tmpfs(tmp_path / "target", "4m") as mnt:
        dst = str(mnt / "mail")
        _roots(tmp_path, src=src, dst=dst)
        journal = os.path.join(dst, mx.STATE_DIR, "journal.jsonl")
        script = tmp_path / "pad_and_fill.py"
        script.write_text(PAD_AND_FILL)
        hook = "echo quiesce >> %s && %s %s %s %s" % (log, sys.executable, script, journal,
                                                     mnt)
        r = migration.migrate(src, dst, force_copy=True, processes=1, quiesce=hook,
                              resume="echo resume >> %s" % log)
        assert not r.ok
        assert "journal" in (r.error or "") and "No space left on device" in r.error, \
            r.as_dict()
        assert all(u.verified and not u.done for u in r.users), r.as_dict()
        assert log.read_text() == "quiesce\nresume\n"
        assert _done(dst) == []
        os.unlink(os.path.join(str(mnt), "filler"))
        _assert_rerun_finishes(src, dst)


def test_the_target_disk_full_before_the_run_refuses_it(tmp_path):
    """No room for the journal's claims: the run stops before it writes into any user's
    target directory, with one clear error (no traceback)."""
    src = str(tmp_path / "src")
    with mounts.small_tmpfs(tmp_path / "target", "1m") as mnt:
        dst = str(mnt / "mail")
        _roots(tmp_path, src=src, dst=dst)
        mounts.fill(mnt, leave=0)
        with pytest.raises(migration.MigrateError, match="cannot write the journal.*No space"):
            migration.migrate(src, dst, force_copy=True, processes=1)
        assert not any(os.path.lexists(os.path.join(dst, u)) for u in USERS)
        os.unlink(os.path.join(str(mnt), "filler"))
        _assert_rerun_finishes(src, dst)
