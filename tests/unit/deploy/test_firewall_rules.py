"""operations/firewall.py: rules from the ports table, the rendered ruleset, its check."""
import os
import shutil
import subprocess

import pytest

from tests.unit.deploy import fake_host  # noqa: F401  (puts the repository on sys.path)
from tests.unit.deploy.fake_host import run

from operations.defaults import defaults
from operations import firewall
from operations.staging import render

STAGED = "/var/lib/cacert-deploy/staging/firewall/nftables.conf"
TRUSTED = {"monitor": ["10.0.3.2", "2001:db8::2"], "community": ["10.0.3.3/32"]}


def _ruleset(trusted=TRUSTED, ports=None):
    return render("files/firewall/nftables.conf.j2",
                  rules=firewall.rules(ports or defaults()["ports"], trusted))


def test_rules_follow_the_ports_table():
    by_name = {r["name"]: r for r in firewall.rules(defaults()["ports"], TRUSTED)}
    assert by_name["smtp"]["origin"] == "any"
    assert by_name["mariadb"]["origin"] == "local"
    assert (by_name["icinga2"]["ipv4"], by_name["icinga2"]["ipv6"]) == \
        (["10.0.3.2/32"], ["2001:db8::2/128"])
    assert by_name["selfservice_api"]["ipv4"] == ["10.0.3.3/32"]
    ports = [r["port"] for r in firewall.rules(defaults()["ports"], TRUSTED)]
    assert ports == sorted(ports)


def test_unknown_origin_is_named():
    with pytest.raises(firewall.FirewallError, match=r"ports\['icinga2'\].*'monitr'"):
        firewall.rules({"icinga2": {"port": 5665, "from": "monitr"}}, TRUSTED)


def test_bad_address_is_named():
    with pytest.raises(firewall.FirewallError, match=r"trusted_hosts\['monitor'\].*'10.0.3'"):
        firewall.rules({"icinga2": {"port": 5665, "from": "monitor"}}, {"monitor": ["10.0.3"]})


def test_bad_port_is_named():
    with pytest.raises(firewall.FirewallError, match=r"ports\['x'\]: port 70000"):
        firewall.rules({"x": {"port": 70000, "from": "any"}}, {})


def test_ruleset_opens_public_ports_and_restricts_the_others():
    text = _ruleset()
    for port in (22, 25, 80, 110, 143, 443, 465, 587, 993, 995, 4190):
        assert f"        tcp dport {port} accept\n" in text
    assert "ip saddr { 10.0.3.2/32 } tcp dport 5665 accept" in text
    assert "ip6 saddr { 2001:db8::2/128 } tcp dport 5665 accept" in text
    assert "ip saddr { 10.0.3.3/32 } tcp dport 9443 accept" in text
    assert "ip6 saddr" not in text.split("9443")[0].split("5665 accept")[-1]
    # 3306 appears in no accept rule: only loopback reaches it.
    assert "dport 3306" not in text
    assert "ct state established,related accept" in text
    assert "policy drop" in text and "reject with tcp reset" in text
    # Never the whole ruleset: fail2ban's table must survive a reload.
    commands = [line.strip() for line in text.splitlines()
                if line.strip() and not line.strip().startswith("#")]
    assert "flush ruleset" not in commands
    assert commands[:2] == ["table inet cacert_email {}", "delete table inet cacert_email"]


def test_origin_without_addresses_is_closed_to_everyone():
    text = _ruleset(trusted={"monitor": [], "community": []})
    assert "dport 5665" not in text and "dport 9443" not in text
    assert "no address listed for monitor" in text


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("unshare"),
                    reason="nft -c needs root (CAP_NET_ADMIN)")
def test_ruleset_passes_nft_check(tmp_path):
    """The real nft parser accepts it (checked in a new, empty network namespace)."""
    conf = tmp_path / "nftables.conf"
    conf.write_text(_ruleset())
    result = subprocess.run(["unshare", "--net", "nft", "-c", "-f", str(conf)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    conf.write_text(_ruleset().replace("accept\n", "acept\n", 1))
    assert subprocess.run(["unshare", "--net", "nft", "-c", "-f", str(conf)],
                          capture_output=True).returncode != 0


def test_deploy_checks_then_installs_then_loads():
    ops = run(firewall.nftables, data={"trusted_hosts": TRUSTED},
              facts={"Command": lambda command: "missing"})
    (config,) = [op for op in ops if "nftables.conf" in op.name]
    commands = config.commands
    assert commands.index(f"nft -c -f {STAGED}") < \
        next(i for i, c in enumerate(commands) if "mv -f" in c)
    assert "ip saddr { 10.0.3.2/32 } tcp dport 5665 accept" in config.uploads[STAGED]
    names = [op.name for op in ops]
    assert names.index("Firewall | Load the nftables ruleset") > names.index(config.name)
    (load,) = [op for op in ops if op.name == "Firewall | Load the nftables ruleset"]
    assert load.commands == ["nft -f /etc/nftables.conf"]
