"""A rebuild's inventory: the given one with the inbound hold, or a rehearsal's scratch container.

`python -m operations.rebuild` (operations/rebuild.py) deploys twice into a new container:
first with this inventory, then (a rebuild, not a rehearsal) with the given one. The data
changed, for both groups (Infra02 builds the container, the email deploy fills it):

- a rebuild: postfix_inbound_hold (every RCPT deferred with 450 until the restore is done);
  the email host is reached with a known_hosts file the rebuild wrote from the new
  container's rootfs (its fresh host keys: the backed-up ones come back with the restore);
- a rehearsal, besides: container_name `<name>-rehearsal`, rehearsal_of `<name>`, eth0 =
  successor_net (a temporary address of its own: no address is taken over), no extra NICs,
  no extra mounts (nothing of production's is mounted), no autostart, and the data volume a
  scratch directory on Infra02 (SCRATCH_ROOT/<name>-rehearsal); reached at successor_net's
  address. The hold stays on: it never receives mail.

Pure functions over plain data, plus `load()`, which runs the given inventory file (its own
validation) and derives from it; inventories/rebuild.py is the file pyinfra reads.
"""
import copy

from operations import successor
from operations.defaults import defaults
from operations.secrets import InventoryError

SUFFIX = "-rehearsal"
# Scratch data directories of rehearsals on Infra02 (removed with the container by --cleanup).
SCRATCH_ROOT = "/var/lib/cacert-rehearsal"
# The env variables inventories/rebuild.py reads.
ENV_INVENTORY = "CACERT_REBUILD_INVENTORY"
ENV_REHEARSE = "CACERT_REBUILD_REHEARSE"
ENV_KNOWN_HOSTS = "CACERT_REBUILD_KNOWN_HOSTS"


def name_of(container, rehearse):
    """The container a rebuild (or its rehearsal) makes."""
    return f"{container}{SUFFIX}" if rehearse else container


def scratch_path(container):
    """The rehearsal's data directory on Infra02."""
    return f"{SCRATCH_ROOT}/{name_of(container, True)}"


def check(data, rehearse):
    """Every problem of a host's merged `data` for a rebuild, one line each."""
    problems = []
    for key in ("successor_of", "rehearsal_of"):
        if data.get(key):
            problems.append(f"{key}={data[key]!r}: this inventory describes a derived "
                            "container; give the serving container's inventory")
    if rehearse:
        # The same temporary eth0 an upgrade's successor uses: its checks apply.
        problems += [line.replace("the successor", "the rehearsal")
                     for line in successor.check(data, "trixie") if "--release" not in line
                     and "describes a successor" not in line]
    return problems


def derive(data, rehearse, known_hosts=None):
    """The overrides of a host's inventory `data` for the first deploy of a rebuild (or a
    rehearsal); `known_hosts`: the file trusting the new container's keys (email host)."""
    merged = {**defaults(), **data}
    result = copy.deepcopy(data)
    result["postfix_inbound_hold"] = True
    if known_hosts:
        result["ssh_known_hosts_file"] = known_hosts
    if rehearse:
        name = merged["container_name"]
        result.update({
            "container_name": name_of(name, True),
            "rehearsal_of": name,
            "container_net": copy.deepcopy(merged["successor_net"]),
            "container_extra_nets": [],
            "container_mounts": [],
            "container_autostart": False,
            "data_volume_host_path": scratch_path(name),
            "data_volume_read_only": False,
        })
    return result


def load(inventory_path, rehearse, known_hosts=None):
    """(infra02 hosts, email hosts) of the rebuild's first deploy, from the given inventory
    file. InventoryError lists every problem."""
    groups = successor.serving(inventory_path)
    problems = [f"{inventory_path}: no host in group `{g}`"
                for g, hosts in groups.items() if not hosts]
    for hosts in groups.values():
        for host_name, data in hosts:
            problems += [f"{host_name}: {line}" for line in
                         check({**defaults(), **data}, rehearse)]
    if problems:
        raise InventoryError("\n".join(dict.fromkeys(problems)))
    infra02 = [(name, derive(data, rehearse)) for name, data in groups["infra02"]]
    email = []
    for host_name, data in groups["email"]:
        derived = derive(data, rehearse, known_hosts)
        if rehearse:
            derived["ssh_hostname"] = successor.address_of({**defaults(), **data})
            host_name = derived["container_name"]
        email.append((host_name, derived))
    return infra02, email
