"""The migration's worker processes (mailstore.migrate.workers): users shared out across
processes, a worker's death costs only this run, the workers die with the migration."""
import os
import signal
import subprocess
import sys
import time

from mailstore import migrate as migration
from mailstore.migrate import passes
from mailstore.migrate import run as migrate_run

from tests.harness import maildir_trees as trees

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))))
USERS = ("alice", "bob", "carol", "dave")
MSGS = [("", "new", "1.M1.h,S=3", "", b"abc", 1_500_000_000_000_000_000),
        ("", "cur", "2.M2.h,S=5", "S", b"hello", 1_500_000_001_000_000_000),
        (".Sent", "cur", "3.M3.h", "RS", b"x" * 5000, 1_500_000_002_000_000_000)]


def _source(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    for i, user in enumerate(USERS):
        trees.make_user(str(src), user, MSGS[:i + 1])
    return str(src), str(dst)


def _recording_live_copy(monkeypatch, log, die_for=None, wait_for_both=False):
    """Wrap the per-user live copy: note which process copied whom (in a file: a worker's
    memory is its own); SIGKILL the worker that takes ``die_for``. With ``wait_for_both``
    a copy holds its user until two processes have taken one (30 s at most), so that the
    second worker takes a user however slowly it starts on a loaded machine."""
    real = passes.live_copy

    def _takers():
        with open(log) as f:
            return {line.split()[1] for line in f}

    def live_copy(source_root, target_root, r, *args):
        with open(log, "a") as f:
            f.write("%s %d\n" % (r.user, os.getpid()))
        if r.user == die_for:
            os.kill(os.getpid(), signal.SIGKILL)
        if wait_for_both:
            deadline = time.monotonic() + 30
            while len(_takers()) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
        else:
            time.sleep(0.3)          # long enough for the other worker to take a user
        return real(source_root, target_root, r, *args)
    monkeypatch.setattr(passes, "live_copy", live_copy)


def test_users_are_copied_by_several_workers_exactly_as_by_one(tmp_path, monkeypatch):
    src, dst = _source(tmp_path)
    one = tmp_path / "one"
    one.mkdir()
    log = tmp_path / "pids"
    _recording_live_copy(monkeypatch, log, wait_for_both=True)
    r = migration.migrate(src, dst, force_copy=True, processes=2, quiesce="true")
    assert r.ok, r.as_dict()
    pids = {line.split()[0]: int(line.split()[1]) for line in log.read_text().splitlines()}
    assert sorted(pids) == sorted(USERS)
    assert os.getpid() not in pids.values()
    assert len(set(pids.values())) == 2
    r1 = migration.migrate(src, str(one), force_copy=True, processes=1, quiesce="true")
    assert r1.ok
    for user in USERS:
        assert trees.snapshot(dst, user) == trees.snapshot(src, user) == \
            trees.snapshot(str(one), user)
    assert [u.as_dict() for u in r.users] == [u.as_dict() for u in r1.users]
    assert [u.messages for u in r.users] == [1, 2, 3, 3]


def test_a_dying_worker_costs_its_users_this_run_only(tmp_path, monkeypatch):
    src, dst = _source(tmp_path)
    log = tmp_path / "pids"
    hooks = tmp_path / "hooks"
    _recording_live_copy(monkeypatch, log, die_for="bob")
    r = migration.migrate(src, dst, force_copy=True, processes=2,
                          quiesce="echo quiesce >> %s" % hooks,
                          resume="echo resume >> %s" % hooks)
    assert not r.ok
    assert hooks.read_text() == "quiesce\nresume\n"        # delivery is resumed
    bob = next(u for u in r.users if u.user == "bob")
    assert not bob.done
    assert any("worker process killed by signal 9" in e for e in bob.errors), bob.errors
    for u in r.users:               # the other worker's users went through
        assert u.done or any("killed by signal 9" in e for e in u.errors), u.as_dict()
    assert any(u.done for u in r.users)
    monkeypatch.undo()
    r = migration.migrate(src, dst, force_copy=True, processes=2)
    assert r.ok, r.as_dict()
    for user in USERS:
        assert trees.snapshot(dst, user) == trees.snapshot(src, user)


def _recording_forks(monkeypatch):
    """Note the pid of every process os.fork makes (the workers; the hooks' shells are
    started by subprocess, which does not go through os.fork)."""
    forked = []
    real = os.fork

    def fork():
        pid = real()
        if pid:
            forked.append(pid)
        return pid
    monkeypatch.setattr(os, "fork", fork)
    return forked


def _assert_reaped(pids):
    """Each pid, once our child, is no longer: waitpid on a child that still runs (or has
    exited unreaped) answers (0, 0) or its status; only a reaped one raises."""
    for pid in pids:
        try:
            state = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue
        raise AssertionError("worker %d was left %s" % (
            pid, "running" if state == (0, 0) else "unreaped"))


def test_failing_quiesce_stops_the_workers_without_a_cut_over(tmp_path, monkeypatch):
    src, dst = _source(tmp_path)
    hooks = tmp_path / "hooks"
    forked = _recording_forks(monkeypatch)
    r = migration.migrate(src, dst, force_copy=True, processes=2,
                          quiesce="echo quiesce >> %s; exit 3" % hooks,
                          resume="echo resume >> %s" % hooks)
    monkeypatch.undo()
    assert not r.ok and "quiesce hook failed (exit 3)" in r.error
    assert hooks.read_text() == "quiesce\nresume\n"
    assert not any(u.done for u in r.users)
    assert len(forked) == 2, forked            # the workers were there to be stopped
    _assert_reaped(forked)
    assert migration.migrate(src, dst, force_copy=True, processes=2).ok


def _children(pid):
    with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
        return [int(p) for p in f.read().split()]


def _cmdline(pid):
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        return f.read()


def _running(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def test_kill_minus_nine_of_the_migration_kills_its_workers(tmp_path):
    src, dst = _source(tmp_path)
    started = tmp_path / "quiesced"
    proc = subprocess.Popen([sys.executable, "-m", "mailstore", "migrate", src, dst, "--copy",
                             "--quiesce", "touch %s; exec sleep 60" % started],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    hook, workers = [], []
    try:
        deadline = time.monotonic() + 60
        while not started.exists():        # the workers wait for the cut-over now
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        children = _children(proc.pid)
        # a worker is a fork: it has the migration's command line, the hook's shell has not
        workers = [p for p in children if _cmdline(p) == _cmdline(proc.pid)]
        hook = [p for p in children if p not in workers]
        assert len(workers) == 2, children
        # stopped, they cannot notice the closed pipes either: only PR_SET_PDEATHSIG's
        # SIGKILL (which works on a stopped process) ends them
        for p in workers:
            os.kill(p, signal.SIGSTOP)
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 10
        while any(_running(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_running(p) for p in workers)
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in hook + workers:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_the_largest_mailboxes_are_handed_out_first(tmp_path, monkeypatch):
    """So that the workers finish together: the users taken last are the small ones."""
    src, dst = _source(tmp_path)
    big = [("" if i % 2 else ".Sent", "cur", "%d.M%d.h" % (i, i), "S", b"m",
            1_500_000_000_000_000_000) for i in range(400)]
    trees.make_user(src, "zed", big)
    assert migrate_run._size_hint(src, "zed") > migrate_run._size_hint(src, "dave") > 0
    log = tmp_path / "pids"
    _recording_live_copy(monkeypatch, log)
    assert migration.migrate(src, dst, force_copy=True, processes=2).ok
    first_two = [line.split()[0] for line in log.read_text().splitlines()[:2]]
    assert "zed" in first_two


def test_mail_flows_again_before_the_workers_have_exited(tmp_path, monkeypatch):
    """A worker's exit (the kernel freeing its memory) does not hold up the resume hook:
    each worker here stays alive after its report until the resume hook has run."""
    from mailstore.migrate import workers as mw
    src, dst = _source(tmp_path)
    main = os.getpid()
    resumed, seen = tmp_path / "resumed", tmp_path / "seen"
    real_send = mw._send

    def send(fd, obj):
        real_send(fd, obj)
        if os.getpid() != main and isinstance(obj, tuple):     # a cut-over report
            for _ in range(200):                                # 10 s at most
                if resumed.exists():
                    with open(seen, "a") as f:
                        f.write("%d\n" % os.getpid())
                    return
                time.sleep(0.05)
    monkeypatch.setattr(mw, "_send", send)
    r = migration.migrate(src, dst, force_copy=True, processes=2, quiesce="true",
                          resume="touch %s" % resumed)
    assert r.ok, r.as_dict()
    assert len(seen.read_text().split()) == 2
