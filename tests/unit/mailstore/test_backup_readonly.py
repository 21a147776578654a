"""A read-only repository (an off-host copy, a read-only backup disk, a filesystem snapshot):
restore, verify, list, find and status work from it; run, prune and init fail with one line."""
import os
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from mailstore import backup
from mailstore.cli import main

from tests.harness import NOBODY, as_nobody, make_tree, public_tmpdir, snapshot_tree

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mount(8) and nobody need root")


def _reads_everything(repo, src, dst, key=None):
    """What an operator does with a copy: list, status, find, verify (with data), restore;
    returns the restored tree."""
    snaps = backup.list_snapshots(repo, key_file=key)
    assert len(snaps) == 1
    assert backup.status(repo)["snapshots"] == 1
    assert backup.find(repo, key_file=key, user="alice")
    assert backup.verify(repo, read_data=True, key_file=key)["ok"]
    assert backup.verify(repo, key_file=key, snapshot="latest")["ok"]
    result = backup.restore(repo, "latest", dst, key_file=key)
    assert not result["errors"]
    return snapshot_tree(dst)


def _writes_fail_with_one_line(repo, src, key=None):
    runner = CliRunner()
    outputs = []
    for args in (["run", repo, src], ["prune", repo, "--keep-last", "1"]):
        r = runner.invoke(main, ["backup"] + args + (["--key-file", key] if key else []))
        assert r.exit_code == 1, r.output
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("mailstore backup: error: "), r.output
        assert "read-only" in lines[0], lines[0]
        outputs.append(lines[0])
    return outputs


@needs_root
def test_a_read_only_bind_mount_of_the_repository_is_restored_from(tmp_path):
    key, repo, src = tmp_path / "key", tmp_path / "repo", tmp_path / "src"
    make_tree(src)
    backup.init(repo, key_file=key)
    backup.run(repo, src, key_file=key)
    # no lock file yet on the copy: a repository copied off-host before any verify/restore
    if os.path.exists(repo / "lock"):
        os.unlink(repo / "lock")
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "--bind", str(repo), str(ro)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], check=True)
        with pytest.raises(OSError):
            open(ro / "probe", "w")
        before = snapshot_tree(ro, skip_index=False)
        assert _reads_everything(str(ro), src, tmp_path / "dst", str(key)) == snapshot_tree(src)
        _writes_fail_with_one_line(str(ro), str(src), str(key))
        r = CliRunner().invoke(main, ["backup", "init", str(ro / "new")])
        assert r.exit_code == 1 and r.output.count("\n") == 1, r.output
        assert "error: Read-only file system" in r.output
        assert snapshot_tree(ro, skip_index=False) == before
        # with a lock file (a repository that has been used), the shared lock still works
        open(repo / "lock", "w").close()
        assert _reads_everything(str(ro), src, tmp_path / "dst2", str(key)) == snapshot_tree(src)
    finally:
        subprocess.run(["umount", str(ro)], check=True)


@needs_root
def test_a_repository_whose_files_are_read_only_for_the_user_is_restored_from(tmp_path):
    base = public_tmpdir("mailstore-readonly-")
    try:
        repo, src = os.path.join(base, "repo"), os.path.join(base, "src")
        make_tree(src, owner=(NOBODY, NOBODY))
        backup.init(repo)
        backup.run(repo, src)
        backup.verify(repo)                 # leaves REPO/lock behind, owned by root
        for dirpath, dirnames, files in os.walk(repo):
            os.chmod(dirpath, 0o755)
            for f in files:
                os.chmod(os.path.join(dirpath, f), 0o644)
        os.chown(base, NOBODY, NOBODY)
        expected = snapshot_tree(src)

        def as_user():
            tree = _reads_everything(repo, src, os.path.join(base, "dst"))
            return {k: v[:2] for k, v in tree.items()}, _writes_fail_with_one_line(repo, src)
        restored, errors = as_nobody(as_user)
        assert all("Permission denied" in e for e in errors), errors
        assert restored == {k: v[:2] for k, v in expected.items()}
    finally:
        shutil.rmtree(base)
