"""Infra02: the LXC container `email` — created, configured and started from inventory data.

Runs on Infra02 itself (production: over SSH; lab: `@local`). Everything inside the container
that must be right before SSH works (network, DNS, apt proxy, root's keys) is written from the
host into the container's rootfs, so the first SSH connection already meets a usable system.
Re-running changes nothing. A container of another Debian release is never replaced here:
that would destroy production's data, so the run stops and says so.
"""
import shlex

from pyinfra import host
from pyinfra.api import FactBase, deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.facts.server import Mounts
from pyinfra.operations import apt, files, server

# Debian's LXC default; the container's config and rootfs live below it.
LXC_PATH = "/var/lib/lxc"


class ContainerState(FactBase):
    """`{"state": "RUNNING"|"STOPPED"|..., "release": "bookworm"}`, or None if it does not exist.

    "PARTIAL" means an interrupted lxc-create left it (LXC's own `partial` marker).
    The release is the rootfs' VERSION_CODENAME (read on the host, so also when stopped).
    """

    def command(self, container, lxc_path=LXC_PATH):
        rootfs = shlex.quote(f"{lxc_path}/{container}/rootfs")
        config = shlex.quote(f"{lxc_path}/{container}/config")
        return (
            f"if [ -e {shlex.quote(f'{lxc_path}/{container}/partial')} ]; then "
            "echo state=PARTIAL; "
            f"elif [ -f {config} ]; then "
            f"echo state=$(lxc-info -P {shlex.quote(lxc_path)} -n {shlex.quote(container)} -s -H "
            "2>/dev/null || echo UNKNOWN); "
            f"(. {rootfs}/etc/os-release 2>/dev/null && echo release=$VERSION_CODENAME); "
            "fi; true"
        )

    def process(self, output):
        values = dict(line.split("=", 1) for line in output if "=" in line)
        if "state" not in values:
            return None
        return {"state": values["state"], "release": values.get("release", "")}


class Symlinks(FactBase):
    """Those of `paths` that are symbolic links."""

    def command(self, paths):
        quoted = " ".join(shlex.quote(p) for p in paths)
        return f"for p in {quoted}; do if [ -L \"$p\" ]; then echo \"$p\"; fi; done; true"

    def process(self, output):
        return [line for line in output if line]


def _refuse_symlinks(rootfs, files_in_rootfs):
    """Stop if a path this deploy writes below the rootfs is a symlink: written from the host,
    it would resolve on the host (a root inside the container could aim it at /etc/shadow)."""
    paths = set()
    for path in files_in_rootfs:
        parts = path.strip("/").split("/")
        paths.update(f"{rootfs}/" + "/".join(parts[:i + 1]) for i in range(len(parts)))
    links = host.get_fact(Symlinks, paths=sorted(paths))
    if links:
        raise DeployError(f"refusing to write into the container through symlinks: "
                          f"{', '.join(links)} (replace them with plain files or directories)")


@deploy("Infra02: email container")
def container():
    data = host.data
    name = data.container_name
    release = data.debian_release
    net = data.container_net
    directory = f"{LXC_PATH}/{name}"
    rootfs = f"{directory}/rootfs"

    # lxc-templates holds the debian template; it needs distro-info to name the security suite.
    apt.packages(name="LXC and the Debian template",
                 packages=["lxc", "lxc-templates", "debootstrap", "distro-info"])

    volume = data.data_volume_host_path
    # Without the volume mounted, the bind mount would put mail on Infra02's root filesystem.
    # (The lab host mounts its image later in this same run: operations/lab_host.py.)
    if "lab_host" not in host.groups and volume not in host.get_fact(Mounts):
        raise DeployError(f"{volume} is not a mounted filesystem: mount the mail data volume "
                          "there first (data_volume_host_path in the inventory)")
    files.directory(name="Data volume directory on the host", path=volume)

    state = host.get_fact(ContainerState, container=name)
    if state and state["state"] == "PARTIAL":
        raise DeployError(
            f"container {name} is half-made (an lxc-create was interrupted: "
            f"{directory}/partial exists): check that nothing of value is in it, then "
            f"lxc-destroy -n {name} and run again")
    if state and state["release"] and state["release"] != release:
        raise DeployError(
            f"container {name} runs Debian {state['release']} but the inventory says "
            f"{release}: upgrade it in place, or destroy it deliberately (lxc-destroy -n {name}) "
            "if its data is elsewhere; this deploy never destroys a container")
    if state is None:
        server.shell(
            name=f"Create container {name} (Debian {release})",
            commands=[
                f"lxc-create -n {shlex.quote(name)} -t debian -f /dev/null -- "
                f"-r {shlex.quote(release)} --mirror={shlex.quote(data.debian_mirror)}" +
                (f" --security-mirror={shlex.quote(data.debian_security_mirror)}"
                 if data.debian_security_mirror else ""),
            ],
        )

    config = files.template(
        name="Container config",
        src="files/infra02/lxc.conf.j2",
        dest=f"{directory}/config",
        mode="640",
        name_=name,
        rootfs=rootfs,
        net=net,
        autostart=data.container_autostart,
        data_volume_host_path=data.data_volume_host_path,
        data_volume=data.data_volume.lstrip("/"),
    )

    _refuse_symlinks(rootfs, ["etc/network/interfaces", "etc/apt/sources.list",
                              "etc/apt/apt.conf.d/01proxy", "etc/resolv.conf",
                              "root/.ssh/authorized_keys"])
    # LXC sets eth0's static addresses itself; the template's DHCP stanza would hang
    # networking.service (and ssh waits behind it).
    files.template(name="Container /etc/network/interfaces",
                   src="files/infra02/interfaces.j2", dest=f"{rootfs}/etc/network/interfaces",
                   mode="644")
    files.template(name="Container apt sources", src="files/infra02/sources.list.j2",
                   dest=f"{rootfs}/etc/apt/sources.list", mode="644",
                   release=release, mirror=data.debian_mirror,
                   security_mirror=data.debian_security_mirror)
    proxy_conf = f"{rootfs}/etc/apt/apt.conf.d/01proxy"
    if data.apt_proxy:
        files.template(name="Container apt proxy", src="files/infra02/apt-proxy.conf.j2",
                       dest=proxy_conf, mode="644", proxy=data.apt_proxy)
    else:
        files.file(name="No container apt proxy", path=proxy_conf, present=False)
    if data.container_nameservers:
        files.template(name="Container resolv.conf", src="files/infra02/resolv.conf.j2",
                       dest=f"{rootfs}/etc/resolv.conf", mode="644",
                       nameservers=data.container_nameservers, domain=data.mail_domain)

    files.directory(name="Container /root/.ssh", path=f"{rootfs}/root/.ssh", mode="700",
                    user="root", group="root")
    files.template(name="Container root authorized_keys",
                   src="files/infra02/authorized_keys.j2",
                   dest=f"{rootfs}/root/.ssh/authorized_keys", mode="600",
                   user="root", group="root", keys=data.root_authorized_keys)

    running = state is not None and state["state"] == "RUNNING"
    if running:
        server.shell(name=f"Restart container {name} for its new config",
                     commands=[f"lxc-stop -n {shlex.quote(name)} -t 60",
                               f"lxc-start -n {shlex.quote(name)} -d",
                               f"lxc-wait -n {shlex.quote(name)} -s RUNNING -t 30"],
                     _if=config.did_change)
    else:
        server.shell(name=f"Start container {name}",
                     commands=[f"lxc-start -n {shlex.quote(name)} -d",
                               f"lxc-wait -n {shlex.quote(name)} -s RUNNING -t 30"])
