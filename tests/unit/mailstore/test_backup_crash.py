"""Interrupted runs: kill -9 at chosen points and at a random moment, a full disk, two runs.

Whatever happens, no unfinished snapshot is ever listed, every earlier snapshot still verifies
and restores bit-exact, and the next run cleans up and succeeds.
"""
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from mailstore import backup
from mailstore.backup.repository import Repository

from tests.harness import make_tree, snapshot_tree, write

HERE = os.path.dirname(os.path.abspath(__file__))

# Runs `backup.run` in a child that SIGKILLs itself at a chosen point: real kill -9 semantics
# (no cleanup, no atexit, open files and a half-written SQLite transaction left behind).
KILLER = r"""
import os, signal, sys
from mailstore.backup import feed, newobjects, objects, snapshot, catalog
point, repo, src = sys.argv[1], sys.argv[2], sys.argv[3]
def die():
    os.kill(os.getpid(), signal.SIGKILL)
if point == "mid-pack":
    orig_add = objects.PackWriter.add
    calls = [0]
    def add(self, *a, **k):
        orig_add(self, *a, **k)
        calls[0] += 1
        if calls[0] >= 25 and self._file is not None:
            self._file.flush()      # half a pack on disk in tmp/
            die()
    objects.PackWriter.add = add
elif point == "after-seal":
    orig_sealed = newobjects.NewObjects._sealed
    seals = [0]
    def sealed(self, *a):
        orig_sealed(self, *a)
        seals[0] += 1
        if seals[0] == 3:
            die()
    newobjects.NewObjects._sealed = sealed
elif point == "mid-commit":
    orig_commit = feed.Feed.commit
    def commit(self, source, finished):
        class Dying:
            def __init__(self, db): self.db = db
            def __getattr__(self, name): return getattr(self.db, name)
            # the files' rows go in by either call (catalog.insert_many)
            def executemany(self, sql, rows):
                result = self.db.executemany(sql, rows)
                if sql.startswith("INSERT INTO files"):
                    die()
                return result
            def execute(self, sql, *args):
                result = self.db.execute(sql, *args)
                if sql.startswith("INSERT INTO files"):
                    die()
                return result
        self.db = Dying(self.db)
        return orig_commit(self, source, finished)
    feed.Feed.commit = commit
snapshot.run(repo, src)
print("finished")
"""


def _big_messages(root, count, size=24 * 1024, seed=1, user="carol"):
    rng = random.Random(seed)
    for i in range(count):
        data = b"Subject: big %d\r\n\r\n" % i + bytes(rng.getrandbits(8) for _ in range(size))
        write(os.path.join(root, user, "Maildir/cur",
                           "17100{:05d}.M{}P1.big,S={}:2,S".format(i, i, len(data))),
              data, 1_700_000_000_000_000_000 + i)


def _assert_consistent(repo, good_ids, expected_trees, tmp_path):
    """Only the good snapshots are listed; each verifies and restores exactly."""
    assert [s["id"] for s in backup.list_snapshots(repo)] == good_ids
    assert backup.verify(repo, read_data=True)["ok"]
    for sid, tree in zip(good_ids, expected_trees):
        dst = tmp_path / "check-{}-{}".format(sid, time.monotonic_ns())
        backup.restore(repo, sid, dst)
        assert snapshot_tree(dst) == tree


