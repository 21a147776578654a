"""Infra02: the LXC container `email` — created, configured and started from inventory data.

Runs on Infra02 itself (production: over SSH; lab: `@local`). Everything inside the container
that must be right before SSH works (network, DNS, apt proxy, root's keys) is written from the
host into the container's rootfs, so the first SSH connection already meets a usable system.
Re-running changes nothing. A container of another Debian release is never replaced here:
that would destroy production's data, so the run stops and says so.

The container's LXC config is merged, not overwritten (operations/lxc_config.py): the keys the
inventory describes are set, every other line of a hand-written config stays. The container
is restarted only when a managed key that the running container reads changed, and the
restart operation names those keys (so --dry says why).
"""
import base64
import shlex
from io import StringIO

from pyinfra import host
from pyinfra.api import FactBase, deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.facts.server import Mounts
from pyinfra.operations import apt, files, server

from operations import lxc_config

# Debian's LXC default; the container's config and rootfs live below it.
LXC_PATH = "/var/lib/lxc"
# The config and interfaces templates loop over NICs and mounts: no blank line per tag.
_JINJA = {"trim_blocks": True, "lstrip_blocks": True}


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


class ContainerConfig(FactBase):
    """The text of the container's LXC config file, exactly as it is, or None if it does not
    exist. (Sent as base64: pyinfra hands facts their output line by line, which would lose
    trailing blanks and the final newline, and so the merge's "nothing changed". Bytes that
    are not UTF-8 come back as lone surrogates, which the deploy refuses.)"""

    def command(self, path):
        quoted = shlex.quote(path)
        return f"if [ -f {quoted} ]; then echo present; base64 -w0 < {quoted}; echo; fi; true"

    def process(self, output):
        if not output or output[0] != "present":
            return None
        return base64.b64decode("".join(output[1:])).decode("utf-8", errors="surrogateescape")


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


def _refuse_other_rootfs(name, config, rootfs):
    """Stop unless the existing config keeps the rootfs in the directory this deploy writes
    into before SSH works (network, DNS, apt, root's keys). On LVM, zfs, btrfs or an overlay
    that directory is not the container's root (or only while it runs): files written there
    would be lost or hidden, and the first SSH connection would meet an unusable system."""
    paths = lxc_config.values(config, "lxc.rootfs.path")
    path = paths[-1] if paths else None  # LXC takes the last one
    if path is None or lxc_config.dir_rootfs(path) != rootfs:
        raise DeployError(
            f"container {name}: its config's lxc.rootfs.path is {path or 'not set'}, but this "
            f"deploy writes the container's network, DNS, apt and SSH files into {rootfs} "
            f"from the host, which needs the dir backing store there (lxc.rootfs.path = "
            f"dir:{rootfs}); move the rootfs there, or write those files by hand and leave "
            "Infra02 out of this run (--limit email)")


def _inherit_identity(previous, rootfs):
    """A successor (operations/successor.py) boots with the SSH host keys and the hostname of
    the container it replaces: the published SSHFP records and the admins' known_hosts stay
    true across the upgrade, and the base deploy finds the hostname set (hostnamectl needs a
    D-Bus a fresh container lacks). Copied on the host, before the first start (sshd and
    systemd read them then); the old container's rootfs is only read."""
    source = shlex.quote(f"{LXC_PATH}/{previous}/rootfs/etc")
    _refuse_symlinks(rootfs, ["etc/ssh", "etc/hostname"])
    server.shell(
        name=f"SSH host keys and hostname of {previous} for its successor",
        commands=[f"test -f {source}/ssh/ssh_host_ed25519_key || "
                  f"{{ echo 'no SSH host keys in {LXC_PATH}/{previous}/rootfs/etc/ssh: is "
                  f"{previous} a container of this host with its rootfs in a directory?' >&2; "
                  "exit 1; }",
                  f"cp -p {source}/ssh/ssh_host_*_key {source}/ssh/ssh_host_*_key.pub "
                  f"{shlex.quote(rootfs)}/etc/ssh/",
                  f"cp -p {source}/hostname {shlex.quote(rootfs)}/etc/hostname"])


