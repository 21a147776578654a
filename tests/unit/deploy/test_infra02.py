"""operations/infra02.py against fake hosts: create once, configure from data (the LXC config
merged into the live one), restart only for what needs it, never destroy."""
import base64
import hashlib

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
    live = LIVE.replace("lxc.uts.name = email", "lxc.uts.name = old-name")
    ops = _existing(live)
    names = _names(ops)
    assert not any(n.startswith("Create container") for n in names)
    assert "Start container email" not in names
    assert "Restart container email: lxc.uts.name changed" in names


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


# --- the LXC config: merged into the live one, restart only for managed keys --------------

# A hand-written config like production's: three NICs, keys and a mount the inventory does
# not describe, comments. Its managed keys hold exactly what PROD_THREE_NICS says.
LIVE = """\
# Managed by Puppet: local changes are overwritten (they were, until the deploy took over)
lxc.include = /usr/share/lxc/config/debian.common.conf
lxc.include = /usr/share/lxc/config/debian.userns.conf
lxc.rootfs.path = dir:/var/lib/lxc/email/rootfs
lxc.uts.name = email
lxc.arch = amd64
lxc.idmap = u 0 100000 65536
lxc.idmap = g 0 100000 65536
lxc.cgroup2.memory.max = 2G
lxc.prlimit.nofile = 65536
lxc.start.auto = 1

# public
lxc.net.0.type = veth
lxc.net.0.link = br0
lxc.net.0.flags = up
lxc.net.0.hwaddr = 00:ff:8f:e0:4a:90
lxc.net.0.name = eth0
lxc.net.0.mtu = 1500
lxc.net.0.ipv4.address = 213.154.225.228/24
lxc.net.0.ipv4.gateway = 213.154.225.1
lxc.net.0.ipv6.address = 2001:7b8:616:162:2::228/64
lxc.net.0.ipv6.gateway = 2001:7b8:616:162::1
# intranet: email.intra.cacert.org
lxc.net.1.type = veth
lxc.net.1.link = br-intra
lxc.net.1.flags = up
lxc.net.1.hwaddr = 00:16:3e:00:02:19
lxc.net.1.name = eth1
lxc.net.1.ipv4.address = 172.16.2.19/24
# internal: email.infra.cacert.org (Icinga, the API)
lxc.net.2.type = veth
lxc.net.2.link = br-infra
lxc.net.2.flags = up
lxc.net.2.hwaddr = 00:16:3e:00:00:19
lxc.net.2.name = eth2
lxc.net.2.ipv4.address = 10.0.0.19/24

lxc.mount.entry = /srv/email-data srv/mail none bind,create=dir 0 0
# the operator's spool copy
lxc.mount.entry = /srv/spool-extra var/spool/extra none bind,create=dir 0 0
lxc.mount.entry = /srv/backup srv/backup none bind,ro,create=dir 0 0
"""
INTRA = {"name": "eth1", "link": "br-intra", "hwaddr": "00:16:3e:00:02:19",
         "ipv4": "172.16.2.19/24", "ipv4_gateway": None, "ipv6": None, "ipv6_gateway": None}
INFRA = {"name": "eth2", "link": "br-infra", "hwaddr": "00:16:3e:00:00:19",
         "ipv4": "10.0.0.19/24", "ipv4_gateway": None, "ipv6": None, "ipv6_gateway": None}
BACKUP = {"source": "/srv/backup", "target": "/srv/backup", "type": "none",
          "options": "bind,ro,create=dir"}
PROD_THREE_NICS = {**DATA, "container_extra_nets": [INTRA, INFRA], "container_mounts": [BACKUP]}
RUNNING = {"state": "RUNNING", "release": "bookworm"}
CONFIG = "/var/lib/lxc/email/config"


def _existing(live, data=PROD_THREE_NICS, state=RUNNING, converged=None, groups=("infra02",)):
    """The deploy on Infra02 whose container exists with config `live`; `converged`: the
    files ({path: text}) the host already holds as the deploy would write them."""
    converged = dict(converged or {}, **{CONFIG: live})
    modes = {CONFIG: 640, "/var/lib/lxc/email/rootfs/root/.ssh/authorized_keys": 600}

    def file_fact(path):
        if path not in converged:
            return None
        return {"mode": modes.get(path, 644), "user": "root", "group": "root", "mtime": None}

    directories = {"/var/lib/lxc/email/rootfs/root/.ssh", "/srv/email-data"}
    directories |= {path.rsplit("/", 1)[0] for path in converged}
    return run(infra02.container, data=data, groups=groups, facts={
        "Mounts": MOUNTED, "ContainerState": state, "ContainerConfig": live,
        "File": file_fact,
        "Sha1File": lambda path: hashlib.sha1(converged[path].encode()).hexdigest()
        if path in converged else None,
        "Directory": lambda path: {"mode": 700, "user": "root", "group": "root"}
        if path in directories else None,
        "DebPackages": {p: ["1"] for p in ("lxc", "lxc-templates", "debootstrap",
                                           "distro-info")},
    })


