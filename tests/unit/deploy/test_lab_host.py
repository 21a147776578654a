"""operations/lab_host.py against a fake host, and its facts' parsing."""
import json

from tests.unit.deploy import fake_host  # noqa: F401  (puts the repository on sys.path)
from tests.unit.deploy.fake_host import run

from operations import lab_host

LAB = {
    "container_net": {"link": "labbr0", "hwaddr": "00:16:3e:ca:ce:19", "ipv4": "10.0.3.19/24",
                      "ipv4_gateway": "10.0.3.1", "ipv6": None, "ipv6_gateway": None},
    "apt_proxy": "http://10.0.3.1:3142",
    "trusted_hosts": {"monitor": ["10.0.3.2"], "community": ["10.0.3.3", "192.0.2.9"]},
    "mail_domain": "cacert.test",
    "hostnames": {"email": "email.cacert.test", "community": "community.cacert.test",
                  "infra": "email.infra.cacert.test", "intra": "email.intra.cacert.test"},
    "data_volume_host_path": "/srv/cacert-lab/mail",
}


def _commands(ops):
    return [c for op in ops for c in op.commands]


def test_fresh_machine_gets_bridge_addresses_volume_and_daemons():
    ops = run(lab_host.prepare, data=LAB, groups=("lab_host",))
    commands = _commands(ops)
    assert "ip link add labbr0 address 02:00:0a:00:03:01 type bridge" in commands
    for address in ("10.0.3.1/24", "10.0.3.2/24", "10.0.3.3/24"):
        assert f"ip addr add {address} dev labbr0" in commands
    # Only trusted hosts on the lab network become bridge addresses.
    assert not any("192.0.2.9" in c for c in commands)
    assert "mount -o loop /var/lib/cacert-lab/mail.img /srv/cacert-lab/mail" in commands
    assert any("mkfs.ext4" in c for c in commands)
    assert any("BindAddress=10.0.3.1 Port=3142" in c for c in commands)
    assert "dnsmasq --conf-file=/etc/cacert-lab/dnsmasq.conf" in commands


def test_existing_bridge_volume_are_reused():
    ops = run(lab_host.prepare, data=LAB, groups=("lab_host",), facts={
        "Link": {"up": True, "addresses": ["10.0.3.1/24", "10.0.3.2/24", "10.0.3.3/24"],
                 "hwaddr": "02:00:0a:00:03:01"},
        "File": {"mode": 644, "mtime": None},
        "Mounts": {"/srv/cacert-lab/mail": {"device": "/dev/loop0", "type": "ext4",
                                            "options": []}},
    })
    commands = _commands(ops)
    assert not any(c.startswith("ip ") for c in commands)
    assert not any("mkfs" in c or "mount -o loop" in c for c in commands)


def test_the_bridge_has_a_mac_of_its_own_not_a_ports():
    # A bridge takes its lowest port's MAC, which changes when a container comes or goes.
    created = _commands(run(lab_host.prepare, data=LAB, groups=("lab_host",)))
    assert "ip link add labbr0 address 02:00:0a:00:03:01 type bridge" in created
    ops = run(lab_host.prepare, data=LAB, groups=("lab_host",), facts={
        "Link": {"up": True, "addresses": ["10.0.3.1/24", "10.0.3.2/24", "10.0.3.3/24"],
                 "hwaddr": "fe:09:fa:dc:61:65"},
        "File": {"mode": 644, "mtime": None},
        "Mounts": {"/srv/cacert-lab/mail": {"device": "/dev/loop0", "type": "ext4",
                                            "options": []}},
    })
    commands = _commands(ops)
    assert [c for c in commands if c.startswith("ip ")] == [
        "ip link set labbr0 address 02:00:0a:00:03:01"]
    # announced, so running containers' ARP caches follow the change at once
    assert commands.index("sysctl -qw net.ipv4.conf.labbr0.arp_notify=1") < commands.index(
        "ip link set labbr0 address 02:00:0a:00:03:01")


def test_dnsmasq_serves_the_lab_zone_and_nothing_else():
    ops = run(lab_host.prepare, data=LAB, groups=("lab_host",))
    conf = [op for op in ops if op.name.endswith("dnsmasq config")][0]
    text = conf.uploads["/etc/cacert-lab/dnsmasq.conf"].splitlines()
    for line in ("listen-address=10.0.3.1", "no-resolv", "local=/#/",
                 "host-record=email.cacert.test,10.0.3.19",
                 "host-record=community.cacert.test,10.0.3.19",
                 "mx-host=cacert.test,email.cacert.test,10"):
        assert line in text
    assert not any(line.startswith("server=") for line in text)


def test_link_fact_parses_ip_json():
    fact = lab_host.Link()
    assert fact.process([]) is None
    out = json.dumps([{"ifname": "labbr0", "flags": ["BROADCAST", "MULTICAST", "UP"],
                       "address": "02:00:0a:00:03:01",
                       "addr_info": [{"family": "inet", "local": "10.0.3.1", "prefixlen": 24},
                                     {"family": "inet", "local": "10.0.3.2", "prefixlen": 24}]}])
    assert fact.process([out]) == {"up": True, "addresses": ["10.0.3.1/24", "10.0.3.2/24"],
                                   "hwaddr": "02:00:0a:00:03:01"}
    down = json.dumps([{"ifname": "labbr0", "flags": ["BROADCAST"], "addr_info": []}])
    assert fact.process([down]) == {"up": False, "addresses": [], "hwaddr": None}
