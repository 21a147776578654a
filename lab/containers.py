"""Further lab containers beside `email`: `python -m lab container up|down NAME`.

Each is described in lab/topology.py CONTAINERS (release, NICs on lab bridges, gateway, LXC
config, builder). `up`, under the lab lock, reusing what a previous (even killed) run left:
  1. the extra bridges its NICs name (topology.EXTRA_BRIDGES), the host directories its
     LXC config mounts, and its data volume (a loop-mounted image of its own) if it has one;
  2. a half-made container or one of another release is destroyed (lab only!), a missing
     one is made with lxc-create (the debian template, its cache makes it quick);
  3. once, before its first start: its LXC config (generated from the NICs, or the
     hand-written file the description names) and, written into the rootfs from this host,
     what must be right before SSH works: network, apt sources through the lab's apt proxy,
     the lab's DNS, root's SSH key (a marker file in the container's LXC directory says
     this is done; afterwards the config belongs to whatever manages the container);
  4. started, host keys from its rootfs into `.lab/known_hosts-NAME`, SSH waited for;
  5. its builder, if it has one (the legacy server: lab/legacy), fills it once; the lab's
     Icinga2 master learns its agent, if it names one, or its Host object
     (`icinga2_host`, a container without an agent) (lab/icinga_agents.py);
  6. recorded: `.lab/containers/NAME.json` and `.lab/lab.json` "containers" (read, modify,
     write). The whole-lab `up` keeps the records of containers that still exist; the
     whole-lab `down` destroys every container and extra bridge (destroy_all()).
`down NAME` destroys the container, its data volume, and forgets it; an extra bridge goes with the last
container that uses it.
"""
import hashlib
import ipaddress
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from lab import atomic, icinga_agents, legacy, lock, lxc, topology as t

REPO = Path(__file__).resolve().parent.parent
LAB = REPO / ".lab"
REGISTRY = LAB / "containers"
SSH_KEY = LAB / "id_ed25519"
PREPARED = "cacert-lab-prepared"   # marker in /var/lib/lxc/NAME: step 3 is done

# Builders by the name a description gives: build(context) -> extra lab.json fields,
# clean(lab_dir) forgets what build left in .lab/.
BUILDERS = {"legacy": legacy}
BUILD_ERRORS = (legacy.BuildError, subprocess.CalledProcessError)
_HWADDR = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


class ContainerError(Exception):
    """A container cannot be brought up or down; the message says which step and why."""


def _say(message):
    print(f"lab: {message}", flush=True)


# --- descriptions (pure) -------------------------------------------------------------------
def problems(name, spec):
    """Every problem of the description `spec` of container `name` (empty: usable)."""
    found = []
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,30}", name) or name == t.CONTAINER:
        found.append(f"{name!r} is not a usable container name (lower-case letters, digits "
                     f"and '-', not {t.CONTAINER!r})")
    if spec.get("release") not in t.RELEASES:
        found.append(f"{name}: release {spec.get('release')!r} is not one of "
                     f"{', '.join(t.RELEASES)}")
    nics = spec.get("nics") or []
    if not nics or nics[0].get("name") != "eth0" or nics[0].get("bridge") != t.BRIDGE:
        found.append(f"{name}: the first NIC must be eth0 on {t.BRIDGE}")
    bridges = {t.BRIDGE: f"{t.BRIDGE_ADDRESS}/{t.PREFIXLEN}", **t.EXTRA_BRIDGES}
    for nic in nics:
        label = f"{name} {nic.get('name')}"
        if nic.get("bridge") not in bridges:
            found.append(f"{label}: bridge {nic.get('bridge')!r} is not a lab bridge "
                         f"({', '.join(bridges)})")
            continue
        try:
            address = ipaddress.ip_interface(nic.get("address"))
        except ValueError:
            found.append(f"{label}: address {nic.get('address')!r} is not ADDRESS/PREFIX")
            continue
        network = ipaddress.ip_interface(bridges[nic["bridge"]]).network
        if address.network != network or address == ipaddress.ip_interface(
                bridges[nic["bridge"]]):
            found.append(f"{label}: {address} is not a free address in {network} "
                         f"({nic['bridge']})")
        if not _HWADDR.match(str(nic.get("hwaddr", ""))):
            found.append(f"{label}: hwaddr {nic.get('hwaddr')!r} is not aa:bb:cc:dd:ee:ff")
    names = [nic.get("name") for nic in nics]
    if len(set(names)) != len(names):
        found.append(f"{name}: NIC names repeat: {names}")
    return found