def _op(ops, name):
    return next(op for op in ops if _names([op])[0] == name)


def _restarts(ops):
    return [name for name in _names(ops) if name.startswith("Restart container")]


def test_unchanged_inventory_changes_nothing_on_a_hand_written_config():
    first = _existing(LIVE)
    assert _op(first, "Container config").commands == [] and _restarts(first) == []
    # With everything else as the deploy writes it, the whole run is a no-op.
    files = {path: text for op in first for path, text in op.uploads.items()}
    again = _existing(LIVE, converged=files)
    assert [op.name for op in again if op.commands] == [], again


def test_a_changed_address_on_eth1_restarts_once_naming_the_key():
    intra = {**INTRA, "ipv4": "172.16.2.20/24"}
    ops = _existing(LIVE, data={**PROD_THREE_NICS, "container_extra_nets": [intra, INFRA]})
    assert _restarts(ops) == ["Restart container email: lxc.net.1.ipv4.address changed"]
    new = _uploads(ops)[CONFIG]
    assert new == LIVE.replace("lxc.net.1.ipv4.address = 172.16.2.19/24",
                               "lxc.net.1.ipv4.address = 172.16.2.20/24")
    restart = _op(ops, "Restart container email: lxc.net.1.ipv4.address changed")
    assert restart.commands == ["lxc-stop -n email -t 60", "lxc-start -n email -d",
                                "lxc-wait -n email -s RUNNING -t 30"]
    assert _names(ops)[-1] == restart.name.split(" | ", 1)[1]  # after every file is written


def test_comments_order_and_unmanaged_keys_never_restart():
    lines = LIVE.splitlines()
    # the same managed values, reordered, spaced differently, with other comments and keys
    shuffled = "\n".join(["# rewritten by hand", "lxc.net.1.ipv4.address=172.16.2.19/24",
                          "lxc.cgroup2.cpu.max = 200000 100000"] +
                         [line for line in reversed(lines)
                          if "172.16.2.19" not in line and not line.startswith("#")]) + "\n"
    ops = _existing(shuffled)
    assert _restarts(ops) == []
    assert _op(ops, "Container config").commands == []


def test_autostart_is_rewritten_without_a_restart():
    ops = _existing(LIVE, data={**PROD_THREE_NICS, "container_autostart": False})
    assert _uploads(ops)[CONFIG] == LIVE.replace("lxc.start.auto = 1", "lxc.start.auto = 0")
    assert _restarts(ops) == []


def test_merge_keeps_every_unmanaged_line_in_order():
    intra = {**INTRA, "ipv4_gateway": "172.16.2.1", "hwaddr": "00:16:3E:00:02:19"}
    volume = {**PROD_THREE_NICS, "data_volume_host_path": "/srv/new-data",
              "container_extra_nets": [intra, INFRA],
              "container_mounts": [BACKUP, {"source": "/srv/logs", "target": "var/log/host",
                                            "type": "none", "options": "bind,create=dir"}]}
    ops = _existing(LIVE, data=volume, groups=("infra02", "lab_host"))  # no Mounts check
    new = _uploads(ops)[CONFIG].splitlines()
    managed = ("lxc.uts.name", "lxc.start.auto", "lxc.net.0.", "lxc.net.1.", "lxc.net.2.",
               "lxc.mount.entry = /srv/email-data", "lxc.mount.entry = /srv/new-data",
               "lxc.mount.entry = /srv/backup", "lxc.mount.entry = /srv/logs")
    unmanaged = [line for line in LIVE.splitlines() if not line.startswith(managed) or
                 line.startswith("lxc.net.0.mtu")]
    assert [line for line in new if not line.startswith(managed) or
            line.startswith("lxc.net.0.mtu")] == unmanaged
    # a missing key goes after its NIC's last line, a new mount after the last mount entry
    assert new[new.index("lxc.net.1.ipv4.address = 172.16.2.19/24") + 1] == \
        "lxc.net.1.ipv4.gateway = 172.16.2.1"
    assert "lxc.net.1.hwaddr = 00:16:3e:00:02:19" in new  # a MAC's case is no change
    assert new[-2:] == ["lxc.mount.entry = /srv/backup srv/backup none bind,ro,create=dir 0 0",
                        "lxc.mount.entry = /srv/logs var/log/host none bind,create=dir 0 0"]
    assert "lxc.mount.entry = /srv/new-data srv/mail none bind,create=dir 0 0" in new
    assert _restarts(ops) == [
        "Restart container email: lxc.mount.entry srv/mail, lxc.net.1.ipv4.gateway, "
        "lxc.mount.entry var/log/host changed"]


