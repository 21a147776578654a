"""The container the infra02 deploy made: systemd, network, data volume, DNS, apt, SSH.

Real checks against the running lab (./lab/up); each asserts something the container could
get wrong, read from the container itself or over the lab network.
"""
import json
import random
import socket
import struct
import time

import paramiko
import pytest

from lab import topology

pytestmark = pytest.mark.slow


def test_container_boots_systemd(ssh):
    assert ssh("cat /proc/1/comm").stdout.strip() == "systemd"
    state = ssh("systemctl is-system-running --wait", check=False).stdout.strip()
    failed = ssh("systemctl --failed --no-legend --plain", check=False).stdout
    assert state == "running", f"system state {state!r}; failed units:\n{failed}"


def test_eth0_has_the_inventory_mac_and_address(ssh, lab):
    link = json.loads(ssh("ip -j addr show dev eth0").stdout)[0]
    assert link["address"] == topology.CONTAINER_HWADDR
    ipv4 = [f"{a['local']}/{a['prefixlen']}" for a in link["addr_info"] if a["family"] == "inet"]
    assert ipv4 == [f"{lab['address']}/{topology.PREFIXLEN}"]
    route = ssh("ip -4 route show default").stdout
    assert f"via {topology.BRIDGE_ADDRESS} dev eth0" in route


def test_data_volume_is_a_separate_filesystem(ssh, lab):
    volume = lab["data_volume"]
    assert ssh(f"stat -c %d / {volume}").stdout.split()[0] != \
        ssh(f"stat -c %d {volume}").stdout.strip()
    mount = json.loads(ssh(f"findmnt -J -o TARGET,FSTYPE --mountpoint {volume}").stdout)
    assert mount["filesystems"][0]["fstype"] == "ext4"
    # Written inside, it is on the image mounted on the host.
    token = f"probe-{random.getrandbits(64):x}"
    ssh(f"echo {token} > {volume}/.lab-probe")
    try:
        with open(f"{topology.DATA_VOLUME_HOST_PATH}/.lab-probe") as f:
            assert f.read().strip() == token
    finally:
        ssh(f"rm -f {volume}/.lab-probe")


