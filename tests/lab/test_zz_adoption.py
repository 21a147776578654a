"""The adoption proof: the first deploy onto the Puppet-era legacy server (lab/legacy) succeeds
and harms nothing.

In the order an operator follows (README, "Adopting the live server"):
  1. `python -m operations.adopt inventories/lab_legacy.py --write .lab/legacy/adopted.json`
     reads the server (read-only); `--drift --json` lists what the first deploy will change;
  2. `pyinfra inventories/lab_legacy.py deploy.py --limit infra02`, then `--limit email`;
  3. afterwards every active user logs in over IMAPS with the OLD password (the SHA512-CRYPT
     and MD5-CRYPT hashes stay), the deactivated one is refused, every address (DB aliases,
     /etc/aliases, arbitration rules, the bcc copy) still routes over SMTP on port 25, every
     message that was there is still there (by folder, unique name and content), root logs in
     over SSH, the LXC config keeps the keys the deploy does not manage (extra keys, the extra
     mount, the three NICs), and a second deploy changes nothing.
The time of each step is printed (run with -s or -rP to see it) and written to
`.lab/legacy/adoption-timings.json`.

It changes the legacy server for good, so it is the last user of it in a run (test_zz_*);
its module fixture rebuilds the legacy fresh (`lab container down legacy` + `up`) when an
earlier run already deployed onto it. Adoption matters on bullseye, the live server's
release: LAB_RELEASES.
"""
import imaplib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import lab_container, legacy_record, legacy_shell
from lab import lock
from mailclients import deploy_failure, imaps, message, smtp_25, wait_for_delivery

LAB_RELEASES = ("bullseye",)
REPO = Path(__file__).resolve().parents[2]
INVENTORY = "inventories/lab_legacy.py"
ADOPTED = REPO / ".lab" / "legacy" / "adopted.json"
TIMINGS = REPO / ".lab" / "legacy" / "adoption-timings.json"
LXC_CONFIG = Path("/var/lib/lxc/legacy/config")
# The deploy's state directory: present once a deploy ran on the server.
DEPLOYED_MARK = "/var/lib/cacert-deploy"
# Every message file of every Maildir (cur and new of every folder), with its checksum.
MESSAGES = (r"cd /home/mailboxes && find . -type f -path '*/Maildir/*' "
            r"\( -path '*/cur/*' -o -path '*/new/*' \) -print0 | sort -z | "
            r"xargs -0 -r sha256sum")
# Where each address of the legacy server delivers: its mailbox, the DB aliases, the
# /etc/aliases entries (also those that go through postmaster) and the arbitration rules.
DELIVERIES = [
    ("alice@cacert.test", "alice"),
    ("bob@cacert.test", "bob"),
    ("carol@cacert.test", "carol"),
    ("pr@cacert.test", "alice"),
    ("info@cacert.test", "bob"),
    ("postmaster@cacert.test", "alice"),
    ("webmaster@cacert.test", "bob"),
    ("abuse@cacert.test", "alice"),
    ("root@cacert.test", "alice"),
    ("arbitration-4711@cacert.test", "bob"),
    ("former.member+deleted@cacert.test", "alice"),
]


def messages(ssh):
    """{(mailbox, folder, unique name): sha256} of every message: new/ vs cur/ and the flags
    after the unique name may change when a client reads, the message may not."""
    found = {}
    for line in ssh(MESSAGES).stdout.splitlines():
        digest, path = line.split(None, 1)
        match = re.match(r"\./([^/]+)/Maildir/(.*?)/?(?:cur|new)/([^/]+)$", path)
        assert match, path
        mailbox, folder, name = match.groups()
        found[(mailbox, folder, name.split(":", 1)[0])] = digest
    return found


def _env():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.setdefault("CACERT_EMAIL_SECRETS", str(REPO / ".lab" / "secrets"))
    return env


def _adopt(*args):
    return subprocess.run([sys.executable, "-m", "operations.adopt", INVENTORY, *args],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900)


def _deploy(limit, *args):
    with lock.held():
        return subprocess.run(
            [str(REPO / ".venv" / "bin" / "pyinfra"), "-y", INVENTORY, "deploy.py",
             "--limit", limit, *args],
            cwd=REPO, env=_env(), capture_output=True, text=True, timeout=3600)


