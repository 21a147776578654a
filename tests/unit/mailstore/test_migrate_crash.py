"""Crash tests: SIGKILL a real `python -m mailstore migrate` at many points, change the
source (mail keeps arriving), run it again: the target must equal the source exactly, every
message once, nothing expunged brought back.

The kill comes from the executor itself (MAILSTORE_TEST_KILL_AFTER=N: SIGKILL at its N-th file
operation), so the points are exact and repeatable: between staging and rename, between a
rename and the metadata, inside directory clean-up, between journal records.
"""
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest

from tests.harness import maildir_trees as trees

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))))


def _run(src, dst, kill_after=None, extra=()):
    env = dict(os.environ)
    env.pop("MAILSTORE_TEST_KILL_AFTER", None)
    if kill_after is not None:
        env["MAILSTORE_TEST_KILL_AFTER"] = str(kill_after)
    return subprocess.run([sys.executable, "-m", "mailstore", "migrate", src, dst,
                           "--quiesce", "true", "--resume", "true"] + list(extra),
                          env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _source(src, rng):
    msgs = []
    for i in range(30):
        folder = rng.choice(trees.FOLDERS)
        sub = rng.choice(["new", "cur", "cur"])
        msgs.append((folder, sub, "%d.M%d.h,S=%d" % (i, i, 10 + i), rng.choice(["S", "RS", ""]),
                     (b"message %d " % i) * (10 + i), 1_600_000_000_000_000_000 + i * 10**9))
    md = trees.make_user(src, "alice", msgs)
    trees.make_user(src, "bob", msgs[:5])
    home = os.path.join(src, "alice")
    trees.write(os.path.join(home, "sieve", "main.sieve"), b"keep;")
    os.symlink("sieve/main.sieve", os.path.join(home, ".dovecot.sieve"))
    return md


def _traffic(md, rng, n):
    """Between the killed run and the re-run: expunge, re-flag, deliver."""
    for folder in trees.FOLDERS:
        cur = os.path.join(md, folder, "cur")
        names = sorted(os.listdir(cur))
        if names:
            os.unlink(os.path.join(cur, names[0]))
        if len(names) > 1:
            unique = names[-1].partition(":")[0]
            os.rename(os.path.join(cur, names[-1]), os.path.join(cur, unique + ":2,FS"))
        new = os.path.join(md, folder, "new")
        for name in sorted(os.listdir(new))[:1]:
            os.rename(os.path.join(new, name), os.path.join(cur, name + ":2,S"))
    trees.write(os.path.join(md, "new", "%d.M.late" % n), b"late mail %d" % n)
    trees.write(os.path.join(md, "dovecot-uidlist"), b"3 V1 N%d\n" % n,
                mtime_ns=1_700_000_000_000_000_000 + n)


def _check_exact(src, dst):
    for user in ("alice", "bob"):
        assert trees.snapshot(dst, user) == trees.snapshot(src, user), user
        by_key = trees.messages_by_key(dst, user)
        assert all(len(v) == 1 for v in by_key.values()), by_key
        assert by_key.keys() == trees.messages_by_key(src, user).keys()


@pytest.mark.slow
def test_kill_minus_nine_at_random_points_then_rerun():
    rng = random.Random(4)
    points = sorted(rng.sample(range(1, 140), 26))
    killed = 0
    for n in points:
        base = tempfile.mkdtemp(prefix="mailstore-crash-")
        try:
            src, dst = os.path.join(base, "src"), os.path.join(base, "dst")
            os.makedirs(dst)
            md = _source(src, random.Random(n))
            first = _run(src, dst, kill_after=n, extra=["--copy"])
            if first.returncode == -signal.SIGKILL:
                killed += 1
            else:
                assert first.returncode == 0, first.stdout + first.stderr
            if first.returncode != 0:
                _traffic(md, random.Random(n), n)
            second = _run(src, dst, extra=["--copy"])
            assert second.returncode == 0, (n, second.stdout + second.stderr)
            _check_exact(src, dst)
            assert not os.listdir(os.path.join(dst, ".mailstore-migrate", "tmp"))
        finally:
            shutil.rmtree(base)
    assert killed >= 20, "only %d of %d runs were killed" % (killed, len(points))


@pytest.mark.parametrize("n", [1, 2, 3])
def test_kill_during_same_filesystem_rename(tmp_path, n):
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    os.makedirs(dst)
    _source(src, random.Random(n))
    before = {u: trees.snapshot(src, u) for u in ("alice", "bob")}
    first = _run(src, dst, kill_after=n)
    assert first.returncode == -signal.SIGKILL
    second = _run(src, dst)
    assert second.returncode == 0, second.stdout + second.stderr
    for u in ("alice", "bob"):
        assert not os.path.exists(os.path.join(src, u))
        assert trees.snapshot(dst, u) == before[u]
