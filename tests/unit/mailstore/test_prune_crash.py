"""prune, the only code that deletes backup data, interrupted and failing.

kill -9 at each step boundary (inside the pack rewrite, after the new packs are durable,
inside the catalog switch before its commit, after the switch, between the unlinks), and
faults inside the pack rewrite (a real ENOSPC from a small tmpfs, EIO on read and on fsync).
After each: `verify --read-data` passes, every snapshot still listed restores bit-exact, and
a re-run of prune reaches exactly the end state of an uninterrupted prune of the same
repository (same snapshots, same objects, same number of packs, no stray file).
"""
import errno
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from mailstore import backup
from mailstore.backup import objects
from mailstore.backup.repository import Repository

from tests.harness import make_tree, run_clock, snapshot_tree, write
import mounts

DAYS = 6
KEEP_LAST = 2

# Runs prune in a child that SIGKILLs itself at a named point: real kill -9 semantics (no
# cleanup, an uncommitted SQLite transaction and open pack files left behind).
KILLER = r"""
import importlib, os, signal, sys
from mailstore.backup import catalog, objects
P = importlib.import_module("mailstore.backup.prune")   # the face's `prune` is the function
point, repo, keep_last = sys.argv[1], sys.argv[2], int(sys.argv[3])
def die():
    os.kill(os.getpid(), signal.SIGKILL)
if point == "mid-rewrite":              # one new pack sealed (durable, in packs/), more to come
    orig_seal = objects.PackWriter.seal
    def seal(self):
        was_open = self._file is not None
        orig_seal(self)
        if was_open:
            die()
    objects.PackWriter.seal = seal
elif point in ("before-switch", "mid-switch"):
    orig_rewrite = P._rewrite
    def rewrite(*a):
        result = orig_rewrite(*a)
        if point == "before-switch":    # every new pack durable, the catalog not yet touched
            die()
        orig_exit = catalog.transaction.__exit__
        def exit_(self, et, e, tb):     # every statement of the switch done, not committed
            if et is None:
                die()
            return orig_exit(self, et, e, tb)
        catalog.transaction.__exit__ = exit_
        return result
    P._rewrite = rewrite
elif point in ("after-switch", "mid-unlink"):
    orig_path = P.pack_path             # prune names each old pack just before unlinking it
    calls = [0]
    def pack_path(*a):
        calls[0] += 1
        if calls[0] == (1 if point == "after-switch" else 3):
            die()
        return orig_path(*a)
    P.pack_path = pack_path
elif point == "before-vacuum":          # every old pack unlinked, the catalog not compacted
    from mailstore.backup import repository
    orig_lock = repository.Repository.lock
    def lock(self, *a, **k):
        result = orig_lock(self, *a, **k)
        self.db.set_trace_callback(lambda sql: die() if sql.strip() == "VACUUM" else None)
        return result
    repository.Repository.lock = lock
P.prune(repo, keep_last=keep_last)
print("finished")
"""
POINTS = ["mid-rewrite", "before-switch", "mid-switch", "after-switch", "mid-unlink",
          "before-vacuum"]


def _mail(path, rng, size):
    data = b"Subject: x\r\n\r\n" + bytes(rng.getrandbits(8) for _ in range(size))
    # an mtime of its own: a backup run takes a file with the inode, size and mtime of one
    # it saw before as that file renamed (and these files' inodes are reused day by day)
    write(path, data, 1_800_000_000_000_000_000 + rng.getrandbits(40))


def _build(repo, src):
    """DAYS daily snapshots. Each day brings mail that stays (so the day's packs stay partly
    live and must be rewritten) and mail gone the next day, some of it big enough to fill
    packs of its own (which become wholly dead). Returns [(id, tree)] oldest first."""
    backup.init(repo, pack_size=16 * 1024)
    make_tree(src)
    rng = random.Random(7)
    clock = run_clock([1_790_000_000 + d * 86400 for d in range(DAYS)])
    inbox = os.path.join(str(src), "alice", "Maildir", "cur")
    snaps = []
    for day in range(DAYS):
        once = []
        for i in range(3):
            _mail(os.path.join(inbox, "18{:02d}{:02d}.M1P1.stay:2,S".format(day, i)), rng, 3000)
            p = os.path.join(inbox, "18{:02d}{:02d}.M1P1.once:2,S".format(day, i))
            _mail(p, rng, 3000)
            once.append(p)
        for i in range(3):
            p = os.path.join(inbox, "19{:02d}{:02d}.M1P1.big:2,S".format(day, i))
            _mail(p, rng, 20 * 1024)
            once.append(p)
        snaps.append((backup.run(repo, src, now=clock)["id"], snapshot_tree(src)))
        for p in once:
            os.unlink(p)
    return snaps


