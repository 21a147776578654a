"""operations.adopt and its drift report against the lab's Puppet-era server `legacy`.

The legacy container (lab.json "containers.legacy", inventory inventories/lab_legacy.py) holds
what the live server held before this deploy: adopt must read exactly that, and neither adopt
nor the drift report may change anything on it or on the lab host: checksums of its Postfix
and Dovecot configuration, /etc/aliases, a dump of cacertusers, the owners of the Maildirs
and the container's LXC config are taken before and after.
"""
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from lab import lock  # noqa: E402  (the repository root is not always on sys.path)

LAB = REPO / ".lab"
INVENTORY = "inventories/lab_legacy.py"


@pytest.fixture(scope="module")
def legacy(lab):
    info = lab.get("containers", {}).get("legacy")
    if info is None:
        pytest.skip("the lab has no legacy container (lab.json containers.legacy)")
    if not (REPO / INVENTORY).is_file():
        pytest.skip(f"{INVENTORY} is missing (written with the legacy container)")
    return info


@pytest.fixture(scope="module")
def legacy_ssh(legacy):
    ssh = legacy["ssh"]

    def run(command):
        result = subprocess.run(
            ["ssh", "-i", str(REPO / ssh["key"]), "-p", str(ssh["port"]), "-o", "BatchMode=yes",
             "-o", "ConnectTimeout=10", "-o", "StrictHostKeyChecking=yes",
             "-o", f"UserKnownHostsFile={REPO / ssh['known_hosts']}", "-o", "LogLevel=ERROR",
             f"{ssh['user']}@{legacy['address']}", command],
            capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{command!r}: {result.stderr}"
        return result.stdout
    return run


# Everything adopt reads, fingerprinted: files by content, the database by a dump without its
# date, Maildirs by owner and mode.
_STATE = ("cd / && find /etc/postfix /etc/dovecot /etc/aliases /etc/aliases.db /etc/ssl/certs "
          "-xtype f -print0 2>/dev/null | sort -z | xargs -0 sha256sum; "
          "mysqldump --skip-dump-date --skip-comments cacertusers | sha256sum; "
          "stat -c '%n %u:%g %a' /home/mailboxes /home/mailboxes/*/Maildir; "
          "getent passwd vmail; ls -A /var/lib/cacert-deploy 2>/dev/null | wc -l")


def _host_state(legacy):
    """The lab host's side: the container's LXC config and the files the drift report shows
    the deploy would change there."""
    paths = [Path(f"/var/lib/lxc/{legacy['container']}/config"),
             Path("/etc/cacert-lab/dnsmasq.conf"),
             *sorted((LAB / "icinga2-master" / "etc").glob("*.conf"))]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths if p.is_file()}