def test_a_nic_missing_from_the_live_config_gets_the_next_free_index():
    live = LIVE.split("# intranet")[0] + "lxc.mount.entry = /srv/email-data srv/mail none " \
        "bind,create=dir 0 0\n"
    ops = _existing(live, data={**PROD_THREE_NICS, "container_extra_nets": [INFRA],
                                "container_mounts": []})
    new = _uploads(ops)[CONFIG]
    assert new.startswith(live)
    assert new[len(live):].splitlines() == [
        "lxc.net.1.type = veth", "lxc.net.1.link = br-infra", "lxc.net.1.flags = up",
        "lxc.net.1.hwaddr = 00:16:3e:00:00:19", "lxc.net.1.name = eth2",
        "lxc.net.1.ipv4.address = 10.0.0.19/24"]
    assert _restarts(ops) == ["Restart container email: lxc.net.1.type, lxc.net.1.link, "
                              "lxc.net.1.flags, lxc.net.1.hwaddr, lxc.net.1.name, "
                              "lxc.net.1.ipv4.address changed"]


def test_a_nic_the_inventory_drops_its_gateway_from_loses_the_line():
    ops = _existing(LIVE, data={**PROD_THREE_NICS,
                                "container_net": {**PROD_NET, "ipv6_gateway": None}})
    assert _uploads(ops)[CONFIG] == LIVE.replace(
        "lxc.net.0.ipv6.gateway = 2001:7b8:616:162::1\n", "")
    assert _restarts(ops) == ["Restart container email: lxc.net.0.ipv6.gateway changed"]


def test_a_stopped_container_is_started_not_restarted():
    ops = _existing(LIVE.replace("172.16.2.19", "172.16.2.77"),
                    state={"state": "STOPPED", "release": "bookworm"})
    assert _restarts(ops) == [] and "Start container email" in _names(ops)


def test_new_container_renders_the_managed_keys_alone():
    ops = run(infra02.container, data=PROD_THREE_NICS, groups=("infra02",),
              facts={"Mounts": MOUNTED})
    config = _uploads(ops)[CONFIG]
    keys = [line.split(" = ")[0] for line in config.splitlines()
            if line and not line.startswith("#")]
    nic = ["type", "link", "flags", "hwaddr", "name", "ipv4.address"]
    assert keys == (["lxc.include", "lxc.rootfs.path", "lxc.uts.name", "lxc.arch",
                     "lxc.tty.max", "lxc.pty.max", "lxc.start.auto"] +
                    [f"lxc.net.0.{k}" for k in nic + ["ipv4.gateway", "ipv6.address",
                                                      "ipv6.gateway"]] +
                    [f"lxc.net.1.{k}" for k in nic] + [f"lxc.net.2.{k}" for k in nic] +
                    ["lxc.mount.entry"] * 2)
    assert "lxc.net.2.link = br-infra" in config.splitlines()
    assert "lxc.mount.entry = /srv/backup srv/backup none bind,ro,create=dir 0 0" in \
        config.splitlines()
    # the next run reads it back and finds nothing to change
    again = _existing(config)
    assert _op(again, "Container config").commands == [] and _restarts(again) == []


def test_interfaces_leave_all_three_nics_to_lxc():
    ops = run(infra02.container, data=PROD_THREE_NICS, groups=("infra02",),
              facts={"Mounts": MOUNTED})
    interfaces = _uploads(ops)["/var/lib/lxc/email/rootfs/etc/network/interfaces"]
    stanzas = [line for line in interfaces.splitlines()
               if line.startswith(("auto", "iface"))]
    assert stanzas == ["auto lo", "iface lo inet loopback",
                       "auto eth0", "iface eth0 inet manual",
                       "auto eth1", "iface eth1 inet manual",
                       "auto eth2", "iface eth2 inet manual"]


@pytest.mark.parametrize("rootfs", ["lvm:/dev/vg0/email", "zfs:tank/lxc/email",
                                    "dir:/srv/lxc/email/rootfs", None])
def test_a_rootfs_not_in_the_lxc_directory_stops_the_run(rootfs):
    live = "\n".join(line for line in LIVE.splitlines() if "rootfs.path" not in line)
    if rootfs:
        live += f"\nlxc.rootfs.path = {rootfs}\n"
    with pytest.raises(DeployError, match=rf"container email: its config's lxc.rootfs.path is "
                                          rf"{rootfs or 'not set'}, .* into "
                                          rf"/var/lib/lxc/email/rootfs from the host"):
        _existing(live)