def _state(repo):
    """What prune's end state is judged by; also checks that no stray file is left."""
    with Repository(repo) as r:
        ids = sorted(s for s, in r.db.execute("SELECT id FROM snapshots"))
        objs = sorted(o for o, in r.db.execute("SELECT id FROM objects"))
        known = {n for n, in r.db.execute("SELECT name FROM packs")}
        messages = r.db.execute("SELECT count(*) FROM messages").fetchone()[0]
    on_disk = {f[:-5] for _d, _s, files in os.walk(os.path.join(repo, "packs")) for f in files}
    assert on_disk == known, "stray or missing pack files"
    assert os.listdir(os.path.join(repo, "tmp")) == []
    return {"snapshots": ids, "objects": objs, "packs": len(known), "messages": messages}


def _assert_intact(repo, expected, tmp_path):
    """Listed snapshots are exactly ``expected`` (a set of ids); verify --read-data passes;
    each listed snapshot restores bit-exact."""
    listed = {s["id"] for s in backup.list_snapshots(repo)}
    assert listed == set(expected)
    assert backup.verify(repo, read_data=True)["ok"]
    for sid in sorted(listed):
        dst = tmp_path / "check-{}-{}".format(sid, time.monotonic_ns())
        backup.restore(repo, sid, dst)
        assert snapshot_tree(dst) == expected[sid], sid
        shutil.rmtree(dst)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """One repository before prune, and the end state of an uninterrupted prune of a copy."""
    base = tmp_path_factory.mktemp("prune")
    repo = str(base / "repo")
    snaps = _build(repo, base / "src")
    ref = str(base / "reference")
    shutil.copytree(repo, ref)
    before = _state(ref)
    result = backup.prune(ref, keep_last=KEEP_LAST)
    after = _state(ref)
    # the repository really exercises both kinds of freeing, and the counts add up
    assert result["packs_deleted"] >= 3 and result["packs_rewritten"] >= 3, result
    assert len(result["remove"]) == DAYS - KEEP_LAST
    assert len(after["objects"]) == len(before["objects"]) - result["objects_removed"]
    assert after["packs"] < before["packs"] - result["packs_deleted"]
    return repo, dict(snaps), dict(snaps[-KEEP_LAST:]), after


@pytest.fixture
def repo(pristine, tmp_path):
    path = str(tmp_path / "repo")
    shutil.copytree(pristine[0], path)
    return path


def test_an_uninterrupted_prune_keeps_what_it_should(pristine, tmp_path):
    _repo, _all, kept, after = pristine
    ref = os.path.join(os.path.dirname(_repo), "reference")
    _assert_intact(ref, kept, tmp_path)
    assert after["snapshots"] == sorted(kept)
    again = backup.prune(ref, keep_last=KEEP_LAST)
    assert (again["objects_removed"], again["packs_deleted"], again["packs_rewritten"]) == \
        (0, 0, 0)
    assert _state(ref) == after


