"""The backup host's Icinga service against a real Icinga2 (tests/integration/test_icinga.py's
daemon): the description the deploy writes registers `mailstore-backup-copy`, and the push
script the deploy installs (operations/backup_host.py) submits what `mailstore check
backup-copy` says of the copies' state: OK for a fresh, verified copy, CRITICAL for a stale
one and for a failed verify.

The rendered push script runs as it is, but for its paths of this machine: mailstore (here a
wrapper running this checkout), the CA and the credentials file.
"""
import json
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.test_icinga import HOST, cli, master  # noqa: F401  (the fixture)

from operations import backup, backup_host
from operations.defaults import defaults

REPO = Path(__file__).resolve().parents[2]
SERVICE = f"{HOST}!{backup_host.COPY_SERVICE}"


def _conf(master, copies):
    return backup_host.host_settings({
        **defaults(), "backup_copy_source": "email.cacert.test",
        "backup_copy_source_host_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEQn"],
        "backup_copy_dir": str(copies),
        "backup_copy_icinga": {"host": HOST, "url": master.url, "ca": master.ca_file,
                               "user": "push", "password_secret": "unused.password"}})


def _state(copies, copied_ago, verify_ok=True):
    now = int(time.time())
    (copies / "state.json").write_text(json.dumps({
        "copy": "20261206T053000Z", "copied": now - copied_ago, "seconds": 3,
        "files_transferred": 2, "bytes_received": 4096, "copies": 3,
        "verified": now - copied_ago + 5, "verify_ok": verify_ok}))


def test_the_pushed_copy_result_is_ok_then_critical_when_stale_or_unverified(master,  # noqa: F811
                                                                             tmp_path):
    copies = tmp_path / "copies"
    copies.mkdir()
    conf = _conf(master, copies)
    desc = tmp_path / "backup-copy.json"
    desc.write_text(json.dumps(backup_host.description(conf)))
    registered = cli("icinga", "register", "--url", master.url, "--ca", master.ca_file,
                     "--credentials", master.credentials["register"], "--description",
                     str(desc), "--json")
    assert registered.exit_code == 0, registered.output
    assert [o["name"] for o in json.loads(registered.output)["created"]] == [SERVICE]
    service = master.obj("services", SERVICE)
    assert service["check_command"] == "dummy" and service["check_interval"] == 26 * 3600

    mailstore = tmp_path / "mailstore"
    mailstore.write_text(f"#!/bin/sh\nPYTHONPATH={REPO} exec {sys.executable} -m mailstore "
                         "\"$@\"\n")
    push = tmp_path / "push"
    push.write_text(backup_host.push_script(conf)
                    .replace(backup.MAILSTORE, str(mailstore))
                    .replace(backup_host.ICINGA_CA, master.ca_file)
                    .replace(backup_host.ICINGA_CREDENTIALS, master.credentials["push"]))
    for script in (mailstore, push):
        script.chmod(0o755)

    def pushed():
        ran = subprocess.run([str(push)], capture_output=True, text=True, timeout=120)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        return master.obj("services", SERVICE)["last_check_result"]

    _state(copies, 60)
    fresh = pushed()
    assert fresh["state"] == 0 and fresh["output"].startswith(
        "BACKUP COPY OK - copy 20261206T053000Z 1m ago, verified"), fresh["output"]
    assert {p.split("=")[0] for p in fresh["performance_data"]} >= {"age", "verify_age",
                                                                   "copies"}
    # past backup_copy_age_critical (6 h by default): CRITICAL
    _state(copies, 7 * 3600)
    stale = pushed()
    assert stale["state"] == 2 and stale["output"].startswith(
        "BACKUP COPY CRITICAL - last copy is "), stale["output"]
    _state(copies, 60, verify_ok=False)
    unverified = pushed()
    assert unverified["state"] == 2 and "FAILED" in unverified["output"], unverified["output"]
