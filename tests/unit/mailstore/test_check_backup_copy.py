"""check backup-copy: the off-host copy job's state file (DIR/state.json) read as a plugin."""
import json
import time

from check_fixtures import check, perfdata


def _state(directory, age=3600, verify_age=3600, verify_ok=True, **extra):
    now = time.time()
    state = {"copy": "20261206T053000Z", "copied": now - age, "seconds": 4,
             "files_transferred": 3, "bytes_received": 12345, "copies": 7,
             "verified": now - verify_age, "verify_ok": verify_ok, **extra}
    (directory / "state.json").write_text(json.dumps(state))


def test_no_copy_yet_is_critical(tmp_path):
    code, line, _ = check("backup-copy", tmp_path)
    assert code == 2 and line == "BACKUP COPY CRITICAL - no copy in %s yet" % tmp_path


def test_a_fresh_verified_copy_is_ok_with_perfdata(tmp_path):
    _state(tmp_path)
    code, line, m = check("backup-copy", tmp_path)
    assert code == 0, line
    assert m.group("text") == "copy 20261206T053000Z 1.0h ago, verified 1.0h ago"
    perf = perfdata(m)
    assert 3600 <= perf["age"][0] <= 3605 and perf["copies"][0] == 7
    assert perf["bytes"][0] == 12345 and "verify_age" in perf


def test_age_thresholds(tmp_path):
    _state(tmp_path, age=100000)
    assert check("backup-copy", tmp_path)[0] == 1
    _state(tmp_path, age=200000)
    code, line, _ = check("backup-copy", tmp_path)
    assert code == 2 and "last copy is 200000s old" in line
    assert check("backup-copy", tmp_path, "-w", "300000", "-c", "400000")[0] == 0
    _state(tmp_path, age=5)
    assert check("backup-copy", tmp_path, "--warning", "1", "--critical", "2")[0] == 2


def test_a_failed_verify_is_critical_and_never_verified_warns(tmp_path):
    _state(tmp_path, verify_ok=False)
    code, line, _ = check("backup-copy", tmp_path)
    assert code == 2 and "verify of copy 20261206T053000Z (1.0h ago) FAILED" in line
    _state(tmp_path, verified=None)
    code, line, _ = check("backup-copy", tmp_path)
    assert code == 1 and "never verified" in line


def test_an_unreadable_state_or_directory_is_unknown(tmp_path):
    (tmp_path / "state.json").write_text("{")
    code, line, _ = check("backup-copy", tmp_path)
    assert code == 3 and line.startswith("BACKUP COPY UNKNOWN - cannot read ")
    code, line, _ = check("backup-copy", tmp_path / "missing")
    assert code == 3 and "is not a directory" in line