@pytest.mark.parametrize("point", POINTS)
def test_kill_9_at_each_step_then_rerun(pristine, repo, tmp_path, point):
    _repo, every, kept, after = pristine
    child = subprocess.run([sys.executable, "-c", KILLER, point, repo, str(KEEP_LAST)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert b"finished" not in child.stdout
    # before the commit every snapshot is still there; from the commit on only the kept ones
    switched = point in ("after-switch", "mid-unlink", "before-vacuum")
    _assert_intact(repo, kept if switched else every, tmp_path)
    if point == "mid-rewrite":
        # the dead run's new pack is on disk, unknown to the catalog: garbage
        with Repository(repo) as r:
            known = {n for n, in r.db.execute("SELECT name FROM packs")}
        on_disk = {f[:-5] for _d, _s, fs in os.walk(os.path.join(repo, "packs")) for f in fs}
        assert on_disk - known
    backup.prune(repo, keep_last=KEEP_LAST)
    assert _state(repo) == after
    _assert_intact(repo, kept, tmp_path)


def _fails_cleanly(repo, every, tmp_path, exc, match):
    with pytest.raises(exc, match=match):
        backup.prune(repo, keep_last=KEEP_LAST)
    _assert_intact(repo, every, tmp_path)       # nothing forgotten, nothing damaged
    with Repository(repo) as r:
        known = {n for n, in r.db.execute("SELECT name FROM packs")}
    on_disk = {f[:-5] for _d, _s, fs in os.walk(os.path.join(repo, "packs")) for f in fs}
    assert on_disk == known, "the failed prune left new packs behind"
    assert os.listdir(os.path.join(repo, "tmp")) == []


def test_eio_reading_an_old_pack_during_the_rewrite(pristine, repo, tmp_path, monkeypatch):
    # Injected at a seam: a real read error needs a failing block device (dm-error /
    # dm-flakey), which the test machine does not have. The third record read fails.
    _repo, every, _kept, after = pristine
    orig, calls = objects.PackReader.read, [0]

    def read(self, *a):
        calls[0] += 1
        if calls[0] == 3:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return orig(self, *a)
    with monkeypatch.context() as m:
        m.setattr(objects.PackReader, "read", read)
        _fails_cleanly(repo, every, tmp_path, OSError, "Input/output error")
    backup.prune(repo, keep_last=KEEP_LAST)
    assert _state(repo) == after


def test_eio_on_fsync_of_a_new_pack(pristine, repo, tmp_path, monkeypatch):
    # Injected at a seam (why: as above; a lost write-back shows up as EIO from fsync). The
    # first new pack seals, the second one's fsync fails: the run stops with two new packs'
    # worth of garbage, which it must not leave behind.
    _repo, every, _kept, after = pristine
    orig, calls = os.fsync, [0]

    def fsync(fd):
        if os.readlink("/proc/self/fd/%d" % fd).endswith(".pack"):
            calls[0] += 1
            if calls[0] == 2:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
        return orig(fd)
    with monkeypatch.context() as m:
        m.setattr(os, "fsync", fsync)
        _fails_cleanly(repo, every, tmp_path, OSError, "Input/output error")
    assert calls[0] == 2
    backup.prune(repo, keep_last=KEEP_LAST)
    assert _state(repo) == after


def test_enospc_during_the_rewrite_then_room_is_made(pristine, tmp_path):
    """A real full disk: the repository on a small tmpfs, filled up so that the rewrite's
    second new pack does not fit."""
    _repo, every, _kept, after = pristine
    with mounts.small_tmpfs(tmp_path / "small", "8m") as mnt:
        repo = str(mnt / "repo")
        shutil.copytree(_repo, repo)
        filler = mounts.fill(mnt, leave=24 * 1024)
        free = mounts.free_bytes(mnt)
        _fails_cleanly(repo, every, tmp_path, OSError, "No space left on device")
        assert mounts.free_bytes(mnt) >= free      # the failed prune gave its space back
        os.unlink(filler)
        backup.prune(repo, keep_last=KEEP_LAST)
        assert _state(repo) == after
        _assert_intact(repo, pristine[2], tmp_path)


def test_enospc_in_the_catalog_switch(pristine, tmp_path):
    """A real full disk one step later: the new packs fit, the catalog's transaction does
    not (SQLite needs room for its journal and the changed pages)."""
    _repo, every, _kept, after = pristine
    with mounts.small_tmpfs(tmp_path / "small", "8m") as mnt:
        repo = str(mnt / "repo")
        shutil.copytree(_repo, repo)
        # room for exactly the new packs (whole pages, as tmpfs counts), from the reference
        ref = os.path.join(os.path.dirname(_repo), "reference")
        with Repository(ref) as r:
            sizes = dict(r.db.execute("SELECT name, size FROM packs"))
        with Repository(repo) as r:
            old = {n for n, in r.db.execute("SELECT name FROM packs")}
        page = os.statvfs(str(mnt)).f_frsize
        room = sum(-(-size // page) * page for name, size in sizes.items() if name not in old)
        filler = mounts.fill(mnt, leave=room)
        free = mounts.free_bytes(mnt)
        _fails_cleanly(repo, every, tmp_path, sqlite3.OperationalError,
                       "database or disk is full")
        assert mounts.free_bytes(mnt) >= free      # the new packs were given back
        os.unlink(filler)
        backup.prune(repo, keep_last=KEEP_LAST)
        assert _state(repo) == after
        _assert_intact(repo, pristine[2], tmp_path)
