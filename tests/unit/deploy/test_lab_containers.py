"""lab/containers.py and lab/legacy: the descriptions, configs, records and payloads that
`python -m lab container up|down` and the whole lab's up/down work from (no container here)."""
import copy
import io
import json
import subprocess
import tarfile

import pytest
from tests.unit.deploy import fake_host  # noqa: F401  (puts the repository on sys.path)

import lab.__main__ as lab_main
from lab import containers, legacy, lxc, topology
from lab.legacy import builder as legacy_build

LEGACY = topology.CONTAINERS["legacy"]


def test_every_described_container_is_usable():
    for name, spec in topology.CONTAINERS.items():
        assert containers.problems(name, spec) == []


def test_a_bad_description_is_reported_whole():
    spec = copy.deepcopy(LEGACY)
    spec["release"] = "buster"
    spec["nics"][1]["bridge"] = "br-nowhere"
    spec["nics"][2]["address"] = "10.0.3.77/24"      # not on labbr2's network
    spec["nics"][0]["hwaddr"] = "00:16:3E"
    found = containers.problems("email", spec)
    assert len(found) == 5, found
    text = "\n".join(found)
    for words in ("'email' is not a usable", "buster", "br-nowhere", "10.0.3.77/24",
                  "00:16:3E"):
        assert words in text


def test_the_hand_written_legacy_config_declares_the_described_nics():
    text = containers.config_text("legacy", LEGACY)
    assert "# Managed by Puppet" in text
    assert [nic["address"] for nic in containers.config_nics(text)] == [
        "10.0.3.29/24", "10.0.4.19/24", "10.0.5.19/24"]


def test_a_hand_written_config_that_disagrees_with_the_description_is_refused(monkeypatch):
    spec = copy.deepcopy(LEGACY)
    spec["nics"][1]["address"] = "10.0.4.20/24"
    with pytest.raises(containers.ContainerError, match="lab/legacy/lxc.conf declares NICs"):
        containers.config_text("legacy", spec)


def test_a_generated_config_declares_its_nics_and_the_gateway_on_eth0():
    spec = {**LEGACY, "config": "generated"}
    text = containers.config_text("successor", spec)
    assert containers.config_nics(text) == [
        {k: nic[k] for k in ("name", "bridge", "address", "hwaddr")} for nic in LEGACY["nics"]]
    assert "lxc.net.0.ipv4.gateway = 10.0.3.1" in text
    assert "lxc.net.1.ipv4.gateway" not in text
    assert "lxc.rootfs.path = dir:/var/lib/lxc/successor/rootfs" in text


def test_the_rootfs_gets_the_lab_proxy_dns_key_and_every_nic():
    files = containers.rootfs_files(LEGACY, "ssh-ed25519 AAAA lab\n")
    assert files["etc/apt/apt.conf.d/01proxy"][0] == \
        'Acquire::http::Proxy "http://10.0.3.1:3142";\n'
    assert "nameserver 10.0.3.1" in files["etc/resolv.conf"][0]
    assert files["root/.ssh/authorized_keys"] == ("ssh-ed25519 AAAA lab\n", 0o600)
    for nic in ("eth0", "eth1", "eth2"):
        assert f"iface {nic} inet manual" in files["etc/network/interfaces"][0]
    # bullseye: no security suite in the lab (topology.security_mirror).
    assert "security" not in files["etc/apt/sources.list"][0]


def test_the_record_has_the_contracted_keys():
    entry = containers.record("legacy", LEGACY, {"domain": "cacert.test"})
    assert entry["address"] == "10.0.3.29"
    assert entry["addresses"] == {"eth0": "10.0.3.29", "eth1": "10.0.4.19", "eth2": "10.0.5.19"}
    assert entry["ssh"] == {"user": "root", "key": ".lab/id_ed25519", "port": 22,
                            "known_hosts": ".lab/known_hosts-legacy"}
    assert entry["role"] == "legacy" and entry["domain"] == "cacert.test"


