"""`python -m operations.status inventories/lab.py` against the lab: it passes on the lab as
deployed, and each fault made here (and undone in `finally`) fails the check that names it.

Faults are kept away from what other lab tests use: the expired certificate is served on
ManageSieve only (a `protocol sieve` block appended to Dovecot's config, the original copied
back after), the closed port is the self-service API's (seen from the community address), the
missing DNS record is left out of a copy of the lab's zone served by a second dnsmasq on a
loopback address (the lab's own dnsmasq, which the container resolves through, is never
touched), and the stale backup is a threshold below the real age of the newest snapshot (a
snapshot's time is recorded in the repository's catalog; faking it would test nothing). Each
fault is made under the lab lock, so that no deploy runs into it.
"""
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from lab import ca, lock  # noqa: E402
from lab import topology as t  # noqa: E402
from lab.secrets import _load  # noqa: E402
from operations import backup  # noqa: E402
from test_backup import REPOSITORY  # noqa: E402
from tests.harness.pki import certificate  # noqa: E402

DNSMASQ_CONF = Path("/etc/cacert-lab/dnsmasq.conf")
# A loopback address for the second dnsmasq (the lab's listens on the bridge address only).
ZONE_COPY_ADDRESS = "127.0.0.9"
DOVECOT_CONF = "/etc/dovecot/dovecot.conf"
SAVED_DOVECOT_CONF = "/root/dovecot.conf.before-status-test"
FAULT_DIR = "/etc/ssl/status-test"


