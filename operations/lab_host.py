"""Lab only: prepare this machine to act as Infra02 (bridge, apt proxy, DNS, data volume).

Production's Infra02 already has its bridge, its mirror access and its data volume; the lab
makes stand-ins for them on the machine that runs the tests:
- bridge `container_net.link` with the gateway address (plus the trusted hosts' addresses, so
  tests can connect *as* the monitor or the community host), no NAT: the container reaches
  only this host;
- apt-cacher-ng on the bridge address, the container's only way to Debian's packages;
- dnsmasq on the bridge address for the lab zone (with the DKIM record once the container has
  a key: operations/dkim.py lab_txt_records); any other name gets an answer at once;
- a sparse ext4 image loop-mounted at `data_volume_host_path`: a real separate filesystem.
systemd is not PID 1 on these machines, so the daemons are started directly with pidfiles,
and only when their pidfile names no live process (or their config changed).
"""
import ipaddress
import json
import shlex

from pyinfra import host
from pyinfra.api import FactBase, deploy
from pyinfra.facts.files import File
from pyinfra.facts.server import Mounts
from pyinfra.operations import apt, files, server

from lab.topology import bridge_hwaddr
from operations import dkim
from operations.infra02 import LXC_PATH

DATA_IMAGE = "/var/lib/cacert-lab/mail.img"
DATA_IMAGE_SIZE = "2G"
ACNG_PIDFILE = "/run/apt-cacher-ng/cacert-lab.pid"
DNSMASQ_CONF = "/etc/cacert-lab/dnsmasq.conf"
DNSMASQ_PIDFILE = "/run/cacert-lab-dnsmasq.pid"

PACKAGES = ["lxc", "lxc-templates", "debootstrap", "distro-info", "apt-cacher-ng",
            "dnsmasq-base", "e2fsprogs", "iproute2", "openssh-client", "dnsutils"]


class Link(FactBase):
    """`{"up": bool, "addresses": ["10.0.3.1/24", ...]}` of a network device, None if absent."""

    def command(self, device):
        return f"ip -j addr show dev {shlex.quote(device)} 2>/dev/null || true"

    def process(self, output):
        text = "\n".join(output).strip()
        if not text:
            return None
        (dev,) = json.loads(text)
        return {
            "up": "UP" in dev.get("flags", []),
            "addresses": [f"{a['local']}/{a['prefixlen']}" for a in dev.get("addr_info", [])],
            "hwaddr": dev.get("address"),
        }


class PidAlive(FactBase):
    """True if `pidfile` names a live process."""

    def command(self, pidfile):
        q = shlex.quote(pidfile)
        return f"if [ -s {q} ] && kill -0 \"$(cat {q})\" 2>/dev/null; then echo yes; fi; true"

    def process(self, output):
        return "yes" in output


def _daemon(label, pidfile, start, config_ops):
    """Start the daemon if it is not running; restart it if its config changed."""
    alive = host.get_fact(PidAlive, pidfile=pidfile)
    q = shlex.quote(pidfile)
    stop = (f"if [ -s {q} ]; then kill \"$(cat {q})\" 2>/dev/null || true; "
            f"for i in $(seq 50); do kill -0 \"$(cat {q})\" 2>/dev/null || break; sleep 0.1; "
            f"done; rm -f {q}; fi")
    server.shell(
        name=f"{'Restart' if alive else 'Start'} {label}",
        commands=[stop, start],
        _if=lambda: (not alive) or any(op.did_change() for op in config_ops),
    )