def _dns(name, qtype, server=topology.BRIDGE_ADDRESS, timeout=3.0):
    """One UDP DNS query: (rcode, answer count, authority count). No answer within
    ``timeout`` raises socket.timeout."""
    types = {"A": 1, "MX": 15}
    qid = random.getrandbits(16)
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    packet = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + question + \
        struct.pack(">HH", types[qtype], 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(packet, (server, 53))
        reply = s.recv(4096)
    rid, flags, _, ancount, nscount = struct.unpack(">HHHHH", reply[:10])
    assert rid == qid
    return flags & 0xF, ancount, nscount


def test_lab_dns_knows_the_lab_zone(lab):
    for name in (lab["hostnames"]["email"], lab["hostnames"]["community"]):
        rcode, answers, _ = _dns(name, "A")
        assert (rcode, answers) == (0, 1), name
    rcode, answers, _ = _dns(lab["domain"], "MX")
    assert (rcode, answers) == (0, 1)


def test_lab_dns_answers_nxdomain_at_once_for_other_names():
    """At once: the lab DNS answers from its own data (local=/#/), it neither waits on an
    upstream (no answer, or SERVFAIL, after the upstream's timeout) nor refuses (REFUSED: the
    container's resolver would try its next server). How long the answer takes is measured
    by bench/lab_timings.py."""
    for name in ("deb.debian.org", "www.example.org", "nothing.cacert.test"):
        try:
            rcode, answers, authority = _dns(name, "A")
        except socket.timeout:
            pytest.fail(f"{name}: no answer within 3 s: the lab DNS waits on an upstream")
        assert (rcode, answers) == (3, 0), name  # NXDOMAIN
        # an upstream's NXDOMAIN carries its zone's SOA (RFC 2308); a local=/#/ one has none
        assert authority == 0, f"{name}: an NXDOMAIN from an upstream"


def test_container_resolves_through_the_lab_dns(ssh, lab):
    # community.* is not in the container's /etc/hosts: this answer comes from the lab DNS.
    hosts = ssh(f"getent hosts {lab['hostnames']['community']}").stdout.split()
    assert hosts[0] == lab["address"]
    start = time.monotonic()
    other = ssh("getent hosts www.example.org", check=False)
    assert other.returncode == 2 and other.stdout == ""  # not found
    assert time.monotonic() - start < 5


def test_apt_reaches_debian_only_through_the_proxy(ssh):
    proxy = ssh("apt-config dump Acquire::http::Proxy").stdout
    assert f"http://{topology.BRIDGE_ADDRESS}:{topology.APT_PROXY_PORT}" in proxy
    ssh("apt-get -q update", timeout=300)
    direct = ssh("apt-get -q -o Acquire::http::Proxy=DIRECT -o Acquire::Retries=0 update",
                 check=False, timeout=120)
    assert "Failed to fetch" in direct.stdout + direct.stderr or direct.returncode != 0
    assert "Could not resolve" in direct.stdout + direct.stderr


def test_container_has_no_route_past_the_host(ssh):
    """Even with a mirror's real address, nothing leaves the bridge (no NAT, no forwarding)."""
    try:
        address = socket.getaddrinfo("deb.debian.org", 80, socket.AF_INET)[0][4][0]
    except OSError:
        pytest.skip("this machine cannot resolve deb.debian.org to try a direct connection")
    probe = ("python3 -c \"import socket; socket.create_connection(('%s', 80), timeout=5)\""
             % address)
    assert ssh(probe, check=False).returncode != 0


def test_ssh_offers_public_keys_only(lab):
    transport = paramiko.Transport((lab["address"], lab["ssh"]["port"]))
    try:
        transport.start_client(timeout=10)
        with pytest.raises(paramiko.BadAuthenticationType) as refused:
            transport.auth_none("root")
        assert refused.value.allowed_types == ["publickey"]
        with pytest.raises(paramiko.SSHException):
            transport.auth_password("root", "not-a-password")
    finally:
        transport.close()


def test_sshd_effective_config(ssh):
    config = ssh("sshd -T").stdout.lower().splitlines()
    assert "passwordauthentication no" in config
    assert "kbdinteractiveauthentication no" in config
    assert "permitrootlogin without-password" in config or \
        "permitrootlogin prohibit-password" in config


def test_unattended_upgrades_take_security_updates_only(ssh):
    patterns = ssh("apt-config dump Unattended-Upgrade::Origins-Pattern").stdout
    entries = [line for line in patterns.splitlines() if line.startswith(
        "Unattended-Upgrade::Origins-Pattern:: ")]
    assert entries and all("label=Debian-Security" in e for e in entries), patterns
    assert 'APT::Periodic::Unattended-Upgrade "1"' in ssh("apt-config dump APT::Periodic").stdout


def test_names(ssh, lab):
    assert ssh("hostname").stdout.strip() == "email"
    assert ssh("hostname -f").stdout.strip() == lab["hostnames"]["email"]
    assert ssh("cat /etc/mailname").stdout.strip() == lab["hostnames"]["email"]


def test_infra02_deploy_rerun_changes_nothing(run_infra02_deploy):
    # A first run converges whatever is due by now (the lab host's apt lists are refreshed
    # when older than an hour, which the time since `lab up` may have crossed); the run right
    # after it must change nothing.
    first = run_infra02_deploy()
    assert first.returncode == 0, first.stderr[-3000:]
    result = run_infra02_deploy("--json")
    assert result.returncode == 0, result.stderr[-3000:]
    totals = json.loads(result.stdout)["results"]["totals"]
    changed = [op["name"] for op in json.loads(result.stdout)["results"]["operations"]
               if op["success"]]
    assert totals["error"] == 0
    assert totals["success"] == 0, f"changed on a re-run: {changed}"