def test_a_new_whole_lab_up_keeps_the_records_of_containers_that_still_exist(tmp_path):
    for name in ("legacy", "gone"):
        (tmp_path / f"{name}.json").write_text(json.dumps({"container": name}))
    kept = containers.kept_records(tmp_path, exists=lambda name: name == "legacy")
    assert kept == {"legacy": {"container": "legacy"}}
    description = lab_main.lab_description("bullseye", [], kept)
    assert description["containers"] == kept
    assert description["container"] == "email"        # the existing keys keep their meaning
    assert lab_main.lab_description("bullseye", [])["containers"] == {}


def test_the_whole_lab_down_destroys_every_further_container_and_extra_bridge(
        tmp_path, monkeypatch):
    # Mocked: a unit test may not destroy containers, bridges or volumes of the machine it
    # runs on.
    destroyed, removed, volumes = [], [], []
    monkeypatch.setattr(containers, "LAB", tmp_path)
    monkeypatch.setattr(containers, "REGISTRY", tmp_path / "containers")
    (tmp_path / "containers").mkdir()
    (tmp_path / "containers" / "successor.json").write_text("{}")
    (tmp_path / "legacy").mkdir()
    (tmp_path / "legacy" / "accounts.json").write_text("[]")
    monkeypatch.setattr(lxc, "destroy", destroyed.append)
    monkeypatch.setattr(lxc, "release", lambda name: "bullseye")
    monkeypatch.setattr(lxc, "remove_bridge", removed.append)
    monkeypatch.setattr(lxc, "remove_volume", lambda *args: volumes.append(args))
    monkeypatch.setitem(topology.CONTAINERS, "legacy",
                        {**LEGACY, "host_dirs": [str(tmp_path / "spool")]})
    (tmp_path / "spool").mkdir()
    containers.destroy_all()
    assert sorted(destroyed) == sorted({"successor", *topology.CONTAINERS})
    assert sorted(removed) == sorted(topology.EXTRA_BRIDGES)
    assert volumes == [(LEGACY["data_volume"]["path"], LEGACY["data_volume"]["image"])]
    assert not (tmp_path / "legacy").exists() and not (tmp_path / "spool").exists()
    assert not (tmp_path / "containers" / "successor.json").exists()


def test_a_container_another_lab_prepared_is_destroyed_and_ours_is_kept(tmp_path, monkeypatch):
    # A machine image taken with the lab up holds containers whose root key is another
    # lab's: SSH would refuse ours. Mocked like the test above: no real container is touched.
    destroyed = []
    monkeypatch.setattr(containers, "LAB", tmp_path / "lab")
    monkeypatch.setattr(containers, "REGISTRY", tmp_path / "lab" / "containers")
    monkeypatch.setattr(lxc, "LXC_PATH", tmp_path / "lxc")
    monkeypatch.setattr(lxc, "destroy", destroyed.append)
    monkeypatch.setattr(lxc, "remove_volume", lambda *args: None)
    monkeypatch.setitem(topology.CONTAINERS, "legacy", {**LEGACY, "host_dirs": []})
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "id_ed25519.pub").write_text("ssh-ed25519 AAAAearlier lab\n")
    earlier = containers._marker_text()
    (tmp_path / "lab" / "id_ed25519.pub").write_text("ssh-ed25519 AAAAcurrent lab\n")
    current = containers._marker_text()
    assert earlier != current
    for name, text in (("legacy", earlier), ("backup", current)):
        (tmp_path / "lxc" / name).mkdir(parents=True)
        (tmp_path / "lxc" / name / containers.PREPARED).write_text(text)
    containers.forget_foreign()
    assert destroyed == ["legacy"]


def test_a_bridge_stays_while_another_container_uses_it(monkeypatch):
    monkeypatch.setitem(topology.CONTAINERS, "backup", {
        "nics": [{"name": "eth0", "bridge": "labbr0"}, {"name": "eth1", "bridge": "labbr1"}]})
    assert containers.bridges_in_use(["legacy"]) - containers.bridges_in_use(["backup"]) == \
        {"labbr2"}


def _openssl_hash(password, scheme, salt):
    flag = {"SHA512-CRYPT": "-6", "MD5-CRYPT": "-1"}[scheme]
    return subprocess.run(["openssl", "passwd", flag, "-salt", salt, "-stdin"],
                          input=password + "\n", capture_output=True, text=True,
                          check=True).stdout.strip()