@deploy("Lab host: bridge, apt proxy, DNS, data volume")
def prepare():
    data = host.data
    net = data.container_net
    gateway = net["ipv4_gateway"]
    network = ipaddress.ip_interface(net["ipv4"]).network
    container_ip = str(ipaddress.ip_interface(net["ipv4"]).ip)
    bridge = net["link"]

    # Debian's lxc-net would make its own bridge lxcbr0 on 10.0.3.1/24, clashing with ours.
    files.put(name="No lxc-net bridge", src="files/lab_host/lxc-net.default",
              dest="/etc/default/lxc-net", mode="644")
    apt.packages(name="Lab host packages", packages=PACKAGES, update=True, cache_time=3600)

    # --- the bridge ------------------------------------------------------------------------
    link = host.get_fact(Link, device=bridge)
    hwaddr = bridge_hwaddr(gateway)
    if link is None:
        server.shell(name=f"Bridge {bridge}",
                     commands=[f"ip link add {shlex.quote(bridge)} address {hwaddr} type bridge"])
    elif link["hwaddr"] != hwaddr:
        # A MAC of its own: one taken from a port changes when a container comes or goes.
        # arp_notify: the change is announced (gratuitous ARP), so the running containers'
        # ARP caches follow at once instead of timing out connections for seconds.
        server.shell(name=f"Bridge {bridge}: its own MAC address {hwaddr}",
                     commands=[f"sysctl -qw net.ipv4.conf.{bridge}.arp_notify=1",
                               f"ip link set {shlex.quote(bridge)} address {hwaddr}"])
    wanted = [f"{gateway}/{network.prefixlen}"]
    for addresses in data.trusted_hosts.values():
        wanted += [f"{a}/{network.prefixlen}" for a in addresses
                   if ipaddress.ip_address(a) in network and a != gateway]
    have = link["addresses"] if link else []
    for address in wanted:
        if address not in have:
            server.shell(name=f"Address {address} on {bridge}",
                         commands=[f"ip addr add {address} dev {shlex.quote(bridge)}"])
    if not (link and link["up"]):
        server.shell(name=f"Bridge {bridge} up",
                     commands=[f"ip link set {shlex.quote(bridge)} up"])

    # --- the data volume -------------------------------------------------------------------
    mount_point = data.data_volume_host_path
    if not host.get_fact(File, path=DATA_IMAGE):
        # Built under a temporary name: a run killed half-way never leaves a half-made image.
        tmp = shlex.quote(DATA_IMAGE + ".tmp")
        server.shell(name="Data volume image", commands=[
            f"mkdir -p {shlex.quote(DATA_IMAGE.rsplit('/', 1)[0])}",
            f"rm -f {tmp}", f"truncate -s {DATA_IMAGE_SIZE} {tmp}",
            f"mkfs.ext4 -q -F -L cacert-mail {tmp}", f"mv {tmp} {shlex.quote(DATA_IMAGE)}",
        ])
    if mount_point not in host.get_fact(Mounts):
        server.shell(name=f"Mount the data volume at {mount_point}", commands=[
            f"mkdir -p {shlex.quote(mount_point)}",
            f"mount -o loop {shlex.quote(DATA_IMAGE)} {shlex.quote(mount_point)}",
        ])

    # --- apt proxy -------------------------------------------------------------------------
    # The package's empty default remaps to mirrors that are unreachable from here.
    backends = files.put(name="apt-cacher-ng backend", src="files/lab_host/backends_debian",
                         dest="/etc/apt-cacher-ng/backends_debian", mode="644")
    # Its own directories, owned by its user (a reinstall may give that user another uid).
    # (Owner only: a recursive mode would make every cached file executable.)
    for path in ("/run/apt-cacher-ng", "/var/log/apt-cacher-ng", "/var/cache/apt-cacher-ng"):
        files.directory(name=f"apt-cacher-ng directory {path}", path=path,
                        user="apt-cacher-ng", group="apt-cacher-ng", recursive=True)
    port = data.apt_proxy.rsplit(":", 1)[1].strip("/")
    _daemon("apt-cacher-ng", ACNG_PIDFILE, config_ops=[backends], start=(
        f"start-stop-daemon --start --pidfile {ACNG_PIDFILE} --chuid apt-cacher-ng "
        "--exec /usr/sbin/apt-cacher-ng -- "
        f"-c /etc/apt-cacher-ng ForeGround=0 BindAddress={gateway} Port={port} "
        f"PidFile={ACNG_PIDFILE}"
    ))

    # --- DNS -------------------------------------------------------------------------------
    names = sorted(set(data.hostnames.values()))
    dnsmasq_conf = files.template(
        name="dnsmasq config", src="files/lab_host/dnsmasq.conf.j2", dest=DNSMASQ_CONF,
        mode="644", listen=gateway, domain=data.mail_domain, pidfile=DNSMASQ_PIDFILE,
        records=[(n, container_ip) for n in names], mx=data.hostnames["email"],
        txt_records=dkim.lab_txt_records(host, f"{LXC_PATH}/{data.container_name}/rootfs"),
    )
    _daemon("dnsmasq", DNSMASQ_PIDFILE, config_ops=[dnsmasq_conf],
            start=f"dnsmasq --conf-file={DNSMASQ_CONF}")