@pytest.mark.parametrize("point", ["mid-pack", "after-seal", "mid-commit"])
def test_kill_9_at_a_chosen_point_leaves_the_repository_consistent(tmp_path, point):
    repo = str(tmp_path / "repo")
    backup.init(repo, pack_size=100 * 1024)
    make_tree(tmp_path / "src")
    first = backup.run(repo, tmp_path / "src")["id"]
    first_tree = snapshot_tree(tmp_path / "src")
    _big_messages(tmp_path / "src", 40)
    child = subprocess.run([sys.executable, "-c", KILLER, point, repo, str(tmp_path / "src")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert b"finished" not in child.stdout
    _assert_consistent(repo, [first], [first_tree], tmp_path)
    if point == "mid-pack":
        assert os.listdir(os.path.join(repo, "tmp"))           # the dead run's half pack
    second = backup.run(repo, tmp_path / "src")
    assert os.listdir(os.path.join(repo, "tmp")) == []       # cleaned up by the next run
    _assert_consistent(repo, [first, second["id"]], [first_tree,
                                                      snapshot_tree(tmp_path / "src")], tmp_path)
    with Repository(repo) as r:
        known = {n for n, in r.db.execute("SELECT name FROM packs")}
    on_disk = {f[:-5] for _d, _s, files in os.walk(os.path.join(repo, "packs")) for f in files}
    assert on_disk == known                                  # no stray pack survives


def test_kill_9_of_the_cli_at_a_random_moment(tmp_path):
    repo = str(tmp_path / "repo")
    backup.init(repo, pack_size=32 * 1024)
    make_tree(tmp_path / "src")
    first = backup.run(repo, tmp_path / "src")["id"]
    first_tree = snapshot_tree(tmp_path / "src")
    _big_messages(tmp_path / "src", 400)
    proc = subprocess.Popen([sys.executable, "-m", "mailstore", "backup", "run", repo,
                             str(tmp_path / "src")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    packs = os.path.join(repo, "packs")
    deadline = time.monotonic() + 60
    # wait until the run is well under way (several packs written), then kill it
    while time.monotonic() < deadline and proc.poll() is None:
        if sum(len(f) for _d, _s, f in os.walk(packs)) >= 4:
            break
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    _assert_consistent(repo, [first], [first_tree], tmp_path)
    second = backup.run(repo, tmp_path / "src")
    _assert_consistent(repo, [first, second["id"]],
                       [first_tree, snapshot_tree(tmp_path / "src")], tmp_path)


@pytest.fixture
def small_filesystem(tmp_path):
    """A 3 MiB tmpfs, so that a run meets ENOSPC for real."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)],
                       check=True, stderr=subprocess.PIPE)
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip("cannot mount a small tmpfs to provoke ENOSPC (needs root / CAP_SYS_ADMIN;"
                    " running as uid {}): {}".format(
                        os.geteuid(), getattr(e, "stderr", b"").decode().strip() or e))
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def test_a_full_disk_mid_run_leaves_earlier_snapshots_intact(tmp_path, small_filesystem):
    repo = str(small_filesystem / "repo")
    backup.init(repo, pack_size=64 * 1024)
    make_tree(tmp_path / "src")
    first = backup.run(repo, tmp_path / "src")["id"]
    first_tree = snapshot_tree(tmp_path / "src")
    _big_messages(tmp_path / "src", 160)             # ~4 MiB of incompressible mail
    with pytest.raises(backup.BackupError, match="no space left on device|disk is full"):
        backup.run(repo, tmp_path / "src")
    _assert_consistent(repo, [first], [first_tree], tmp_path)
    # the failed run gave back all the space it took
    assert _used(small_filesystem) < 512 * 1024
    # with fewer big messages the next run fits, and succeeds
    for name in sorted(os.listdir(tmp_path / "src/carol/Maildir/cur"))[40:]:
        os.unlink(tmp_path / "src/carol/Maildir/cur" / name)
    second = backup.run(repo, tmp_path / "src")
    assert os.listdir(os.path.join(repo, "tmp")) == []
    _assert_consistent(repo, [first, second["id"]], [first_tree, snapshot_tree(tmp_path / "src")],
                       tmp_path)


def _used(mount):
    st = os.statvfs(mount)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def test_a_second_run_fails_clearly_while_one_is_running(tmp_path):
    repo = str(tmp_path / "repo")
    backup.init(repo)
    make_tree(tmp_path / "src")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from mailstore.backup.repository import Repository\n"
        "r = Repository(sys.argv[1]); r.lock()\n"
        "print('locked', flush=True); time.sleep(30)\n"), repo],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        cli = subprocess.run([sys.executable, "-m", "mailstore", "backup", "run", repo,
                              str(tmp_path / "src")], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, timeout=60)
        assert cli.returncode == 1
        assert "in use by another mailstore process (pid {}".format(holder.pid) in cli.stderr
        assert backup.status(repo)["snapshots"] == 0
    finally:
        holder.kill()
        holder.wait()
    assert backup.run(repo, tmp_path / "src", wait=5)["messages"] == 16
