"""check backup: against mailstore.backup.status() (faked for the edges, real repositories too)."""
import os
import time

import pytest

from check_fixtures import check, perfdata
from mailstore import backup

def fake_status(monkeypatch, snapshots=3, age=3600, verify_age=86400, ok=True, damaged=0,
                verified=True):
    now = time.time()
    st = {"snapshots": snapshots,
          "last_complete": now - age if age is not None else None,
          "last_snapshot_id": "20261125T020000-ab12" if age is not None else None,
          "last_verify": ({"time": now - verify_age, "ok": ok, "damaged": damaged}
                          if verified else None)}
    calls = []

    def status(repo, key_file=None):
        calls.append((repo, key_file))
        return st
    monkeypatch.setattr(backup, "status", status)
    return calls


def test_ok_reports_snapshot_age_count_and_verify(monkeypatch):
    calls = fake_status(monkeypatch)
    code, line, m = check("backup", "--repo", "/srv/backup", "--key-file", "/etc/k")
    assert calls == [("/srv/backup", "/etc/k")]
    assert code == 0, line
    assert "last snapshot 20261125T020000-ab12 1.0h ago" in line and "3 snapshots" in line
    perf = perfdata(m)
    assert 3599 <= perf["age"][0] <= 3630 and perf["age"][1:4] == ("s", "93600", "180000")
    assert perf["snapshots"][:4] == (3, "", "", "1:")
    assert perf["damaged"][0] == 0
    assert perf["verify_age"][2] == "691200"


@pytest.mark.parametrize("age, code", [(93500, 0), (93700, 1), (179900, 1), (180100, 2)])
def test_snapshot_age_edges(monkeypatch, age, code):
    fake_status(monkeypatch, age=age)
    got, line, m = check("backup", "--repo", "r")
    assert got == code, line
    if code:
        assert "last complete snapshot is" in line


def test_no_complete_snapshot_is_critical(monkeypatch):
    fake_status(monkeypatch, snapshots=0, age=None, verified=False)
    code, line, m = check("backup", "--repo", "r")
    assert code == 2 and "no complete snapshot" in line


def test_failed_verify_is_critical(monkeypatch):
    fake_status(monkeypatch, ok=False, damaged=4)
    code, line, m = check("backup", "--repo", "r")
    assert code == 2 and "found 4 damaged" in line
    assert perfdata(m)["damaged"][0] == 4


def test_never_verified_warns(monkeypatch):
    fake_status(monkeypatch, verified=False)
    code, line, m = check("backup", "--repo", "r")
    assert code == 1 and "never verified" in line


@pytest.mark.parametrize("vage, opts, code", [
    (691100, [], 0), (691300, [], 1), (691300, ["--verify-critical", "600000"], 2)])
def test_verify_age_edges(monkeypatch, vage, opts, code):
    fake_status(monkeypatch, verify_age=vage)
    assert check("backup", "--repo", "r", *opts)[0] == code


def test_snapshot_count_thresholds(monkeypatch):
    fake_status(monkeypatch, snapshots=2)
    assert check("backup", "--repo", "r", "--snapshots-warning", "7:")[0] == 1


def test_repository_error_is_unknown(monkeypatch):
    def status(repo, key_file=None):
        raise backup.KeyFileError("key file /etc/k is readable by others (mode 0644)")
    monkeypatch.setattr(backup, "status", status)
    code, line, m = check("backup", "--repo", "r")
    assert code == 3 and "mode 0644" in line


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
    from tests.harness import make_tree
    repo, key = tmp_path / "repo", tmp_path / "key"
    assert _backup_cli("init", repo, "--key-file", key)[0] == 0
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
    packs = [os.path.join(d, f) for d, _, fs in os.walk(str(repo / "packs")) for f in fs]
    assert packs
    os.truncate(packs[0], 10)
    code, out = _backup_cli("verify", repo, "--key-file", key)
    assert code == 1
    code, line, m = check("backup", "--repo", repo, "--key-file", key)
    assert code == 2 and "damaged" in line and perfdata(m)["damaged"][0] >= 1


def test_the_repository_is_named_as_for_mailstore_backup(monkeypatch, tmp_path):
    """REPO, -r/--repo or MAILSTORE_REPOSITORY; --key-file or MAILSTORE_KEY_FILE."""
    calls = fake_status(monkeypatch)
    monkeypatch.delenv("MAILSTORE_REPOSITORY", raising=False)
    monkeypatch.delenv("MAILSTORE_KEY_FILE", raising=False)
    assert check("backup", "/srv/a")[0] == 0
    assert check("backup", "-r", "/srv/b", "--key-file", "/etc/k")[0] == 0
    monkeypatch.setenv("MAILSTORE_REPOSITORY", "/srv/c")
    monkeypatch.setenv("MAILSTORE_KEY_FILE", "/etc/k2")
    assert check("backup")[0] == 0
    assert check("backup", "/srv/d")[0] == 0
    assert calls == [("/srv/a", None), ("/srv/b", "/etc/k"), ("/srv/c", "/etc/k2"),
                     ("/srv/d", "/etc/k2")]
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