def generated_config(name, spec):
    """The LXC config of a container whose description says "config": "generated"."""
    lines = [f"# Made by the cacert-email lab (lab/containers.py) for the lab container {name}.",
             "lxc.include = /usr/share/lxc/config/debian.common.conf",
             f"lxc.rootfs.path = dir:{lxc.rootfs(name)}", f"lxc.uts.name = {name}",
             "lxc.arch = amd64", "lxc.tty.max = 4", "lxc.pty.max = 1024",
             "lxc.start.auto = 0"]
    for index, nic in enumerate(spec["nics"]):
        prefix = f"lxc.net.{index}"
        lines += ["", f"{prefix}.type = veth", f"{prefix}.link = {nic['bridge']}",
                  f"{prefix}.flags = up", f"{prefix}.hwaddr = {nic['hwaddr']}",
                  f"{prefix}.name = {nic['name']}", f"{prefix}.ipv4.address = {nic['address']}"]
        if index == 0 and spec.get("gateway"):
            lines.append(f"{prefix}.ipv4.gateway = {spec['gateway']}")
    return "\n".join(lines) + "\n"


def config_nics(text):
    """The NICs an LXC config declares: [{"name", "bridge", "address", "hwaddr"}] by index."""
    keys = {"name": "name", "link": "bridge", "ipv4.address": "address", "hwaddr": "hwaddr"}
    nics = {}
    for line in text.splitlines():
        match = re.match(r"\s*lxc\.net\.(\d+)\.([a-z0-9.]+)\s*=\s*(.*?)\s*$", line)
        if match and match.group(2) in keys:
            nics.setdefault(int(match.group(1)), {})[keys[match.group(2)]] = match.group(3)
    return [nics[i] for i in sorted(nics)]


def config_text(name, spec):
    """The LXC config the container gets; a hand-written one must declare the spec's NICs."""
    if spec.get("config", "generated") == "generated":
        return generated_config(name, spec)
    text = (REPO / spec["config"]).read_text()
    wanted = [{k: nic[k] for k in ("name", "bridge", "address", "hwaddr")}
              for nic in spec["nics"]]
    if config_nics(text) != wanted:
        raise ContainerError(f"{spec['config']} declares NICs {config_nics(text)}, but the "
                             f"description of {name} in lab/topology.py says {wanted}")
    return text


def rootfs_files(spec, public_key):
    """{path in the rootfs: (content, mode)} written before the first start."""
    nics = "".join(f"\nauto {nic['name']}\niface {nic['name']} inet manual\n"
                   for nic in spec["nics"])
    security = t.security_mirror(spec["release"], t.DEBIAN_MIRROR + "-security")
    sources = (f"deb {t.DEBIAN_MIRROR} {spec['release']} main\n"
               f"deb {t.DEBIAN_MIRROR} {spec['release']}-updates main\n" +
               (f"deb {security} {spec['release']}-security main\n" if security else ""))
    return {
        # LXC sets the addresses itself; DHCP here would make networking.service hang.
        "etc/network/interfaces": ("auto lo\niface lo inet loopback\n" + nics, 0o644),
        "etc/apt/sources.list": (sources, 0o644),
        "etc/apt/apt.conf.d/01proxy": (
            f'Acquire::http::Proxy "http://{t.BRIDGE_ADDRESS}:{t.APT_PROXY_PORT}";\n', 0o644),
        "etc/resolv.conf": (f"search {t.DOMAIN}\nnameserver {t.BRIDGE_ADDRESS}\n", 0o644),
        "root/.ssh/authorized_keys": (public_key.strip() + "\n", 0o600),
    }


def address(spec):
    return str(ipaddress.ip_interface(spec["nics"][0]["address"]).ip)


def record(name, spec, extra=None):
    """The container's entry under lab.json "containers" (paths relative to the repo)."""
    return {
        "container": name,
        "release": spec["release"],
        "address": address(spec),
        "addresses": {nic["name"]: str(ipaddress.ip_interface(nic["address"]).ip)
                      for nic in spec["nics"]},
        "ssh": {"user": "root", "key": ".lab/id_ed25519", "port": 22,
                "known_hosts": f".lab/known_hosts-{name}"},
        "role": spec.get("role", name),
        **(extra or {}),
    }


def kept_records(registry, exists):
    """{name: record} of the registered containers for which `exists(name)` is true: what
    the whole-lab `up` keeps under "containers"."""
    kept = {}
    for path in sorted(Path(registry).glob("*.json")) if Path(registry).is_dir() else []:
        if exists(path.stem):
            kept[path.stem] = json.loads(path.read_text())
    return kept


