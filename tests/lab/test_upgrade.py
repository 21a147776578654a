"""`python -m operations.upgrade inventories/lab.py prepare` in the lab: the successor
`email-next` (trixie) is built and deployed beside `email`, which keeps serving; the
successor's services run, and its Dovecot stays off the data volume.

The upgrade matters from bullseye (LAB_RELEASES); CACERT_LAB_ANY_RELEASE=1 runs it on any lab.
The successor is stopped and destroyed at the end of the module (only it: `email` is never
stopped or changed here, except for its volume's owner marker, see `prepared`).
"""
import json
import subprocess
import sys
import threading
import time

import pytest

from conftest import REPO, KNOWN_HOSTS, ssh_command, _shell
from lab import lock
from lab import topology as t
from mailclients import imaps, message, smtp_25, wait_for_delivery
from operations import successor

LAB_RELEASES = ("bullseye",)
SUCCESSOR = successor.name_of(t.CONTAINER)
MARKER = f"{t.DATA_VOLUME_HOST_PATH}/.cacert-owner"
PROBE_INTERVAL = 10


def _lxc(*args):
    return subprocess.run(["lxc-" + args[0], "-n", *args[1:]], capture_output=True, text=True)


def _destroy_successor():
    with lock.held():
        subprocess.run(["lxc-stop", "-n", SUCCESSOR, "-t", "60"], capture_output=True)
        subprocess.run(["lxc-destroy", "-n", SUCCESSOR], capture_output=True)


class Prober(threading.Thread):
    """Every PROBE_INTERVAL s, one SMTP delivery to alice and one IMAP login at `email`:
    `sent` holds the markers delivered to Postfix, `failures` what went wrong."""

    def __init__(self, lab, alice):
        super().__init__(daemon=True)
        self.lab, self.alice = lab, alice
        self.sent, self.failures, self.logins = [], [], 0
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            try:
                marker, msg = message("bob@cacert.test", self.alice["email"], "during prepare")
                with smtp_25(self.lab) as smtp:
                    smtp.send_message(msg)
                self.sent.append(marker)
                imap = imaps(self.lab, self.alice)
                imap.logout()
                self.logins += 1
            except Exception as exc:   # noqa: BLE001 (every failure is a finding)
                self.failures.append(f"{time.strftime('%H:%M:%S')} {type(exc).__name__}: {exc}")
            self.done.wait(PROBE_INTERVAL)


@pytest.fixture(scope="module")
def prepared(lab, alice):
    """prepare's --json result and the prober's findings; the successor destroyed after."""
    if _lxc("info", SUCCESSOR).returncode == 0:
        _destroy_successor()   # a leftover of an interrupted run: prepare builds it anew
    # The serving container owns the volume. A deploy of this version adopts it on its first
    # run; the lab's `email` may have been deployed by an older one, so the marker is written
    # here as that deploy would (older versions never read it).
    with lock.held():
        subprocess.run(["sh", "-c", f"[ -e {MARKER} ] || echo {t.CONTAINER} > {MARKER}"],
                       check=True)
    config_before = open(f"/var/lib/lxc/{t.CONTAINER}/config").read()
    prober = Prober(lab, alice)
    prober.start()
    started = time.monotonic()
    with lock.held():
        result = subprocess.run(
            [sys.executable, "-m", "operations.upgrade", "--json", "inventories/lab.py",
             "prepare", "--release", "trixie"],
            cwd=REPO, capture_output=True, text=True, timeout=3600)
    seconds = time.monotonic() - started
    prober.done.set()
    prober.join(timeout=120)
    print(f"\nprepare took {seconds:.0f} s")
    yield {"result": result, "prober": prober, "seconds": seconds,
           "config_before": config_before}
    _destroy_successor()


@pytest.fixture(scope="module")
def successor_ssh(lab, prepared, tmp_path_factory):
    """A root shell in the successor, checked against `email`'s own host keys."""
    known = tmp_path_factory.mktemp("upgrade") / "known_hosts"
    known.write_text(successor.known_hosts(KNOWN_HOSTS.read_text(), t.CONTAINER_ADDRESS,
                                           t.SUCCESSOR_ADDRESS))
    record = {"ssh": lab["ssh"], "address": t.SUCCESSOR_ADDRESS}
    return _shell(lambda cmd: ssh_command(record, cmd, known, "yes"), "the successor")


def test_prepare_builds_deploys_and_checks_the_successor(prepared):
    result = prepared["result"]
    assert result.returncode == 0, result.stdout + result.stderr[-6000:]
    report = json.loads(result.stdout)
    assert [s["step"] for s in report["steps"]] == [
        "container (Infra02)", "deploy (successor)", "checks before cut-over"]
    assert all(s["ok"] and s["seconds"] > 0 for s in report["steps"])
    for step in report["steps"]:
        print(f"{step['step']}: {step['seconds']} s")
    checks = {r["check"]: r["status"] for r in report["steps"][2]["detail"]}
    print("\n".join(f"  {status} {check}" for check, status in checks.items()))
    assert checks["dovecot waits"] == "OK"
    assert checks["service postfix"] == checks["port smtp/25"] == "OK"
    assert not any(check.startswith(("port imap", "service dovecot")) for check in checks)


def test_the_serving_container_kept_serving(prepared, ssh, lab, alice):
    prober = prepared["prober"]
    assert not prober.failures, "\n".join(prober.failures)
    assert prober.logins >= 2 and len(prober.sent) >= 2
    # After prepare too, and every message sent during it was delivered.
    marker, msg = message("bob@cacert.test", alice["email"], "after prepare")
    with smtp_25(lab) as smtp:
        smtp.send_message(msg)
    imaps(lab, alice).logout()
    for sent in prober.sent + [marker]:
        wait_for_delivery(ssh, lab, alice["user"], sent, timeout=120)


def test_the_serving_container_is_left_as_it_was(prepared):
    assert _lxc("info", t.CONTAINER, "-s", "-H").stdout.strip() == "RUNNING"
    assert open(f"/var/lib/lxc/{t.CONTAINER}/config").read() == prepared["config_before"]


def test_the_successor_runs_trixie_and_the_deployed_services(successor_ssh):
    # Reaching it with `email`'s known host keys: the successor inherited them.
    assert "VERSION_CODENAME=trixie" in successor_ssh("cat /etc/os-release").stdout
    result = successor_ssh("systemctl is-active postfix mariadb nginx ssh cron "
                           "cacert-selfservice-api", check=False)
    assert result.stdout.split() == ["active"] * 6, result.stdout


def test_the_successors_dovecot_cannot_start_on_the_volume(successor_ssh):
    assert successor_ssh("systemctl is-active dovecot", check=False).stdout.strip() != "active"
    start = successor_ssh("systemctl start dovecot", check=False)
    assert start.returncode != 0
    status = successor_ssh("systemctl status dovecot --no-pager -l", check=False).stdout
    assert f"names container '{t.CONTAINER}', this is '{SUCCESSOR}'" in status, status
    # Mounted, read-only: the successor can read the volume, never write it.
    assert successor_ssh(f"touch {t.DATA_VOLUME}/x", check=False).returncode != 0
