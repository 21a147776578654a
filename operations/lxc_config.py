"""The container's LXC config (/var/lib/lxc/<name>/config): the keys the deploy manages, and
their merge into the file the host already has.

Production's config was written by hand and holds keys no inventory datum describes (id maps,
cgroup limits, an operator's own mounts, a rootfs on LVM). So the deploy owns only the keys
`wanted()` lists, and `merge()` rewrites those in place and keeps every other line where it
stands, comments included:

- `lxc.uts.name`, `lxc.start.auto`;
- for each NIC the inventory names (eth0 = container_net, then container_extra_nets):
  `lxc.net.<i>.` type, link, flags, hwaddr, name, ipv4.address, ipv4.gateway, ipv6.address,
  ipv6.gateway; the index <i> is the one whose `name` is that NIC's in the live file (a NIC
  without a name counts as eth<i>, LXC's own default), else the lowest free one;
- the `lxc.mount.entry` lines whose target is the data volume's or one of container_mounts'.

`lxc.include`, `lxc.rootfs.path`, `lxc.arch`, `lxc.tty.max` and `lxc.pty.max` are written
only into a new container's config (files/infra02/lxc.conf.j2): an existing container keeps
its own, so a rootfs on LVM or zfs and an operator's includes stay as they are. NICs and
mounts the inventory does not name are never touched (dropping one from the inventory leaves
it in the file). Pure functions over text: no host is needed to test them.
"""
import re
from dataclasses import dataclass

# The keys of one NIC the deploy manages, below lxc.net.<i>., in the order it writes them.
NIC_KEYS = ("type", "link", "flags", "hwaddr", "name", "ipv4.address", "ipv4.gateway",
            "ipv6.address", "ipv6.gateway")
# Read by lxc-autostart when the host boots, not by the running container: no restart.
NO_RESTART = ("lxc.start.auto",)
MOUNT_KEY = "lxc.mount.entry"