def bridges_in_use(names):
    """The extra bridges the described containers `names` use."""
    return {nic["bridge"] for name in names for nic in t.CONTAINERS.get(name, {}).get("nics", [])
            if nic["bridge"] in t.EXTRA_BRIDGES}


# --- files ---------------------------------------------------------------------------------

def _update_lab_json(name, entry):
    """Set (entry) or drop (None) lab.json's containers[name]; the caller holds the lock."""
    path = LAB / "lab.json"
    if not path.is_file():
        return
    data = json.loads(path.read_text())
    containers = data.setdefault("containers", {})
    if entry is None:
        containers.pop(name, None)
    else:
        containers[name] = entry
    atomic.write(path, json.dumps(data, indent=2) + "\n", 0o644)


def _write_into_rootfs(name, files):
    root = lxc.rootfs(name)
    for relative, (content, mode) in files.items():
        target = root / relative
        # Written from the host: a symlink in the rootfs would resolve on the host.
        for parent in [target, *target.parents]:
            if parent == root:
                break
            if parent.is_symlink():
                raise ContainerError(f"refusing to write {target}: {parent} is a symlink")
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.parent.name == ".ssh":
            os.chmod(target.parent, 0o700)
        atomic.write(target, content, mode)


def _marker_text():
    """What the marker says: that this lab (known by its SSH key) prepared the container."""
    digest = hashlib.sha256((LAB / "id_ed25519.pub").read_bytes()).hexdigest()
    return f"prepared by the lab whose root SSH key has sha256 {digest}\n"


# --- verbs ---------------------------------------------------------------------------------
def described(name):
    if name not in t.CONTAINERS:
        raise ContainerError(f"no lab container {name!r} is described in lab/topology.py "
                             f"(described: {', '.join(sorted(t.CONTAINERS))})")
    spec = t.CONTAINERS[name]
    found = problems(name, spec)
    if found:
        raise ContainerError("; ".join(found))
    return spec


def _create(name, spec):
    have = lxc.release(name)
    if have is not None and have != spec["release"]:
        why = "half-made" if have == "" else f"Debian {have}, not {spec['release']}"
        _say(f"container {name} is {why}: destroying it")
        lxc.destroy(name)
        have = None
    if have is None:
        _say(f"creating container {name} (Debian {spec['release']})")
        # Started without a config of ours (-f /dev/null): the NICs come with step 3.
        result = subprocess.run(["lxc-create", "-n", name, "-t", "debian", "-f", "/dev/null",
                                 "--", "-r", spec["release"], f"--mirror={t.DEBIAN_MIRROR}"])
        if result.returncode != 0 or lxc.release(name) != spec["release"]:
            raise ContainerError(f"lxc-create of {name} failed (its output is above)")


def up(name):
    """Bring the container `name` up (or up to date); returns its lab.json record."""
    spec = described(name)
    with lock.held():
        if not (LAB / "lab.json").is_file():
            raise ContainerError("the lab is not up (.lab/lab.json is missing): run ./lab/up "
                                 "first (its bridge, apt proxy and DNS serve this container)")
        for nic in spec["nics"]:
            if nic["bridge"] in t.EXTRA_BRIDGES:
                lxc.ensure_bridge(nic["bridge"], t.EXTRA_BRIDGES[nic["bridge"]])
            elif not lxc.bridge_exists(nic["bridge"]):
                raise ContainerError(f"bridge {nic['bridge']} is missing: run ./lab/up")
        _forget_if_foreign(name)
        marker = lxc.LXC_PATH / name / PREPARED
        for directory in spec.get("host_dirs", []):
            Path(directory).mkdir(parents=True, exist_ok=True)
        if spec.get("data_volume"):
            volume = spec["data_volume"]
            lxc.ensure_volume(volume["path"], volume["image"], volume["size"])
        _create(name, spec)
        if not marker.exists():
            if lxc.running(name):
                subprocess.run(["lxc-stop", "-n", name, "-k"], check=True)
            atomic.write(lxc.LXC_PATH / name / "config", config_text(name, spec), 0o640)
            _write_into_rootfs(name, rootfs_files(spec, (LAB / "id_ed25519.pub").read_text()))
            marker.write_text(_marker_text())
        if not lxc.running(name):
            _say(f"starting container {name}")
            subprocess.run(["lxc-start", "-n", name, "-d"], check=True)
            subprocess.run(["lxc-wait", "-n", name, "-s", "RUNNING", "-t", "30"], check=True)
        known_hosts = LAB / f"known_hosts-{name}"
        lines = lxc.known_hosts_lines(name, address(spec))
        if not lines:
            raise ContainerError(f"no SSH host keys in {lxc.rootfs(name)}/etc/ssh")
        atomic.write(known_hosts, "".join(lines), 0o644)

        def ssh(command, **kwargs):
            return subprocess.run(lxc.ssh_argv(address(spec), SSH_KEY, known_hosts, command),
                                  **kwargs)

        settle = "systemctl is-system-running --wait >/dev/null; true"
        if not lxc.wait_for_ssh(address(spec), lxc.ssh_argv(address(spec), SSH_KEY,
                                                             known_hosts, settle)):
            raise ContainerError(f"no SSH login to {address(spec)} within 180s "
                                 f"(look inside: lxc-attach -n {name})")
        extra = {}
        if spec.get("builder"):
            try:
                extra = BUILDERS[spec["builder"]].build(name=name, lab_dir=LAB, ssh=ssh,
                                                        rootfs=lxc.rootfs(name), say=_say)
            except BUILD_ERRORS as exc:
                raise ContainerError(str(exc)) from None
        if spec.get("icinga2_node"):
            icinga_agents.ensure_agent(LAB, name, spec["icinga2_node"], address(spec), _say)
        elif spec.get("icinga2_host"):
            icinga_agents.ensure_host(LAB, name, spec["icinga2_host"], address(spec), _say)
        entry = record(name, spec, extra)
        atomic.write(REGISTRY / f"{name}.json", json.dumps(entry, indent=2) + "\n", 0o600)
        _update_lab_json(name, entry)
    _say(f"container {name} (Debian {spec['release']}) up at {address(spec)}; "
         f"described in .lab/lab.json under containers.{name}")
    return entry


