"""The adopt command's errors (one line, exit 2 or 1) and inventories/adopted.py's loader."""
import json
import os
import subprocess
import sys

import pytest

from tests.unit.deploy import fake_host  # noqa: F401  (puts the repository on sys.path)
from tests.unit.deploy.conftest import REPO
from inventories import adopted


def run_adopt(*args, cwd=REPO):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "operations.adopt", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_help_names_the_options():
    result = run_adopt("--help")
    assert result.returncode == 0
    for option in ("--json", "--write", "--drift"):
        assert option in result.stdout


def test_missing_inventory_is_one_line_and_status_2(tmp_path):
    result = run_adopt(str(tmp_path / "nope.py"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"{tmp_path / 'nope.py'}: no such inventory file"]


def test_inventory_without_email_host_is_status_2(tmp_path):
    inventory = tmp_path / "inv.py"
    inventory.write_text("infra02 = [('@local', {})]\n")
    result = run_adopt(str(inventory))
    assert result.returncode == 2
    assert result.stderr.strip() == f"{inventory}: group `email` must hold exactly one host (has 0)"


def test_inventory_that_raises_is_one_line(tmp_path):
    inventory = tmp_path / "inv.py"
    inventory.write_text("raise RuntimeError('broken\\ninventory')\n")
    result = run_adopt(str(inventory))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "broken inventory" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_host_is_status_1(tmp_path):
    """Port 1 on loopback: refused at once, nothing listens there."""
    inventory = tmp_path / "inv.py"
    inventory.write_text("email = [('nohost', {'ssh_hostname': '127.0.0.1', 'ssh_port': 1,"
                         " 'ssh_user': 'root'})]\n")
    result = run_adopt(str(inventory))
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("nohost: could not connect") or \
        "could not connect" in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr


def test_write_and_drift_do_not_go_together(tmp_path):
    result = run_adopt("inventories/lab.py", "--drift", "--write", str(tmp_path / "x.json"))
    assert result.returncode == 2 and "--write and --drift" in result.stderr


def test_load_drops_underscore_keys(tmp_path):
    path = tmp_path / "adopted.json"
    path.write_text(json.dumps({"vmail_uid": 2000, "etc_aliases": {"root": "postmaster"},
                                "_findings": ["x"], "_source": {"email": "h"}}))
    assert adopted.load(str(path)) == {"vmail_uid": 2000, "etc_aliases": {"root": "postmaster"}}


@pytest.mark.parametrize("content, message", [
    ("{not json", "not JSON"),
    ("[1, 2]", "not a JSON object of inventory data"),
])
def test_load_bad_file_is_one_line_and_exit_2(tmp_path, capsys, content, message):
    path = tmp_path / "adopted.json"
    path.write_text(content)
    with pytest.raises(SystemExit) as stop:
        adopted.load(str(path))
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and str(path) in err[0]


def test_load_missing_file(tmp_path, capsys):
    path = tmp_path / "missing.json"
    assert adopted.load(str(path), optional=True) == {}
    with pytest.raises(SystemExit):
        adopted.load(str(path))
    assert "adopted data file not found" in capsys.readouterr().err
