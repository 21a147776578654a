"""The snapshot's messages digest taken in a process of its own (rows_digest.py, from
PROCESS_MIN_ROWS rows on; lowered to 0 here): the digest recorded is the one verify takes
from the catalog, and a process that fails or answers nonsense changes nothing but speed."""
import pytest

from backup_fixtures import cli
from mailstore import backup
from mailstore.backup import rows_digest

from tests.harness import make_tree, snapshot_tree


@pytest.fixture
def repo(tmp_path, monkeypatch):
    repo, key, src = str(tmp_path / "repo"), str(tmp_path / "key"), str(tmp_path / "src")
    backup.init(repo, key_file=key)
    make_tree(src)
    monkeypatch.setattr(rows_digest, "PROCESS_MIN_ROWS", 0)
    return repo, key, src


def started(monkeypatch):
    """[process or None (it could not be given its job: it had exited), ...] of each start,
    with its exit status once result() waited for it."""
    procs = []
    real = rows_digest._start

    def spy(cache):
        procs.append(None)
        procs[-1] = real(cache)
        return procs[-1]
    monkeypatch.setattr(rows_digest, "_start", spy)
    return procs


def runs_verify_and_restore(repo, key, src, target, python=None):
    """Two runs (their digests taken by `python`, if given, as the process's interpreter),
    then verify and restore as usual."""
    with pytest.MonkeyPatch.context() as m:
        if python:
            m.setattr(rows_digest.sys, "executable", python)
        backup.run(repo, src, key_file=key)
        backup.run(repo, src, key_file=key)
    r = cli("verify", repo, "--read-data", "--key-file", key)
    assert r.returncode == 0, r.stderr
    backup.restore(repo, "latest", target, key_file=key)
    assert snapshot_tree(target) == snapshot_tree(src)


def test_the_digest_the_process_takes_is_the_one_verify_takes(repo, tmp_path, monkeypatch):
    repo, key, src = repo
    procs = started(monkeypatch)
    runs_verify_and_restore(repo, key, src, tmp_path / "dst")
    # it was the processes' answer that was recorded: they ran, and answered
    assert len(procs) == 2 and [p.returncode for p in procs] == [0, 0]


@pytest.mark.parametrize("python", ["/bin/false", "/bin/echo"])
def test_a_process_that_fails_or_answers_nonsense_changes_nothing(repo, tmp_path, monkeypatch,
                                                                   python):
    repo, key, src = repo
    procs = started(monkeypatch)
    runs_verify_and_restore(repo, key, src, tmp_path / "dst", python)
    assert len(procs) == 2