def _wait_for_ssh(ssh, timeout=180):
    """The infra02 step may restart the container: SSH answers again before the next step."""
    deadline = time.monotonic() + timeout
    while ssh("systemctl is-system-running --wait >/dev/null; true",
              check=False).returncode != 0:
        assert time.monotonic() < deadline, f"no SSH login within {timeout}s"
        time.sleep(2)


@pytest.fixture(scope="module")
def fresh_legacy(lab):
    """The legacy server as the Puppet era left it: rebuilt if a deploy already ran there."""
    lab_container("up", "legacy")
    # Either step of a deploy leaves its mark: the host step the data volume's mount entry.
    deployed = (" srv/mail " in LXC_CONFIG.read_text() or legacy_shell(legacy_record(lab))(
        f"test -e {DEPLOYED_MARK}", check=False).returncode == 0)
    if deployed:
        lab_container("down", "legacy")
        lab_container("up", "legacy")
    ADOPTED.unlink(missing_ok=True)
    return legacy_record(lab)


@pytest.fixture(scope="module")
def adoption(fresh_legacy):
    """Adopt, drift, the first deploy (infra02, email) and a second one, timed; with the
    messages before and after."""
    ssh = legacy_shell(fresh_legacy)
    timings, results = {}, {}

    def step(name, run):
        started = time.monotonic()
        result = run()
        timings[name] = round(time.monotonic() - started, 1)
        results[name] = result
        assert result.returncode == 0, f"{name}:\n{deploy_failure(result)}"
        return result

    before = messages(ssh)
    step("adopt --write", lambda: _adopt("--write", str(ADOPTED)))
    step("drift", lambda: _adopt("--drift", "--json"))
    step("deploy infra02", lambda: _deploy("infra02"))
    started = time.monotonic()
    _wait_for_ssh(ssh)
    timings["container back (SSH)"] = round(time.monotonic() - started, 1)
    step("deploy email", lambda: _deploy("email"))
    after = messages(ssh)
    step("second deploy infra02", lambda: _deploy("infra02", "--json"))
    step("second deploy email", lambda: _deploy("email", "--json"))
    TIMINGS.write_text(json.dumps(timings, indent=2) + "\n")
    print("adoption timings (s): " + ", ".join(f"{k} {v}" for k, v in timings.items()))
    return {"legacy": fresh_legacy, "ssh": ssh, "before": before, "after": after,
            "results": results, "timings": timings}


def test_adopt_wrote_the_servers_data(adoption):
    adopted = json.loads(ADOPTED.read_text())
    assert adopted["vmail_uid"] == 2000 and adopted["mail_root"] == "/home/mailboxes"
    assert [nic["name"] for nic in adopted["container_extra_nets"]] == ["eth1", "eth2"]
    assert [m["target"] for m in adopted["container_mounts"]] == ["var/spool/legacy-extra"]


def test_the_drift_report_listed_the_expected_changes_and_nothing_lost(adoption):
    findings = json.loads(adoption["results"]["drift"].stdout)["findings"]
    lxc = [f["what"] for f in findings if f["kind"] == "lxc"]
    # The only LXC change: the data volume's mount. No key, NIC or mount dropped.
    assert [w for w in lxc if "dropped" in w] == []
    assert any("added" in w and "/srv/cacert-lab/legacy-mail" in w for w in lxc), lxc
    # The adopted vmail uid matches the Maildirs' owner: no vmail finding.
    assert [f for f in findings if f["kind"] == "vmail"] == []
    services = {f["service"] for f in findings}
    assert {"postfix", "dovecot", "mariadb", "infra02"} <= services, services


@pytest.mark.parametrize("user", ["alice", "bob", "carol"])
def test_an_active_user_logs_in_with_the_old_password(adoption, user):
    legacy = adoption["legacy"]
    imap = imaps(legacy, legacy["accounts"][user])
    try:
        assert imap.select("INBOX", readonly=True)[0] == "OK"
    finally:
        imap.logout()