def test_a_rootfs_path_without_the_dir_prefix_is_the_dir_backing_store():
    live = LIVE.replace("dir:/var/lib/lxc/email/rootfs", "/var/lib/lxc/email/rootfs/")
    assert _op(_existing(live), "Container config").commands == []


# What the lab's container config held when the deploy overwrote it (files/infra02/lxc.conf.j2
# rendered with inventories/lab.py's data, commit 045802f), blank lines of the template's
# conditionals included.
LAB_CONFIG_BEFORE = (
    "# Managed by cacert-email (operations/infra02.py); local changes are overwritten.\n"
    "lxc.include = /usr/share/lxc/config/debian.common.conf\n"
    "lxc.rootfs.path = dir:/var/lib/lxc/email/rootfs\nlxc.uts.name = email\n"
    "lxc.arch = amd64\nlxc.tty.max = 4\nlxc.pty.max = 1024\nlxc.start.auto = 1\n\n"
    "lxc.net.0.type = veth\nlxc.net.0.link = labbr0\nlxc.net.0.flags = up\n"
    "lxc.net.0.hwaddr = 00:16:3e:ca:ce:19\nlxc.net.0.name = eth0\n"
    "lxc.net.0.ipv4.address = 10.0.3.19/24\n\nlxc.net.0.ipv4.gateway = 10.0.3.1\n\n\n\n\n"
    "# The mail data volume: a separate filesystem on the host, bind-mounted.\n"
    "lxc.mount.entry = /srv/cacert-lab/mail srv/mail none bind,create=dir 0 0\n")


def _lab_data():
    from lab import topology as t
    return {"container_name": t.CONTAINER, "root_authorized_keys": DATA["root_authorized_keys"],
            "container_net": {"link": t.BRIDGE, "hwaddr": t.CONTAINER_HWADDR,
                              "ipv4": f"{t.CONTAINER_ADDRESS}/{t.PREFIXLEN}",
                              "ipv4_gateway": t.BRIDGE_ADDRESS, "ipv6": None,
                              "ipv6_gateway": None},
            "data_volume_host_path": t.DATA_VOLUME_HOST_PATH, "data_volume": t.DATA_VOLUME}


def test_the_lab_container_config_stays_as_it_was():
    ops = _existing(LAB_CONFIG_BEFORE, data=_lab_data(), groups=("infra02", "lab_host"))
    assert _op(ops, "Container config").commands == [] and _restarts(ops) == []
    # a new lab container gets the same keys and values (only comments and blank lines differ)
    new = _uploads(run(infra02.container, data=_lab_data(), groups=("infra02", "lab_host"),
                       facts={}))[CONFIG]

    def settings(text):
        return [line for line in text.splitlines() if line and not line.startswith("#")]
    assert settings(new) == settings(LAB_CONFIG_BEFORE)
    interfaces = _uploads(run(infra02.container, data=_lab_data(),
                              groups=("infra02", "lab_host"),
                              facts={}))["/var/lib/lxc/email/rootfs/etc/network/interfaces"]
    assert settings(interfaces) == ["auto lo", "iface lo inet loopback", "auto eth0",
                                    "iface eth0 inet manual"]


def test_container_config_fact_keeps_the_file_exactly():
    fact = infra02.ContainerConfig()
    text = "# x\n\nlxc.uts.name = email  \n\n"
    encoded = base64.b64encode(text.encode()).decode()
    assert fact.process(["present", encoded]) == text
    assert fact.process([]) is None
    assert "base64 -w0 < /var/lib/lxc/email/config" in fact.command("/var/lib/lxc/email/config")


def test_a_config_that_is_not_utf8_stops_the_run():
    fact = infra02.ContainerConfig()
    live = fact.process(["present", base64.b64encode(
        LIVE.encode() + b"# K\xf6nig\n").decode()])
    with pytest.raises(DeployError, match="/var/lib/lxc/email/config is not UTF-8 text"):
        _existing(live)


def test_a_rebuild_rehearsal_restores_into_a_scratch_directory_that_is_no_mount():
    data = {**DATA, "container_name": "email-rehearsal", "rehearsal_of": "email",
            "data_volume_host_path": "/var/lib/cacert-rehearsal/email-rehearsal"}
    ops = run(infra02.container, data=data, groups=("infra02",), facts={"Mounts": {}})
    assert any(op.name.endswith("Data volume directory on the host") for op in ops)
    assert any("Create container email-rehearsal" in op.name for op in ops)