def _adopt(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.setdefault("CACERT_EMAIL_SECRETS", str(LAB / "secrets"))
    return subprocess.run([sys.executable, "-m", "operations.adopt", INVENTORY, *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def runs(legacy, legacy_ssh, tmp_path_factory):
    """adopt (text, --json --write) and --drift (text, --json), with the state around them.

    Under the lab lock: no deploy of another test changes the lab meanwhile."""
    out = tmp_path_factory.mktemp("adopt") / "adopted.json"
    with lock.held():
        before = (legacy_ssh(_STATE), _host_state(legacy))
        results = {
            "text": _adopt(),
            "json": _adopt("--json", "--write", str(out)),
            "drift": _adopt("--drift"),
            "drift_json": _adopt("--drift", "--json"),
        }
        after = (legacy_ssh(_STATE), _host_state(legacy))
    for name, result in results.items():
        assert result.returncode == 0, f"{name}: {result.stderr}"
    return {"before": before, "after": after, "written": out, **results}


def test_nothing_changed_on_the_server_or_the_lab_host(runs):
    before, after = runs["before"], runs["after"]
    assert before[0].count("\n") > 20   # the fingerprint covers something
    changed = sorted(set(before[0].splitlines()) ^ set(after[0].splitlines()))
    assert changed == [], "changed in the container:\n" + "\n".join(changed)
    assert after[1] == before[1]


def test_adopted_mail_data_is_what_the_legacy_holds(runs):
    adopted = json.loads(runs["written"].read_text())
    assert adopted["etc_aliases"] == {"postmaster": "alice@cacert.test",
                                      "webmaster": "bob@cacert.test", "abuse": "postmaster",
                                      "root": "postmaster", "mailer-daemon": "postmaster"}
    assert adopted["arbitration_rewrites"] == [
        {"match": r"^arbitration-[0-9]+@cacert\.test$", "to": "bob@cacert.test"},
        {"match": r"^(.+)\+deleted@cacert\.test$", "to": "alice@cacert.test"}]
    assert adopted["recipient_bcc"] == {"alice@cacert.test": "bob@cacert.test"}
    assert adopted["transports"] == {"lists.cacert.test": "smtp:[lists.cacert.test]"}
    assert adopted["relayhost"] is None
    assert adopted["vmail_uid"] == 2000 and adopted["mail_root"] == "/home/mailboxes"
    assert adopted["mail_domain"] == "cacert.test"


def test_password_schemes_counted_and_weak_ones_named(runs, legacy):
    adopted = json.loads(runs["written"].read_text())
    assert adopted["_password_schemes"] == {"SHA512-CRYPT": 2, "MD5-CRYPT": 2}
    assert adopted["_weak_password_accounts"] == {"MD5-CRYPT": ["bob@cacert.test",
                                                                "dave@cacert.test"]}
    # No hash, nor any password, in any output.
    everything = "".join(r.stdout + r.stderr for k, r in runs.items()
                         if hasattr(r, "stdout")) + runs["written"].read_text()
    assert not re.search(r"\$(1|5|6|2[aby])\$", everything)
    for account in legacy["accounts"]:
        assert account["password"] not in everything


def test_container_nics_keys_and_mount(runs, legacy):
    adopted = json.loads(runs["written"].read_text())
    assert adopted["container_net"]["ipv4"] == f"{legacy['addresses']['eth0']}/24"
    assert adopted["container_net"]["ipv4_gateway"] == "10.0.3.1"
    assert adopted["container_net"]["hwaddr"] == "00:16:3e:ca:ce:29"
    extra = {n["name"]: n for n in adopted["container_extra_nets"]}
    assert sorted(extra) == ["eth1", "eth2"]
    assert extra["eth1"]["ipv4"] == f"{legacy['addresses']['eth1']}/24"
    assert extra["eth2"]["ipv4"] == f"{legacy['addresses']['eth2']}/24"
    assert {n["link"] for n in extra.values()} == {"labbr1", "labbr2"}
    assert {"source": "/srv/cacert-lab/legacy-spool", "target": "var/spool/legacy-extra",
            "type": "none", "options": "bind,create=dir"} in adopted["container_mounts"]
    keys = dict(map(tuple, adopted["_lxc_unmanaged_keys"]))
    assert keys["lxc.cgroup2.memory.max"] == "2G" and "lxc.prlimit.nofile" in keys


def test_adopted_file_loads_as_inventory_data(runs):
    from inventories import adopted as loader
    data = loader.load(str(runs["written"]))
    assert data["vmail_uid"] == 2000 and not any(k.startswith("_") for k in data)


def test_text_report_has_a_table_per_area(runs):
    text = runs["text"].stdout
    for title in ("== /etc/aliases", "== /etc/postfix/arbitration", "== password schemes",
                  "== LXC config of legacy", "== certificates", "== findings"):
        assert title in text
    assert "email.cacert.test" in text   # the certificate's name, read from the public part


def test_drift_report_per_service(runs):
    doc = json.loads(runs["drift_json"].stdout)
    by_service = {}
    for f in doc["findings"]:
        by_service.setdefault(f["service"], []).append(f)
    assert {"postfix", "dovecot", "mariadb"} <= set(by_service), runs["drift"].stdout
    # The container's host: its steps, or the reason the deploy would stop there (the
    # legacy's data volume is not made by the lab).
    assert "infra02" in by_service or any(
        f["kind"] == "blocked" and f["host"] == "@local"
        for f in by_service.get("deploy", [])), runs["drift"].stdout
    mariadb = "\n".join(f["what"] for f in by_service["mariadb"])
    assert "legacy_dovecot_passdb: live view unknown to the deploy" in mariadb
    assert "users: live column(s) realname, created unknown" in mariadb
    assert "dovecot@localhost: revoked SELECT on legacy_dovecot_passdb" in mariadb
    dovecot = "\n".join(f["what"] for f in by_service["dovecot"])
    assert re.search(r"MD5-CRYPT.*bob@cacert\.test, dave@cacert\.test", dovecot), dovecot
    assert "\ndoveconf " in "\n" + dovecot, dovecot
    secrets = [f["what"] for f in doc["findings"] if f["kind"] == "secret"]
    assert secrets, runs["drift"].stdout
    for line in secrets:
        assert re.search(r"content not shown\): sha256 \S+ -> [0-9a-f]{64}", line), line
    # The text report (another run: the lab host's side may differ meanwhile): a table per
    # service.
    text = runs["drift"].stdout
    assert "nothing was written on any host" in text
    for service in ("postfix", "dovecot", "mariadb"):
        assert f"== {service}\n" in text


def test_drift_shows_no_secret_content(runs):
    secrets = LAB / "secrets"
    output = runs["drift"].stdout + runs["drift_json"].stdout + runs["drift"].stderr
    for path in list(secrets.glob("*.password")) + list(secrets.glob("*.key.pem")) + \
            [secrets / "backup.key"]:
        if path.is_file():
            for line in path.read_text().splitlines():
                if len(line.strip()) >= 16 and not line.startswith("-----"):
                    assert line.strip() not in output, f"content of {path.name} shown"


# --- the deployed lab container: adopting what this deploy made finds no drift in it -------

def _adopt_lab(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.setdefault("CACERT_EMAIL_SECRETS", str(LAB / "secrets"))
    return subprocess.run([sys.executable, "-m", "operations.adopt", "inventories/lab.py",
                           *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)


def test_deployed_container_adopts_as_its_inventory_without_drift(lab, ssh, tmp_path):
    """Settings, schema and vmail owner the deploy made read back as the deploy renders them
    (no false drift); the container's configuration is unchanged by the reading."""
    written = tmp_path / "adopted.json"
    with lock.held():   # no deploy of another test changes the container meanwhile
        before = ssh(_STATE).stdout
        adopted_run = _adopt_lab("--write", str(written))
        drift_run = _adopt_lab("--drift", "--json")
        after = ssh(_STATE).stdout
    assert after == before
    assert adopted_run.returncode == 0, adopted_run.stderr
    assert drift_run.returncode == 0, drift_run.stderr
    adopted = json.loads(written.read_text())
    assert adopted["vmail_uid"] == 5000
    assert adopted["container_net"]["ipv4"] == f"{lab['address']}/24"
    assert adopted["_password_schemes"] == {"BLF-CRYPT": len(lab["accounts"])}
    findings = json.loads(drift_run.stdout)["findings"]
    false_drift = [f for f in findings if f["kind"] in ("setting", "schema", "vmail", "lxc")]
    assert false_drift == []