def status(*args):
    """The command's exit status and {check: result} (its --json output)."""
    done = subprocess.run(
        [str(REPO / ".venv" / "bin" / "python"), "-m", "operations.status", "--json",
         *args, "inventories/lab.py"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
        text=True, timeout=600)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, {r["check"]: r for r in json.loads(done.stdout)}


def failures(results):
    return {c: r["detail"] for c, r in results.items() if r["status"] == "FAIL"}


def new_failures(before, after):
    """The checks failing in `after` that did not fail in `before`: a fault test compares
    with a run just before its fault, so that a failure elsewhere in the shared lab (a
    service restarting, another test's mail in the queue) is not taken for the fault's
    effect."""
    return {c: d for c, d in failures(after).items() if c not in failures(before)}


def port_check(results, name):
    return next(r for c, r in results.items() if c.startswith(f"port {name}/")
                and c.count(" ") == 1)


def test_status_passes_on_the_lab_as_deployed(lab):
    code, results = status()
    assert failures(results) == {} and code == 0
    for name in ("ssh", "smtp", "submission", "imaps", "sieve", "https"):
        assert port_check(results, name)["status"] == "OK"
    assert "only monitor may connect" in port_check(results, "icinga2")["detail"]
    assert results[f"cert smtp/{lab['ports']['smtp']}"]["detail"].startswith(
        "email.cacert.test, verified")
    assert results["dns MX cacert.test."]["status"] == "OK"
    assert results["service postfix"]["status"] == "OK"
    assert results["backup"]["status"] == "OK"
    # what the lab's zone does not carry is said, not hidden
    assert results["dns SSHFP"]["status"] == "SKIP"


def test_from_the_monitor_address_its_port_answers(lab):
    code, results = status("--source", t.MONITOR_ADDRESS)
    assert code == 0, failures(results)
    icinga = port_check(results, "icinga2")
    assert icinga["status"] == "OK"
    assert icinga["detail"] == f"answers from {t.MONITOR_ADDRESS} (monitor) (allowed: monitor)"


def test_an_expired_certificate_fails_the_cert_check_of_its_port(lab, ssh):
    inter_key, inter = _load(REPO / ".lab" / "ca" / "intermediate.pem",
                             REPO / ".lab" / "ca" / "intermediate.key.pem")
    key = ca.new_key()
    now = datetime.datetime.now(datetime.timezone.utc)
    expired = certificate(lab["hostnames"]["community"], key, inter, inter_key,
                          names=[lab["hostnames"]["community"]],
                          not_before=now - datetime.timedelta(days=60),
                          not_after=now - datetime.timedelta(days=3))
    sieve = f"cert sieve/{lab['ports']['sieve']}"
    with lock.held():
        _, before = status()
        assert results_ok(before, sieve)
        ssh(f"cp -p {DOVECOT_CONF} {SAVED_DOVECOT_CONF} && install -d -m 700 {FAULT_DIR}")
        try:
            ssh(f"cat > {FAULT_DIR}/expired.chain.pem",
                input=(ca.cert_pem(expired) + ca.cert_pem(inter)).decode())
            ssh(f"umask 077; cat > {FAULT_DIR}/expired.key.pem", input=ca.key_pem(key).decode())
            # Dovecot 2.4 (trixie) names the files; 2.3 reads them with "<".
            if ssh("dovecot --version").stdout.startswith("2.3"):
                cert, key_file = (f"ssl_cert = <{FAULT_DIR}/expired.chain.pem",
                                  f"ssl_key = <{FAULT_DIR}/expired.key.pem")
            else:
                cert, key_file = (f"ssl_server_cert_file = {FAULT_DIR}/expired.chain.pem",
                                  f"ssl_server_key_file = {FAULT_DIR}/expired.key.pem")
            ssh(f"printf '%s\\n' 'protocol sieve {{' '  {cert}' '  {key_file}' '}}' "
                f">> {DOVECOT_CONF} && doveconf -n >/dev/null && doveadm reload")
            code, results = status()
            assert code == 1
            assert set(new_failures(before, results)) == {sieve}, failures(results)
            assert "expired" in results[sieve]["detail"]
            # the other ports of the same Dovecot still serve the good certificate
            assert results[f"cert imaps/{lab['ports']['imaps']}"]["status"] == "OK"
        finally:
            ssh(f"cp -p {SAVED_DOVECOT_CONF} {DOVECOT_CONF} && rm -rf {FAULT_DIR} "
                f"{SAVED_DOVECOT_CONF} && doveadm reload")
    code, results = _settled(lambda r: results_ok(r, sieve))
    assert results[sieve]["status"] == "OK"


def results_ok(results, check):
    return results.get(check, {}).get("status") == "OK"


def _settled(done, *args, attempts=10):
    """Run status until `done(results)` (a reload or start takes a moment)."""
    for _ in range(attempts):
        code, results = status(*args)
        if done(results):
            return code, results
        time.sleep(2)
    return code, results


def test_a_stopped_service_fails_its_port_and_its_unit(lab, ssh):
    port = f"port selfservice_api/{9443}"
    with lock.held():
        _, before = status("--source", t.COMMUNITY_ADDRESS)
        assert results_ok(before, port)
        ssh("systemctl stop cacert-selfservice-api")
        try:
            code, results = status("--source", t.COMMUNITY_ADDRESS)
            assert code == 1
            found = new_failures(before, results)
            assert set(found) == {port, "service cacert-selfservice-api"}, failures(results)
            assert "must answer from 10.0.3.3 (community)" in found[port]
        finally:
            ssh("systemctl start cacert-selfservice-api")
    code, results = _settled(lambda r: results_ok(r, port), "--source", t.COMMUNITY_ADDRESS)
    assert results_ok(results, port), failures(results)


@pytest.fixture
def zone_copy(tmp_path):
    """`serve(without)`: the lab's zone, less the lines containing `without`, served by a
    second dnsmasq on ZONE_COPY_ADDRESS until the test ends."""
    started = []

    def serve(without=None):
        lines = [line for line in DNSMASQ_CONF.read_text().splitlines()
                 if not (without and without in line)]
        lines = [f"listen-address={ZONE_COPY_ADDRESS}" if line.startswith("listen-address=")
                 else f"pid-file={tmp_path / 'dnsmasq.pid'}" if line.startswith("pid-file=")
                 else line for line in lines]
        conf = tmp_path / "dnsmasq.conf"
        conf.write_text("\n".join(lines) + "\n")
        while started:
            _stop(started.pop())
        started.append(subprocess.Popen(["dnsmasq", "--keep-in-foreground",
                                         f"--conf-file={conf}"]))
        time.sleep(1)
        assert started[-1].poll() is None, "the second dnsmasq did not start"

    yield serve
    while started:
        _stop(started.pop())


def _stop(process):
    process.terminate()
    process.wait(timeout=10)


def test_a_missing_dns_record_fails_naming_it(lab, zone_copy):
    zone_copy()
    _, before = status("--nameserver", ZONE_COPY_ADDRESS)
    # the copy itself is complete
    assert [c for c in failures(before) if c.startswith("dns")] == [], failures(before)
    zone_copy(without="mx-host=")
    code, results = status("--nameserver", ZONE_COPY_ADDRESS)
    assert code == 1
    assert new_failures(before, results) == {"dns MX cacert.test.":
                                             "missing: no MX record at this name (expected "
                                             "MX 10 email.cacert.test.)"}


def test_a_backup_older_than_the_threshold_fails(lab, ssh):
    # A snapshot to be too old, whatever ran before (a fresh lab has none yet).
    if not json.loads(ssh(f"mailstore backup list {REPOSITORY} --json").stdout):
        ssh(backup.JOB, timeout=900)
    _, before = status()
    assert results_ok(before, "backup")
    # 0.0003 h is about a second: the newest snapshot is older than that.
    code, results = status("--backup-max-age", "0.0003")
    assert code == 1
    assert set(new_failures(before, results)) == {"backup"}, failures(results)
    assert "BACKUP CRITICAL" in results["backup"]["detail"]
