"""operations/infra02.py against fake hosts: create once, configure from data, never destroy."""
import pytest
from tests.unit.deploy import fake_host  # noqa: F401  (puts the repository on sys.path)
from tests.unit.deploy.fake_host import run

from pyinfra.api.exceptions import DeployError

from operations import infra02

PROD_NET = {"link": "br0", "hwaddr": "00:ff:8f:e0:4a:90", "ipv4": "213.154.225.228/24",
            "ipv4_gateway": "213.154.225.1", "ipv6": "2001:7b8:616:162:2::228/64",
            "ipv6_gateway": "2001:7b8:616:162::1"}
DATA = {"container_net": PROD_NET, "root_authorized_keys": ["ssh-ed25519 AAAAC3Nz deploy"]}
MOUNTED = {"/srv/email-data": {"device": "/dev/mapper/vg-mail", "type": "ext4", "options": []}}


def _uploads(ops):
    result = {}
    for op in ops:
        result.update(op.uploads)
    return result


def _names(ops):
    return [op.name.split(" | ", 1)[1] for op in ops]


def test_new_container_is_created_configured_and_started():
    ops = run(infra02.container, data=DATA, groups=("infra02",), facts={"Mounts": MOUNTED})
    names = _names(ops)
    create = ops[names.index("Create container email (Debian bookworm)")]
    assert create.commands == [
        "lxc-create -n email -t debian -f /dev/null -- -r bookworm "
        "--mirror=http://deb.debian.org/debian "
        "--security-mirror=http://deb.debian.org/debian-security"]
    assert names.index("Create container email (Debian bookworm)") < \
        names.index("Container config") < names.index("Start container email")
    config = _uploads(ops)["/var/lib/lxc/email/config"]
    for line in ("lxc.net.0.hwaddr = 00:ff:8f:e0:4a:90", "lxc.net.0.link = br0",
                 "lxc.net.0.ipv4.address = 213.154.225.228/24",
                 "lxc.net.0.ipv4.gateway = 213.154.225.1",
                 "lxc.net.0.ipv6.address = 2001:7b8:616:162:2::228/64",
                 "lxc.net.0.ipv6.gateway = 2001:7b8:616:162::1",
                 "lxc.start.auto = 1",
                 "lxc.mount.entry = /srv/email-data srv/mail none bind,create=dir 0 0"):
        assert line in config.splitlines()
    interfaces = _uploads(ops)["/var/lib/lxc/email/rootfs/etc/network/interfaces"]
    assert "iface eth0 inet manual" in interfaces and "dhcp" not in interfaces.replace(
        "DHCP", "")
    keys = _uploads(ops)["/var/lib/lxc/email/rootfs/root/.ssh/authorized_keys"]
    assert "ssh-ed25519 AAAAC3Nz deploy" in keys.splitlines()


def test_no_proxy_and_no_nameservers_in_production_defaults():
    ops = run(infra02.container, data=DATA, groups=("infra02",), facts={"Mounts": MOUNTED})
    uploads = _uploads(ops)
    assert not any(path.endswith("01proxy") for path in uploads)
    assert not any(path.endswith("resolv.conf") for path in uploads)


def test_lab_data_sets_proxy_and_nameservers():
    ops = run(infra02.container, groups=("infra02",), facts={"Mounts": MOUNTED}, data={
        **DATA, "apt_proxy": "http://10.0.3.1:3142", "container_nameservers": ["10.0.3.1"]})
    uploads = _uploads(ops)
    assert 'Acquire::http::Proxy "http://10.0.3.1:3142";' in \
        uploads["/var/lib/lxc/email/rootfs/etc/apt/apt.conf.d/01proxy"]
    assert "nameserver 10.0.3.1" in uploads["/var/lib/lxc/email/rootfs/etc/resolv.conf"]