def _forget(name):
    """Destroy container `name` and what the lab keeps of it; the caller holds the lock."""
    lxc.destroy(name)
    spec = t.CONTAINERS.get(name, {})
    for directory in spec.get("host_dirs", []):
        shutil.rmtree(directory, ignore_errors=True)
    if spec.get("data_volume"):
        lxc.remove_volume(spec["data_volume"]["path"], spec["data_volume"]["image"])
    if spec.get("builder"):
        BUILDERS[spec["builder"]].clean(LAB)
    (LAB / f"known_hosts-{name}").unlink(missing_ok=True)
    (REGISTRY / f"{name}.json").unlink(missing_ok=True)


def down(name):
    described(name)
    with lock.held():
        _say(f"destroying container {name}")
        _forget(name)
        _update_lab_json(name, None)
        others = [n for n in t.CONTAINERS if n != name and lxc.release(n) is not None]
        for bridge in sorted(bridges_in_use([name]) - bridges_in_use(others)):
            lxc.remove_bridge(bridge)
    _say(f"container {name} down")


def prepared_here(name):
    """Whether this lab (its SSH key) prepared container `name`, by the marker in its LXC
    directory (which travels with the container when it is renamed)."""
    marker = lxc.LXC_PATH / name / PREPARED
    return marker.is_file() and marker.read_text() == _marker_text()


def mark_prepared(name):
    """Record that this lab prepared container `name` (see prepared_here)."""
    (lxc.LXC_PATH / name / PREPARED).write_text(_marker_text())


def _forget_if_foreign(name):
    """Destroy container `name` if another lab prepared it (an earlier clone, a machine image
    taken with the lab up): its root key is not ours, so SSH would never let us in, and its
    builder's state is not in this .lab. Nothing of value is in a lab container."""
    marker = lxc.LXC_PATH / name / PREPARED
    if marker.exists() and marker.read_text() != _marker_text():
        _say(f"container {name} was prepared by another lab (another SSH key): destroying it")
        _forget(name)


def forget_foreign():
    """The whole-lab `up`: destroy the described containers another lab prepared, before a
    stale one (started at boot, lxc.start.auto) holds its addresses while tests run. The
    caller holds the lab lock."""
    for name in sorted(t.CONTAINERS):
        _forget_if_foreign(name)


def destroy_all():
    """Every further container (registered or described) and every extra bridge: the whole
    lab's `down`. The caller holds the lab lock."""
    registered = [p.stem for p in REGISTRY.glob("*.json")] if REGISTRY.is_dir() else []
    for name in sorted(set(registered) | set(t.CONTAINERS)):
        if lxc.release(name) is not None or (REGISTRY / f"{name}.json").exists():
            _say(f"destroying container {name}")
        _forget(name)
    for bridge in t.EXTRA_BRIDGES:
        lxc.remove_bridge(bridge)


def kept():
    """The whole-lab `up`'s "containers": the records of containers that still exist."""
    return kept_records(REGISTRY, lambda name: lxc.release(name) is not None)