def test_the_deactivated_user_is_still_refused(adoption):
    legacy = adoption["legacy"]
    with pytest.raises(imaplib.IMAP4.error):
        imaps(legacy, legacy["accounts"]["dave"])


def test_old_hashes_are_replaced_only_by_a_login(adoption):
    """The deploy leaves every hash as it was; the users' IMAPS logins above re-hashed theirs
    to {BLF-CRYPT} (Dovecot's post-login step); dave, refused, keeps his."""
    legacy = adoption["legacy"]
    for user in ("alice", "bob", "carol"):    # (again: so that this test stands alone)
        imaps(legacy, legacy["accounts"][user]).logout()
    schemes = adoption["ssh"]("mysql -N -B cacertusers -e "
                              "\"SELECT login, SUBSTRING_INDEX(password, '}', 1) FROM users "
                              "ORDER BY login\"").stdout.split()
    assert schemes == ["alice@cacert.test", "{BLF-CRYPT", "bob@cacert.test", "{BLF-CRYPT",
                       "carol@cacert.test", "{BLF-CRYPT", "dave@cacert.test", "{MD5-CRYPT"]


def test_no_message_is_lost(adoption):
    before, after = adoption["before"], adoption["after"]
    assert len(before) >= 5   # alice's INBOX and Lists, bob's, dave's
    assert {key: after.get(key) for key in before} == before


@pytest.mark.parametrize("recipient,user", DELIVERIES)
def test_every_address_still_routes(adoption, recipient, user):
    legacy, ssh = adoption["legacy"], adoption["ssh"]
    marker, msg = message("sender@example.net", recipient, subject="adopted delivery")
    with smtp_25(legacy) as smtp:
        smtp.send_message(msg)
    assert wait_for_delivery(ssh, legacy, user, marker)


def test_the_bcc_copy_still_goes_to_bob(adoption):
    legacy, ssh = adoption["legacy"], adoption["ssh"]
    marker, msg = message("sender@example.net", "alice@cacert.test", subject="adopted bcc")
    with smtp_25(legacy) as smtp:
        smtp.send_message(msg)
    assert wait_for_delivery(ssh, legacy, "alice", marker)
    assert wait_for_delivery(ssh, legacy, "bob", marker)


def test_root_still_logs_in_and_mail_still_belongs_to_uid_2000(adoption):
    ssh = adoption["ssh"]
    assert ssh("id -u").stdout.strip() == "0"
    assert ssh("stat -c %u:%g /home/mailboxes/alice/Maildir").stdout.strip() == "2000:2000"


def test_the_lxc_config_keeps_what_the_deploy_does_not_manage(adoption):
    config = LXC_CONFIG.read_text()
    for line in ("lxc.cgroup2.memory.max = 2G", "lxc.start.order = 10",
                 "lxc.start.delay = 5", "# Managed by Puppet",
                 "lxc.mount.entry = /srv/cacert-lab/legacy-spool var/spool/legacy-extra "
                 "none bind,create=dir 0 0"):
        assert line in config
    assert re.search(r"^lxc\.prlimit\.nofile = \d+$", config, re.M)
    for index, (nic, address) in enumerate(adoption["legacy"]["addresses"].items()):
        assert f"lxc.net.{index}.name = {nic}" in config
        assert f"lxc.net.{index}.ipv4.address = {address}/24" in config
    addresses = adoption["ssh"]("ip -o -4 addr show").stdout
    for nic, address in adoption["legacy"]["addresses"].items():
        assert re.search(rf"\b{nic}\s+inet {re.escape(address)}/24", addresses), addresses
    assert adoption["ssh"]("mountpoint -q /var/spool/legacy-extra && mountpoint -q /srv/mail",
                           check=False).returncode == 0


@pytest.mark.parametrize("limit", ["infra02", "email"])
def test_a_second_deploy_changes_nothing(adoption, limit):
    results = json.loads(adoption["results"][f"second deploy {limit}"].stdout)["results"]
    changed = [op["name"] for op in results["operations"] if op["success"]]
    assert results["totals"]["error"] == 0
    assert results["totals"]["success"] == 0, f"changed on a re-run: {changed}"