def test_existing_running_container_is_not_created_again():
    ops = run(infra02.container, data=DATA, groups=("infra02",),
              facts={"Mounts": MOUNTED,
                     "ContainerState": {"state": "RUNNING", "release": "bookworm"}})
    names = _names(ops)
    assert not any(n.startswith("Create container") for n in names)
    assert "Start container email" not in names
    assert "Restart container email for its new config" in names


def test_container_of_another_release_is_never_destroyed():
    with pytest.raises(DeployError, match="runs Debian bullseye but the inventory says bookworm"):
        run(infra02.container, data=DATA, groups=("infra02",),
            facts={"Mounts": MOUNTED,
                   "ContainerState": {"state": "RUNNING", "release": "bullseye"}})


def test_container_state_fact_parses_lxc_info():
    fact = infra02.ContainerState()
    assert fact.process([]) is None
    assert fact.process(["state=STOPPED", "release=trixie"]) == {"state": "STOPPED",
                                                                 "release": "trixie"}
    assert fact.process(["state=RUNNING"]) == {"state": "RUNNING", "release": ""}


def test_half_made_container_stops_the_run_with_the_way_out():
    with pytest.raises(DeployError, match="half-made.*lxc-destroy -n email"):
        run(infra02.container, data=DATA, groups=("infra02",),
            facts={"Mounts": MOUNTED,
                   "ContainerState": {"state": "PARTIAL", "release": ""}})


def test_unmounted_data_volume_stops_the_run():
    with pytest.raises(DeployError, match="/srv/email-data is not a mounted filesystem"):
        run(infra02.container, data=DATA, groups=("infra02",), facts={"Mounts": {}})


def test_lab_host_mounts_its_volume_in_the_same_run():
    ops = run(infra02.container, data=DATA, groups=("infra02", "lab_host"),
              facts={"Mounts": {}})
    assert any(op.name.endswith("Data volume directory on the host") for op in ops)


def test_symlinks_in_the_rootfs_are_never_written_through():
    links = ["/var/lib/lxc/email/rootfs/etc/resolv.conf"]
    with pytest.raises(DeployError, match="symlinks: /var/lib/lxc/email/rootfs/etc/resolv.conf"):
        run(infra02.container, data=DATA, groups=("infra02",),
            facts={"Mounts": MOUNTED, "Symlinks": links,
                   "ContainerState": {"state": "RUNNING", "release": "bookworm"}})


def test_symlinks_fact_is_asked_about_every_path_component():
    asked = []

    def symlinks(paths):
        asked.extend(paths)
        return []
    run(infra02.container, data=DATA, groups=("infra02",),
        facts={"Mounts": MOUNTED, "Symlinks": symlinks})
    for path in ("etc", "etc/apt", "etc/apt/apt.conf.d", "etc/apt/apt.conf.d/01proxy",
                 "root", "root/.ssh", "root/.ssh/authorized_keys"):
        assert f"/var/lib/lxc/email/rootfs/{path}" in asked


def test_without_a_security_mirror_the_security_suite_is_left_out():
    ops = run(infra02.container, groups=("infra02",), facts={"Mounts": MOUNTED},
              data={**DATA, "debian_release": "bullseye", "debian_security_mirror": None})
    create = next(op for op in ops if op.name.endswith("(Debian bullseye)"))
    assert "--security-mirror" not in create.commands[0]
    sources = _uploads(ops)["/var/lib/lxc/email/rootfs/etc/apt/sources.list"]
    assert "deb http://deb.debian.org/debian bullseye-updates main" in sources.splitlines()
    assert "-security" not in sources.replace("# No bullseye-security suite", "")


def test_the_security_suite_is_in_the_sources_by_default():
    ops = run(infra02.container, data=DATA, groups=("infra02",), facts={"Mounts": MOUNTED})
    sources = _uploads(ops)["/var/lib/lxc/email/rootfs/etc/apt/sources.list"]
    assert "deb http://deb.debian.org/debian-security bookworm-security main" in \
        sources.splitlines()