_LINE = re.compile(r"^\s*([A-Za-z0-9_.]+)\s*=(.*)$")
_NIC_KEY = re.compile(r"^lxc\.net\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class Nic:
    """One NIC: its name inside the container and the values of its NIC_KEYS (None: no line)."""
    name: str
    values: tuple  # ((key, value or None), ...) in NIC_KEYS order


@dataclass(frozen=True)
class Wanted:
    """What the deploy manages in the config, from the inventory."""
    keys: tuple    # ((key, value), ...): lxc.uts.name, lxc.start.auto
    nics: tuple    # (Nic, ...): eth0 first
    mounts: tuple  # ((target, entry value), ...): the data volume first


@dataclass(frozen=True)
class Merged:
    """The merged config text and the managed keys it changed (rewritten or dropped in file
    order, then added)."""
    text: str
    changed: tuple

    @property
    def restart(self):
        """The changed keys the running container only sees after a restart."""
        return tuple(key for key in self.changed if key not in NO_RESTART)


def mount_target(target):
    """`target` as LXC reads it: a path inside the container, relative to its rootfs."""
    return "/".join(part for part in str(target).split("/") if part)


def nic(name, net):
    """The Nic for inventory entry `net` (container_net or one of container_extra_nets)."""
    values = {"type": "veth", "link": net["link"], "flags": "up", "hwaddr": net.get("hwaddr"),
              "name": name, "ipv4.address": net.get("ipv4"),
              "ipv4.gateway": net.get("ipv4_gateway"), "ipv6.address": net.get("ipv6"),
              "ipv6.gateway": net.get("ipv6_gateway")}
    return Nic(name, tuple((key, values[key] or None) for key in NIC_KEYS))


# The inventory data wanted() reads.
DATA_KEYS = ("container_name", "container_autostart", "container_net", "container_extra_nets",
             "data_volume_host_path", "data_volume", "data_volume_read_only",
             "container_mounts")


def wanted(data):
    """The managed keys' values from the host's inventory data (a dict with DATA_KEYS)."""
    nics = [nic("eth0", data["container_net"])]
    nics += [nic(net["name"], net) for net in data["container_extra_nets"]]
    volume = mount_target(data["data_volume"])
    options = "bind,ro,create=dir" if data.get("data_volume_read_only") else "bind,create=dir"
    mounts = [(volume, f"{data['data_volume_host_path']} {volume} none {options} 0 0")]
    for mount in data["container_mounts"]:
        target = mount_target(mount["target"])
        mounts.append((target, f"{mount['source']} {target} {mount['type']} "
                               f"{mount['options']} 0 0"))
    keys = (("lxc.uts.name", data["container_name"]),
            ("lxc.start.auto", "1" if data["container_autostart"] else "0"))
    return Wanted(keys, tuple(nics), tuple(mounts))


def values(text, key):
    """Every value of `key` in the config `text`, in order."""
    found = []
    for line in (text or "").splitlines():
        match = _LINE.match(line)
        if match and match.group(1) == key:
            found.append(match.group(2).strip())
    return found


def dir_rootfs(value):
    """The directory of an `lxc.rootfs.path` value with the dir backing store, else None
    (lvm:, zfs:, btrfs:, overlay: ... keep the rootfs elsewhere than a plain directory)."""
    path = value[len("dir:"):] if value.startswith("dir:") else value
    if not path.startswith("/"):
        return None
    return path.rstrip("/") or "/"


def _nic_indexes(lines, nics):
    """{nic name: index} for `nics` in the parsed `lines` (see the module docstring)."""
    used, names = set(), {}
    for _, key, value in lines:
        match = _NIC_KEY.match(key or "")
        if match:
            index = int(match.group(1))
            used.add(index)
            if match.group(2) == "name":
                names.setdefault(index, value)
    found = {}
    for n in nics:
        index = next((i for i in sorted(names) if names[i] == n.name), None)
        if index is None and re.fullmatch(r"eth\d+", n.name):
            unnamed = int(n.name[3:])
            if unnamed in used and unnamed not in names:
                index = unnamed
        if index is None or index in found.values():
            index = next(i for i in range(len(used) + len(nics) + 1)
                         if i not in used and i not in found.values())
            used.add(index)
        found[n.name] = index
    return found


def _same(key, have, want):
    if key.endswith(".hwaddr"):
        return have.lower() == want.lower()
    return have == want


def merge(text, want):
    """`text` (the live config) with the managed keys set to `want`'s values.

    A managed key's first line takes the new value (its line untouched when the value is the
    same); further lines of it go, as do the lines of a key whose value is None. A managed
    key that is missing is added after the last line of its group (its NIC, the mount
    entries), or at the end. Every other line is kept as it is and where it is.
    """
    lines = []
    for raw in text.splitlines():
        match = _LINE.match(raw)  # a comment never matches: "#" is no key character
        if match:
            lines.append((raw, match.group(1), match.group(2).strip()))
        else:
            lines.append((raw, None, None))

    # slot -> (key, value, group): a slot is a key, or (MOUNT_KEY, target) for a mount entry
    slots = {key: (key, value, key) for key, value in want.keys}
    indexes = _nic_indexes(lines, want.nics)
    for n in want.nics:
        prefix = f"lxc.net.{indexes[n.name]}."
        for key, value in n.values:
            slots[prefix + key] = (prefix + key, value, prefix)
    for target, value in want.mounts:
        slots[(MOUNT_KEY, target)] = (MOUNT_KEY, value, MOUNT_KEY)

    def slot_of(key, value):
        if key == MOUNT_KEY:
            fields = value.split()
            slot = (MOUNT_KEY, mount_target(fields[1])) if len(fields) > 1 else None
            return slot if slot in slots else None
        return key if key in slots else None

    def label(slot):
        return f"{MOUNT_KEY} {slot[1]}" if isinstance(slot, tuple) else slot

    result, seen, changed = [], set(), []
    for raw, key, value in lines:
        slot = slot_of(key, value) if key else None
        if slot is None:
            result.append((raw, key))
            continue
        slot_key, want_value, _ = slots[slot]
        if slot in seen or want_value is None:
            changed.append(label(slot))
        elif _same(slot_key, value, want_value):
            result.append((raw, key))
        else:
            result.append((f"{slot_key} = {want_value}", key))
            changed.append(label(slot))
        seen.add(slot)

    for slot, (slot_key, want_value, group) in slots.items():
        if slot in seen or want_value is None:
            continue
        last = max((i for i, (_, key) in enumerate(result)
                    if key and (key == group or key.startswith(group) and group.endswith("."))),
                   default=len(result) - 1)
        result.insert(last + 1, (f"{slot_key} = {want_value}", slot_key))
        changed.append(label(slot))

    if not changed:
        return Merged(text, ())
    return Merged("\n".join(raw for raw, _ in result) + "\n", tuple(dict.fromkeys(changed)))


def renamed(text, lxc_path, old, new):
    """`text` (a config of container `old` under `lxc_path`) for the container renamed to
    `new`: every value naming a path in `<lxc_path>/<old>` (lxc.rootfs.path, a log file, a
    hook) names `<lxc_path>/<new>` instead. LXC reads these paths as they are written, so a
    directory moved without them would boot another container's rootfs, or none."""
    old_dir, new_dir = f"{lxc_path.rstrip('/')}/{old}", f"{lxc_path.rstrip('/')}/{new}"
    pattern = re.compile(re.escape(old_dir) + r"(?=/|\s|$)")
    lines = []
    for raw in text.splitlines():
        match = _LINE.match(raw)
        lines.append(pattern.sub(new_dir, raw) if match else raw)
    return "\n".join(lines) + ("\n" if text.endswith("\n") else "")


def without_nics(text, names):
    """`text` without the lines of the NICs whose `name` is one of `names` (a NIC the
    inventory no longer gives this container: the serving container's extra NICs, which a
    successor must not keep after a rollback)."""
    parsed = [(raw, _LINE.match(raw)) for raw in text.splitlines()]
    drop = set()
    for _, match in parsed:
        nic_key = _NIC_KEY.match(match.group(1)) if match else None
        if nic_key and nic_key.group(2) == "name" and match.group(2).strip() in names:
            drop.add(nic_key.group(1))
    kept = [raw for raw, match in parsed
            if not (match and _NIC_KEY.match(match.group(1))
                    and _NIC_KEY.match(match.group(1)).group(1) in drop)]
    return "\n".join(kept) + ("\n" if text.endswith("\n") else "")


def _parsed(text):
    return [(raw, _LINE.match(raw)) for raw in text.splitlines()]


def _index_of(parsed, name):
    """The index of the NIC named `name` in parsed lines (an unnamed eth<i> is index i), or
    None."""
    used, names = set(), {}
    for _, match in parsed:
        nic_key = _NIC_KEY.match(match.group(1)) if match else None
        if nic_key:
            used.add(nic_key.group(1))
            if nic_key.group(2) == "name":
                names.setdefault(nic_key.group(1), match.group(2).strip())
    for index, nic_name in names.items():
        if nic_name == name:
            return index
    unnamed = name[3:] if re.fullmatch(r"eth\d+", name) else None
    return unnamed if unnamed in used and unnamed not in names else None


def nic_extras(text, name):
    """((key below lxc.net.<i>., value), ...) of the NIC named `name` in `text` that the
    deploy does not manage (an mtu, a veth pair name, a further address), in file order."""
    parsed = _parsed(text)
    index = _index_of(parsed, name)
    extras = []
    for _, match in parsed:
        nic_key = _NIC_KEY.match(match.group(1)) if match else None
        if nic_key and nic_key.group(1) == index and nic_key.group(2) not in NIC_KEYS:
            extras.append((nic_key.group(2), match.group(2).strip()))
    return tuple(extras)


def with_nic_extras(text, name, extras):
    """`text` with the `extras` (nic_extras' shape) of the NIC named `name` added after its
    last line, those it has already left as they are."""
    parsed = _parsed(text)
    index = _index_of(parsed, name)
    if index is None or not extras:
        return text
    prefix = f"lxc.net.{index}."
    have = {match.group(1) for _, match in parsed if match}
    lines = [raw for raw, _ in parsed]
    last = max(i for i, (_, match) in enumerate(parsed)
               if match and match.group(1).startswith(prefix))
    new = [f"{prefix}{key} = {value}" for key, value in extras if prefix + key not in have]
    lines[last + 1:last + 1] = new
    return "\n".join(lines) + "\n"


def unmanaged_lines(text, other):
    """The key lines of `text` that neither the deploy manages nor `other` has: what a
    hand-written config holds and a config made by the deploy lacks (NIC lines aside: see
    nic_extras)."""
    managed = {"lxc.uts.name", "lxc.start.auto", "lxc.rootfs.path"}
    theirs = {(m.group(1), m.group(2).strip()) for _, m in _parsed(other) if m}
    # A mount of the same target counts as there (the data volume's differs in ro only).
    mounted = {mount_target(m.group(2).split()[1]) for _, m in _parsed(other)
               if m and m.group(1) == MOUNT_KEY and len(m.group(2).split()) > 1}
    found = []
    for raw, match in _parsed(text):
        if not match or match.group(1) in managed or _NIC_KEY.match(match.group(1)):
            continue
        fields = match.group(2).split()
        if match.group(1) == MOUNT_KEY and len(fields) > 1 and \
                mount_target(fields[1]) in mounted:
            continue
        if (match.group(1), match.group(2).strip()) not in theirs:
            found.append(raw.strip())
    return found
