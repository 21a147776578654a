"""operations/lxc_config.py: which lines of a live LXC config a NIC of the inventory owns."""
from tests.unit.deploy import fake_host  # noqa: F401  (puts the repository on sys.path)

from operations import lxc_config

DATA = {"container_name": "email", "container_autostart": True,
        "container_net": {"link": "br0", "ipv4": "192.0.2.19/24"},
        "container_extra_nets": [{"name": "eth1", "link": "br1", "ipv4": "198.51.100.19/24"}],
        "data_volume_host_path": "/srv/email-data", "data_volume": "/srv/mail",
        "container_mounts": []}
MANAGED_TAIL = ("lxc.uts.name = email\nlxc.start.auto = 1\n"
                "lxc.mount.entry = /srv/email-data srv/mail none bind,create=dir 0 0\n")


def test_an_unnamed_nic_is_lxcs_eth_of_its_index():
    live = ("lxc.net.0.type = veth\nlxc.net.0.link = br0\nlxc.net.0.flags = up\n"
            "lxc.net.0.ipv4.address = 192.0.2.19/24\n"
            "lxc.net.1.type = veth\nlxc.net.1.link = br1\nlxc.net.1.flags = up\n"
            "lxc.net.1.ipv4.address = 198.51.100.19/24\n" + MANAGED_TAIL)
    merged = lxc_config.merge(live, lxc_config.wanted(DATA))
    assert merged.changed == ("lxc.net.0.name", "lxc.net.1.name")
    assert merged.text.splitlines()[4] == "lxc.net.0.name = eth0"
    assert merged.text.splitlines()[9] == "lxc.net.1.name = eth1"


def test_a_nic_is_found_by_its_name_whatever_its_index():
    live = ("lxc.net.3.name = eth1\nlxc.net.3.type = veth\nlxc.net.3.link = br1\n"
            "lxc.net.3.flags = up\nlxc.net.3.ipv4.address = 198.51.100.19/24\n"
            "lxc.net.0.type = veth\nlxc.net.0.link = br0\nlxc.net.0.flags = up\n"
            "lxc.net.0.name = eth0\nlxc.net.0.ipv4.address = 192.0.2.19/24\n" + MANAGED_TAIL)
    merged = lxc_config.merge(live, lxc_config.wanted(DATA))
    assert merged.changed == () and merged.text == live


def test_a_repeated_managed_key_keeps_its_first_line_only():
    live = ("lxc.uts.name = email\nlxc.uts.name = other\nlxc.start.auto = 1\n"
            "lxc.net.0.type = veth\nlxc.net.0.link = br0\nlxc.net.0.flags = up\n"
            "lxc.net.0.name = eth0\nlxc.net.0.ipv4.address = 192.0.2.19/24\n"
            "lxc.mount.entry = /srv/email-data srv/mail none bind,create=dir 0 0\n"
            "lxc.mount.entry = /old/data /srv/mail/ none bind 0 0\n")
    merged = lxc_config.merge(live, lxc_config.wanted({**DATA, "container_extra_nets": []}))
    assert merged.changed == ("lxc.uts.name", "lxc.mount.entry srv/mail")
    assert "other" not in merged.text and "/old/data" not in merged.text
    assert merged.restart == merged.changed


def test_dir_rootfs():
    assert lxc_config.dir_rootfs("dir:/var/lib/lxc/email/rootfs/") == "/var/lib/lxc/email/rootfs"
    assert lxc_config.dir_rootfs("/var/lib/lxc/email/rootfs") == "/var/lib/lxc/email/rootfs"
    assert lxc_config.dir_rootfs("lvm:/dev/vg0/email") is None
    assert lxc_config.dir_rootfs("zfs:tank/email") is None
