"""The successor's inventory: an upgrade's new container, derived from the serving one's.

An upgrade (operations/upgrade.py) builds `<container_name>-next` on the same Infra02, of a
newer Debian release, beside the container that keeps serving. Its inventory is the given
one with these data changed, for both groups (Infra02 builds it, the email deploy fills it):

- container_name `<name>-next`, successor_of `<name>`, debian_release the new release;
- container_net = successor_net (a temporary MAC and address of its own: the old container
  keeps eth0's until the cut-over), container_extra_nets empty (they carry the old
  container's MACs and addresses too);
- data_volume_read_only: the volume is mounted read-only, and its owner marker (which names
  the old container) keeps the successor's Dovecot off it (operations/volume_owner.py);
- the email host is reached at successor_net's address. It boots with the old container's
  SSH host keys (operations/infra02.py), so an `ssh_known_hosts_file` of the inventory is
  rewritten for that address into a file of the control machine's temp directory.

Pure functions over plain data, plus `serving()`, which runs the given inventory file (and so
its own validation), and `load()`, which derives from it; inventories/successor.py is the
file pyinfra reads.
"""
import copy
import ipaddress
import os
import runpy
import tempfile
from pathlib import Path

from operations.defaults import defaults
from operations.secrets import InventoryError

SUFFIX = "-next"
RELEASES = ("bookworm", "trixie")
# The env variables inventories/successor.py reads: the serving inventory and the release.
ENV_INVENTORY = "CACERT_UPGRADE_INVENTORY"
ENV_RELEASE = "CACERT_UPGRADE_RELEASE"
PLACEHOLDER = "PLACEHOLDER"


def name_of(container):
    """The successor's container name."""
    return f"{container}{SUFFIX}"


def check(data, release):
    """Every problem of the serving host's merged `data` for an upgrade to `release`, one
    line each ([] when none)."""
    problems = []
    if release not in RELEASES:
        problems.append(f"--release {release}: must be one of {', '.join(RELEASES)}")
    if data.get("successor_of"):
        problems.append(f"successor_of={data['successor_of']!r}: this inventory describes a "
                        "successor already; give the serving container's inventory")
    net, old = data.get("successor_net"), data["container_net"]
    if not isinstance(net, dict) or not {"link", "ipv4"} <= set(net):
        problems.append("successor_net: not set; give the successor a temporary eth0 in "
                        "container_net's shape (link, hwaddr, ipv4, ipv4_gateway, ipv6, "
                        f"ipv6_gateway), e.g. {{'link': 'br0', 'hwaddr': '00:16:3e:..', "
                        f"'ipv4': '192.0.2.20/24', ...}}")
        return problems
    placeholders = [k for k, v in net.items() if isinstance(v, str) and PLACEHOLDER in v]
    if placeholders:
        problems.append(f"successor_net: {', '.join(placeholders)} still PLACEHOLDER: choose "
                        "a free address and MAC on Infra02's bridge")
        return problems
    try:
        address = ipaddress.ip_interface(net["ipv4"])
    except (ValueError, TypeError):
        problems.append(f"successor_net ipv4: {net['ipv4']!r} is not an address/prefix")
        address = None
    if address is not None and old.get("ipv4") and \
            address.ip == ipaddress.ip_interface(old["ipv4"]).ip:
        problems.append(f"successor_net ipv4: {address.ip} is the serving container's own")
    for field in ("hwaddr", "ipv6"):
        if net.get(field) and old.get(field) and \
                str(net[field]).lower() == str(old[field]).lower():
            problems.append(f"successor_net {field}: {net[field]} is the serving container's "
                            "own; the successor needs its own until the cut-over")
    return problems


def derive(data, release):
    """The successor's overrides of a host's inventory `data` (not merged with defaults:
    group_data/all.py fills the rest, as for the serving host)."""
    merged = {**defaults(), **data}
    name = merged["container_name"]
    result = copy.deepcopy(data)
    result.update({
        "container_name": name_of(name),
        "successor_of": name,
        "debian_release": release,
        "container_net": copy.deepcopy(merged["successor_net"]),
        "container_extra_nets": [],
        "data_volume_read_only": True,
    })
    # None leaves the security suite out, which only a bullseye lab needs (inventories/lab.py).
    if merged["debian_security_mirror"] is None and release != "bullseye":
        result["debian_security_mirror"] = defaults()["debian_security_mirror"]
    return result


def address_of(data):
    """The successor's address (successor_net's ipv4 without its prefix)."""
    return str(ipaddress.ip_interface(data["successor_net"]["ipv4"]).ip)


def known_hosts(text, old_host, new_host):
    """The lines of a known_hosts `text` for `old_host`, written for `new_host` (the same
    keys: the successor inherits them)."""
    lines = []
    for line in text.splitlines():
        fields = line.split(None, 1)
        if len(fields) == 2 and old_host in fields[0].split(","):
            lines.append(f"{new_host} {fields[1]}")
    return "".join(f"{line}\n" for line in lines)


def _state_dir():
    """This user's directory for the derived files (the control machine's temp dir)."""
    path = Path(tempfile.gettempdir()) / f"cacert-email-upgrade-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    if path.is_symlink() or path.stat().st_uid != os.getuid():
        raise InventoryError(f"{path}: not a directory of this user's; remove it")
    return path


def serving(inventory_path):
    """{"infra02": [(name, data)], "email": [...]} of the serving inventory file (its own
    validation runs, and stops on its problems)."""
    path = Path(inventory_path)
    if not path.is_file():
        raise InventoryError(f"{inventory_path}: no such inventory file")
    hosts = runpy.run_path(str(path))
    return {g: hosts.get(g) or [] for g in ("infra02", "email")}


def load(inventory_path, release):
    """(infra02 hosts, email hosts) of the successor, from the serving inventory file: its
    host lists with derived data. InventoryError lists every problem."""
    path = Path(inventory_path)
    groups = serving(path)
    problems = [f"{path}: no host in group `{g}`" for g, hosts in groups.items() if not hosts]
    for group, hosts in groups.items():
        for host_name, data in hosts:
            problems += [f"{host_name}: {line}" for line in
                         check({**defaults(), **data}, release)]
    if problems:
        raise InventoryError("\n".join(dict.fromkeys(problems)))
    infra02 = [(name, derive(data, release)) for name, data in groups["infra02"]]
    email = []
    for host_name, data in groups["email"]:
        successor = derive(data, release)
        merged = {**defaults(), **data}
        new_address = address_of(merged)
        successor["ssh_hostname"] = new_address
        if data.get("ssh_known_hosts_file"):
            original = Path(data["ssh_known_hosts_file"])
            derived = _state_dir() / f"{successor['container_name']}.known_hosts"
            old_address = data.get("ssh_hostname") or host_name
            text = original.read_text() if original.is_file() else ""
            derived.write_text(known_hosts(text, old_address, new_address))
            successor["ssh_known_hosts_file"] = str(derived)
        email.append((successor["container_name"], successor))
    return infra02, email