@deploy("Infra02: email container")
def container():
    data = host.data
    name = data.container_name
    release = data.debian_release
    directory = f"{LXC_PATH}/{name}"
    rootfs = f"{directory}/rootfs"

    # lxc-templates holds the debian template; it needs distro-info to name the security suite.
    apt.packages(name="LXC and the Debian template",
                 packages=["lxc", "lxc-templates", "debootstrap", "distro-info"])

    volume = data.data_volume_host_path
    # Without the volume mounted, the bind mount would put mail on Infra02's root filesystem.
    # (The lab host mounts its image later in this same run: operations/lab_host.py.)
    # A rebuild's rehearsal (rehearsal_of) restores into a scratch directory, no volume.
    if "lab_host" not in host.groups and not data.rehearsal_of and \
            volume not in host.get_fact(Mounts):
        raise DeployError(f"{volume} is not a mounted filesystem: mount the mail data volume "
                          "there first (data_volume_host_path in the inventory)")
    files.directory(name="Data volume directory on the host", path=volume)

    state = host.get_fact(ContainerState, container=name)
    if state and state["state"] == "PARTIAL":
        raise DeployError(
            f"container {name} is half-made (an lxc-create was interrupted: "
            f"{directory}/partial exists): check that nothing of value is in it, then "
            f"lxc-destroy -n {name} and run again")
    # Read before lxc-create, so None for a new container: see "Container config" below.
    live_config = host.get_fact(ContainerConfig, path=f"{directory}/config") if state else None
    if live_config is not None:
        _refuse_other_rootfs(name, live_config, rootfs)
        if any("\udc80" <= c <= "\udcff" for c in live_config):  # undecodable bytes
            raise DeployError(f"{directory}/config is not UTF-8 text: convert it (iconv) "
                              "before the deploy merges its own keys into it")
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

    want = lxc_config.wanted({key: data.get(key) for key in lxc_config.DATA_KEYS})
    if live_config is None:
        # A new container: its config was read (as absent) before the lxc-create above ran,
        # so nothing of it can be merged now. That is safe: lxc-create is the only operation
        # of this run that writes the file before this one, and all it writes (the
        # template's defaults) is replaced by this complete config, rootfs and include too.
        files.template(name="Container config", src="files/infra02/lxc.conf.j2",
                       dest=f"{directory}/config", mode="640", jinja_env_kwargs=_JINJA,
                       rootfs=rootfs, keys=dict(want.keys), nics=want.nics,
                       mounts=want.mounts)
        restart = ()
    else:
        merged = lxc_config.merge(live_config, want)
        # One upload of the whole merged text: the config holds no secret, and a second run
        # finds the same text (no change, no restart).
        files.put(name="Container config",
                  src=StringIO(merged.text),
                  dest=f"{directory}/config", mode="640", create_remote_dir=False)
        restart = merged.restart

    _refuse_symlinks(rootfs, ["etc/network/interfaces", "etc/apt/sources.list",
                              "etc/apt/apt.conf.d/01proxy", "etc/resolv.conf",
                              "root/.ssh/authorized_keys"])
    # LXC sets every NIC's static addresses itself; the template's DHCP stanza would hang
    # networking.service (and ssh waits behind it).
    files.template(name="Container /etc/network/interfaces",
                   src="files/infra02/interfaces.j2", dest=f"{rootfs}/etc/network/interfaces",
                   mode="644", jinja_env_kwargs=_JINJA, nics=[n.name for n in want.nics])
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
    if data.successor_of and not running:
        _inherit_identity(data.successor_of, rootfs)
    if not running:
        server.shell(name=f"Start container {name}",
                     commands=[f"lxc-start -n {shlex.quote(name)} -d",
                               f"lxc-wait -n {shlex.quote(name)} -s RUNNING -t 30"])
    elif restart:
        # Decided from the facts, so the operation exists only when a restart is due and its
        # name says why; comments, order and unmanaged keys never cause one.
        server.shell(name=f"Restart container {name}: {', '.join(restart)} changed",
                     commands=[f"lxc-stop -n {shlex.quote(name)} -t 60",
                               f"lxc-start -n {shlex.quote(name)} -d",
                               f"lxc-wait -n {shlex.quote(name)} -s RUNNING -t 30"])
