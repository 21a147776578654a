"""check backup: against real repositories made with mailstore.backup, aged by setting the
snapshot and verification times in their catalog (what mailstore.backup.status reads)."""
import os
import shutil
import sqlite3
import time

import pytest

from tests.harness import make_tree, pack_files
from check_fixtures import check, perfdata
from mailstore import backup


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A repository with 3 snapshots of the fixture tree, made once and copied per test."""
    base = tmp_path_factory.mktemp("template")
    make_tree(str(base / "src"))
    backup.init(str(base / "repo"))
    ids = [backup.run(str(base / "repo"), str(base / "src"))["id"] for _ in range(3)]
    return base / "repo", ids[-1]


@pytest.fixture
def real_repo(template, tmp_path):
    """make(age=, verify_age=, snapshots=, verified=) -> path of a repository in that state."""
    source, _last = template

    def make(age=3600, verify_age=86400, snapshots=3, verified=True):
        repo = tmp_path / "repo"
        shutil.copytree(str(source), str(repo))
        if verified:
            assert backup.verify(str(repo))["ok"]
        now = time.time()
        db = sqlite3.connect(str(repo / "catalog.sqlite"))
        with db:
            db.execute("DELETE FROM snapshots WHERE seq NOT IN (SELECT seq FROM snapshots"
                       " ORDER BY seq DESC LIMIT ?)", (snapshots,))
            if age is not None:     # (the catalog then no longer matches its checksums)
                db.execute("UPDATE snapshots SET finished = ? WHERE seq = (SELECT max(seq)"
                           " FROM snapshots)", (now - age,))
            db.execute("UPDATE verifications SET time = ?", (now - verify_age,))
        db.close()
        return repo
    return make


def test_ok_reports_snapshot_age_count_and_verify(template, real_repo):
    repo = real_repo()
    code, line, m = check("backup", "--repo", repo)
    assert code == 0, line
    assert "last snapshot {} 1.0h ago".format(template[1]) in line and "3 snapshots" in line
    perf = perfdata(m)
    assert 3599 <= perf["age"][0] <= 3630 and perf["age"][1:4] == ("s", "93600", "180000")
    assert perf["snapshots"][:4] == (3, "", "", "1:")
    assert perf["damaged"][0] == 0
    assert perf["verify_age"][2] == "691200"


@pytest.mark.parametrize("age, code", [(93500, 0), (93700, 1), (179900, 1), (180100, 2)])
def test_snapshot_age_edges(real_repo, age, code):
    got, line, m = check("backup", "--repo", real_repo(age=age))
    assert got == code, line
    if code:
        assert "last complete snapshot is" in line


def test_no_complete_snapshot_is_critical(real_repo):
    code, line, m = check("backup", "--repo", real_repo(snapshots=0, verified=False))
    assert code == 2 and "no complete snapshot" in line


def test_failed_verify_is_critical(real_repo):
    repo = real_repo(verified=False, age=None)
    packs = pack_files(repo)
    os.truncate(packs[0], 10)
    result = backup.verify(str(repo), read_data=True)
    assert not result["ok"]
    damaged = len(result["damaged"])
    code, line, m = check("backup", "--repo", repo)
    assert code == 2 and "found {} damaged".format(damaged) in line
    assert perfdata(m)["damaged"][0] == damaged


def test_never_verified_warns(real_repo):
    code, line, m = check("backup", "--repo", real_repo(verified=False))
    assert code == 1 and "never verified" in line


@pytest.mark.parametrize("vage, opts, code", [
    (691100, [], 0), (691300, [], 1), (691300, ["--verify-critical", "600000"], 2)])
def test_verify_age_edges(real_repo, vage, opts, code):
    assert check("backup", "--repo", real_repo(verify_age=vage), *opts)[0] == code


def test_snapshot_count_thresholds(real_repo):
    assert check("backup", "--repo", real_repo(snapshots=2), "--snapshots-warning", "7:")[0] == 1


def test_an_unreadable_catalog_is_unknown(real_repo):
    repo = real_repo()
    (repo / "catalog.sqlite").write_bytes(b"not a database at all, " * 100)
    code, line, m = check("backup", "--repo", repo)
    assert code == 3 and "cannot read the catalog" in line and len(line.splitlines()) == 1


# --- real repositories -------------------------------------------------------------------
def test_missing_repository_is_unknown(tmp_path):
    code, line, m = check("backup", "--repo", tmp_path / "nope")
    assert code == 3 and "nope" in line


def test_fresh_repository_without_snapshots_is_critical(tmp_path):
    backup.init(str(tmp_path / "repo"))
    code, line, m = check("backup", "--repo", tmp_path / "repo")
    assert code == 2 and "no complete snapshot" in line
    assert perfdata(m)["snapshots"][0] == 0


def _backup_cli(*args):
    from click.testing import CliRunner
    from mailstore.cli import main
    result = CliRunner().invoke(main, ["backup"] + [str(a) for a in args])
    return result.exit_code, result.output


def test_real_repository_through_its_life(tmp_path):
    """init, run, verify, damage — made with `mailstore backup`, judged by `check backup`."""
    repo, key = tmp_path / "repo", tmp_path / "key"
    assert _backup_cli("init", repo, "--key-file", key, "--new-key")[0] == 0
    make_tree(str(tmp_path / "src"))
    code, out = _backup_cli("run", repo, tmp_path / "src", "--key-file", key)
    assert code == 0, out
    snapshot_id = out.split()[-1]

    code, line, m = check("backup", "--repo", repo, "--key-file", key)
    assert code == 1 and "never verified" in line           # a backup nobody checked
    assert "last snapshot %s" % snapshot_id in line
    perf = perfdata(m)
    assert perf["snapshots"][0] == 1 and perf["age"][0] < 120

    assert _backup_cli("verify", repo, "--key-file", key)[0] == 0
    code, line, m = check("backup", "--repo", repo, "--key-file", key)
    assert code == 0, line
    assert "verified" in line and perfdata(m)["damaged"][0] == 0

    # a night without a backup: the thresholds are about the snapshot's finish time
    code, line, m = check("backup", "--repo", repo, "-w", "~:0", "-c", "~:0")
    assert code == 0
    code, line, m = check("backup", "--repo", repo, "-w", "@0:3600")
    assert code == 1 and "last complete snapshot is" in line

    # a damaged pack: the next verify fails and the check turns CRITICAL
    packs = pack_files(repo)
    os.truncate(packs[0], 10)
    code, out = _backup_cli("verify", repo, "--key-file", key)
    assert code == 1
    code, line, m = check("backup", "--repo", repo, "--key-file", key)
    assert code == 2 and "damaged" in line and perfdata(m)["damaged"][0] >= 1


def test_the_repository_is_named_as_for_mailstore_backup(monkeypatch, template, tmp_path):
    """REPO, -r/--repo or MAILSTORE_REPOSITORY; --key-file or MAILSTORE_KEY_FILE."""
    for name in "abcd":
        shutil.copytree(str(template[0]), str(tmp_path / name))
        backup.verify(str(tmp_path / name))
    # A spy around the real status: it reads the catalog only, never the key, so which key
    # file was passed on can only be seen in the call.
    calls, real_status = [], backup.status

    def status(repo, key_file=None):
        calls.append((os.path.basename(repo), key_file))
        return real_status(repo, key_file=key_file)
    monkeypatch.setattr(backup, "status", status)
    monkeypatch.delenv("MAILSTORE_REPOSITORY", raising=False)
    monkeypatch.delenv("MAILSTORE_KEY_FILE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert check("backup", "a")[0] == 0
    assert check("backup", "-r", "b", "--key-file", "/etc/k")[0] == 0
    monkeypatch.setenv("MAILSTORE_REPOSITORY", "c")
    monkeypatch.setenv("MAILSTORE_KEY_FILE", "/etc/k2")
    assert check("backup")[0] == 0
    assert check("backup", "d")[0] == 0
    assert calls == [("a", None), ("b", "/etc/k"), ("c", "/etc/k2"), ("d", "/etc/k2")]
    code, line, m = check("backup", "/srv/a", "--repo", "/srv/b")
    assert code == 3 and "given twice" in line and len(line.splitlines()) == 1
    monkeypatch.delenv("MAILSTORE_REPOSITORY")
    code, line, m = check("backup")
    assert code == 3 and "MAILSTORE_REPOSITORY" in line


@pytest.mark.parametrize("damage", ["missing", "null", "text", "list"])
def test_a_damaged_config_json_is_unknown_in_one_line(tmp_path, damage):
    import json
    repo = tmp_path / "repo"
    backup.init(str(repo), key_file=str(tmp_path / "key"))
    config = json.loads((repo / "config.json").read_text())
    if damage == "missing":
        del config["encryption"]
    elif damage == "null":
        config["key_check"] = None
    elif damage == "text":
        config["pack_size"] = "32M"
    else:
        config = [config]
    (repo / "config.json").write_text(json.dumps(config))
    code, line, m = check("backup", repo, "--key-file", tmp_path / "key")
    assert code == 3 and "config.json is damaged" in line
