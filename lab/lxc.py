"""LXC containers and bridges on this machine, as the lab handles them: the plain commands
(lxc-create, lxc-start, ip link) that `lab up` and `lab container up` share.

A container is "complete" when lxc-create finished (no `partial` marker), its rootfs has an
os-release, sshd and SSH host keys; anything less is "half-made" and is replaced, never
repaired: it holds nothing of value (the lab's data lives on volumes outside the rootfs).
"""
import shutil
import socket
import subprocess
import time
from pathlib import Path

from lab.topology import bridge_hwaddr

LXC_PATH = Path("/var/lib/lxc")


def quiet(argv):
    """The exit status of `argv`, output discarded; 127 if the command is not installed."""
    try:
        return subprocess.run(argv, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL).returncode
    except FileNotFoundError:
        return 127


def rootfs(name):
    return LXC_PATH / name / "rootfs"


def release(name):
    """The release in the container's rootfs, "" if it is half-made, None if absent."""
    directory = LXC_PATH / name
    if not directory.exists():
        return None
    root = rootfs(name)
    os_release = root / "etc" / "os-release"
    # lxc-create keeps its "partial" marker until the template has finished.
    complete = ((directory / "config").is_file() and not (directory / "partial").exists()
                and os_release.is_file() and (root / "usr" / "sbin" / "sshd").exists()
                and any((root / "etc" / "ssh").glob("ssh_host_*_key.pub")))
    if not complete:
        return ""
    for line in os_release.read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return ""


def running(name):
    result = subprocess.run(["lxc-info", "-n", name, "-s", "-H"], capture_output=True,
                            text=True)
    return result.returncode == 0 and result.stdout.strip() == "RUNNING"


def destroy(name):
    """Stop and destroy the container `name`, also a half-made one; no error if absent."""
    quiet(["lxc-stop", "-n", name, "-k"])
    quiet(["lxc-destroy", "-n", name])
    if (LXC_PATH / name).exists():
        shutil.rmtree(LXC_PATH / name)


def known_hosts_lines(name, address):
    """known_hosts lines trusting exactly the host keys in the container's rootfs (read on
    this host, not over the net); [] if it has none."""
    lines = []
    for pub in sorted((rootfs(name) / "etc" / "ssh").glob("ssh_host_*_key.pub")):
        kind, key = pub.read_text().split()[:2]
        lines.append(f"{address} {kind} {key}\n")
    return lines


def ssh_argv(address, key, known_hosts, command):
    """The argv that runs the shell `command` as root on `address` with the lab's key."""
    return ["ssh", "-i", str(key), "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
            "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
            "-o", "LogLevel=ERROR", f"root@{address}", command]


def wait_for_ssh(address, argv, timeout=180):
    """Wait until sshd on `address` answers and `argv` (an ssh_argv() that waits for systemd
    to settle) succeeds; False after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((address, 22), timeout=2).close()
            if quiet(argv) == 0:
                return True
        except OSError:
            pass
        time.sleep(1)
    return False


# --- bridges -------------------------------------------------------------------------------
def bridge_exists(bridge):
    return quiet(["ip", "link", "show", bridge]) == 0


def ensure_bridge(bridge, address):
    """Bridge `bridge` up with `address` ("10.0.4.1/24") and the fixed MAC derived from it
    (topology.bridge_hwaddr: why); keeps what a killed run made."""
    hwaddr = bridge_hwaddr(address)
    if not bridge_exists(bridge):
        subprocess.run(["ip", "link", "add", bridge, "address", hwaddr, "type", "bridge"],
                       check=True)
    mac = Path(f"/sys/class/net/{bridge}/address").read_text().strip()
    if mac != hwaddr:
        # Announced (arp_notify: gratuitous ARP), so running containers follow at once.
        subprocess.run(["sysctl", "-qw", f"net.ipv4.conf.{bridge}.arp_notify=1"], check=True)
        subprocess.run(["ip", "link", "set", bridge, "address", hwaddr], check=True)
    have = subprocess.run(["ip", "-o", "addr", "show", "dev", bridge], capture_output=True,
                          text=True, check=True).stdout.split()
    if address not in have:
        subprocess.run(["ip", "addr", "add", address, "dev", bridge], check=True)
    subprocess.run(["ip", "link", "set", bridge, "up"], check=True)


def remove_bridge(bridge):
    if bridge_exists(bridge):
        subprocess.run(["ip", "link", "del", bridge], check=True)


def ensure_volume(mount_point, image, size):
    """A sparse ext4 image `image` of `size` ("512M") loop-mounted at `mount_point`: a real
    filesystem of its own, as a container's data volume is on Infra02 (the deploy refuses a
    data volume path that is not a mount point). Keeps what a killed run made."""
    image = Path(image)
    if not image.is_file():
        # Built under a temporary name: a killed run never leaves a half-made image.
        tmp = image.with_name(image.name + ".tmp")
        image.parent.mkdir(parents=True, exist_ok=True)
        tmp.unlink(missing_ok=True)
        subprocess.run(["truncate", "-s", size, str(tmp)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-L", image.stem[:16], str(tmp)], check=True)
        tmp.replace(image)
    if quiet(["mountpoint", "-q", str(mount_point)]) != 0:
        Path(mount_point).mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-o", "loop", str(image), str(mount_point)], check=True)


def remove_volume(mount_point, image):
    """Unmount `mount_point`, detach the loop devices of `image` and delete both."""
    if quiet(["mountpoint", "-q", str(mount_point)]) == 0:
        subprocess.run(["umount", str(mount_point)], check=True)
    found = subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True)
    for line in found.stdout.splitlines():
        quiet(["losetup", "-d", line.split(":", 1)[0]])
    Path(image).unlink(missing_ok=True)
    if Path(mount_point).is_dir():
        Path(mount_point).rmdir()  # empty once unmounted: never deletes what is below