def test_the_accounts_are_stored_hashed_in_their_scheme_and_never_in_clear(tmp_path):
    made, fresh = legacy_build.accounts(tmp_path)
    assert fresh and legacy_build.accounts(tmp_path) == (made, False)
    assert (tmp_path / "legacy" / "accounts.json").stat().st_mode & 0o777 == 0o600
    assert {a["user"]: (a["scheme"], a["active"]) for a in made} == {
        "alice": ("SHA512-CRYPT", True), "bob": ("MD5-CRYPT", True),
        "carol": ("SHA512-CRYPT", True), "dave": ("MD5-CRYPT", False)}
    sql = legacy_build.users_sql(made)
    for account in made:
        assert account["password"] not in sql
        row = sql.split("'%s'" % account["email"], 1)[1]
        prefix = "{%s}" % account["scheme"]
        stored = row.split(prefix, 1)[1].split("'", 1)[0]
        salt = stored.split("$")[2]
        assert stored == _openssl_hash(account["password"], account["scheme"], salt)


def test_the_payload_keeps_keys_private_and_holds_no_clear_password(tmp_path):
    made, _ = legacy_build.accounts(tmp_path)
    issued = {"email.cacert.test": (b"CHAIN", b"KEY")}
    payload = legacy_build.payload(legacy_build.users_sql(made), issued)
    with tarfile.open(fileobj=io.BytesIO(payload)) as tar:
        modes = {m.name: m.mode for m in tar.getmembers()}
        assert all(m.uid == 0 and m.gid == 0 for m in tar.getmembers())
    assert modes["etc/ssl/private/email.cacert.test.key"] == 0o600
    assert modes["etc/ssl/certs/email.cacert.test.pem"] == 0o644
    assert modes["root/cacert-lab-legacy/build.sh"] == 0o700
    assert modes["root/cacert-lab-legacy/users.sql"] == 0o600
    assert modes["etc/postfix/main.cf"] == 0o644
    for account in made:
        assert account["password"].encode() not in payload


def test_the_legacy_record_lists_both_kinds_of_alias():
    entry = legacy_build.record([{"user": "a", "email": "a@cacert.test", "password": "p",
                                  "scheme": "MD5-CRYPT", "active": True, "realname": None}])
    assert entry["vmail_uid"] == 2000 and entry["mail_root"] == "/home/mailboxes"
    assert {a["kind"] for a in entry["aliases"]} == {"db", "etc_aliases"}
    assert entry["accounts"][0] == {"user": "a", "email": "a@cacert.test", "password": "p",
                                    "scheme": "MD5-CRYPT", "active": True}
    assert legacy.ALIASES is legacy_build.ALIASES


def test_a_mail_container_another_lab_made_is_destroyed_before_the_deploy(tmp_path,
                                                                            monkeypatch):
    # Its backup repository holds the other lab's key, which the deploy never replaces: the
    # first deploy would fail on it. Ours (marked after phase 1) and a missing one are kept.
    # Mocked: no real container is touched.
    destroyed = []
    monkeypatch.setattr(containers, "LAB", tmp_path / "lab")
    monkeypatch.setattr(lxc, "LXC_PATH", tmp_path / "lxc")
    monkeypatch.setattr(lab_main, "_destroy_container", lambda: destroyed.append("email"))
    monkeypatch.setattr(lxc, "release", lambda name: releases.get(name))
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "id_ed25519.pub").write_text("ssh-ed25519 AAAAcurrent lab\n")
    (tmp_path / "lxc" / topology.CONTAINER).mkdir(parents=True)
    releases = {}
    lab_main._replace_unusable_container("bookworm")
    releases[topology.CONTAINER] = "bookworm"
    containers.mark_prepared(topology.CONTAINER)
    lab_main._replace_unusable_container("bookworm")
    assert destroyed == []
    (tmp_path / "lxc" / topology.CONTAINER / containers.PREPARED).write_text("another lab\n")
    lab_main._replace_unusable_container("bookworm")
    assert destroyed == ["email"]
    (tmp_path / "lxc" / topology.CONTAINER / containers.PREPARED).unlink()
    lab_main._replace_unusable_container("bookworm")
    assert destroyed == ["email", "email"]
