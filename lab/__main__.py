"""`python -m lab up [--release R] | down | container up|down NAME`: build or tear down the lab.

`container up|down NAME` handles a further lab container beside email (lab/containers.py).

up, under the lab lock (lab/lock.py), each step reusing what a previous (even killed) run left:
  1. `.lab/`: SSH key, throwaway CA and certificates, passwords — only what is missing;
  2. a container that is half-made or of another release is destroyed (lab only!);
  3. phase 1: `pyinfra inventories/lab.py deploy.py --limit infra02` — this machine becomes
     Infra02 (operations/lab_host.py) and creates/starts the container (operations/infra02.py);
  4. the container's SSH host keys are read from its rootfs into `.lab/known_hosts`;
  5. phase 2: `--limit email`, the full deploy over SSH;
  6. phase 1 again: the lab DNS publishes what the deploy made on the server (the DKIM key's
     TXT record), as an operator publishes DNS after a deploy; so that every later run of
     either phase changes nothing;
  7. `.lab/lab.json` (docs/architecture.md, "Lab contract"), written last: it exists only for a
     lab that came up completely; it keeps the "containers" records of further containers
     that still exist.
down: stops and destroys the container, the further containers and their bridges, the
daemons, the data volume, the bridge and `.lab/`; keeps the apt-cacher-ng cache and the LXC
template cache so the next `up` is fast.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from lab import containers, lock, lxc, secrets, topology as t

REPO = Path(__file__).resolve().parent.parent
LAB = REPO / ".lab"
ROOTFS = lxc.rootfs(t.CONTAINER)
KNOWN_HOSTS = LAB / "known_hosts"
SSH_KEY = LAB / "id_ed25519"

# What operations/lab_host.py starts and makes (kept in step with it).
PIDFILES = ("/run/cacert-lab-dnsmasq.pid", "/run/apt-cacher-ng/cacert-lab.pid")
DATA_IMAGE = Path("/var/lib/cacert-lab/mail.img")
LAB_ETC = Path("/etc/cacert-lab")


class LabError(Exception):
    """The lab cannot come up; the message says which step and why."""


def _say(message):
    print(f"lab: {message}", flush=True)


def _run(argv, check=False, **kwargs):
    return subprocess.run(argv, check=check, **kwargs)


_quiet = lxc.quiet


def _pyinfra(limit, *extra):
    # Always the lab's own secrets: a production $CACERT_EMAIL_SECRETS left in the shell must
    # never be uploaded into the lab.
    env = dict(os.environ, CACERT_EMAIL_SECRETS=str(LAB / "secrets"))
    pyinfra = Path(sys.executable).parent / "pyinfra"
    argv = [str(pyinfra), "-y", "inventories/lab.py", "deploy.py", "--limit", limit, *extra]
    _say(" ".join(argv))
    if _run(argv, cwd=REPO, env=env).returncode != 0:
        raise LabError(f"the deploy --limit {limit} failed (its output is above)")


# --- the container -----------------------------------------------------------------------
def _destroy_container():
    lxc.destroy(t.CONTAINER)
    KNOWN_HOSTS.unlink(missing_ok=True)


def _replace_unusable_container(release):
    """Destroy a mail container this `up` cannot build on: half-made, of another release, or
    made by another lab (an earlier clone, a machine image taken with a lab up), whose
    backup repository and keys belong to that lab's secrets (the deploy never replaces an
    existing backup repository, so the first deploy would fail on its key)."""
    have = lxc.release(t.CONTAINER)
    if have is None:
        return
    if have == release:
        if containers.prepared_here(t.CONTAINER):
            return
        why = "not made by this lab (another SSH key, or no marker)"
    else:
        why = "half-made" if have == "" else f"Debian {have}, not {release}"
    _say(f"container {t.CONTAINER} is {why}: destroying it (the lab's data volume stays)")
    _destroy_container()


def _write_known_hosts():
    """Trust exactly the host keys in the container's rootfs (read here, not over the net)."""
    lines = lxc.known_hosts_lines(t.CONTAINER, t.CONTAINER_ADDRESS)
    if not lines:
        raise LabError(f"no SSH host keys in {ROOTFS}/etc/ssh: the container is incomplete")
    KNOWN_HOSTS.write_text("".join(lines))


def ssh_argv(command):
    return lxc.ssh_argv(t.CONTAINER_ADDRESS, SSH_KEY, KNOWN_HOSTS, command)


def _wait_for_ssh(timeout=180):
    if not lxc.wait_for_ssh(t.CONTAINER_ADDRESS,
                            ssh_argv("systemctl is-system-running --wait >/dev/null; true"),
                            timeout):
        raise LabError(f"no SSH login to {t.CONTAINER_ADDRESS} within {timeout}s "
                       f"(look inside: lxc-attach -n {t.CONTAINER})")


def _settle_packages():
    """Let an apt run that a killed deploy left behind in the container finish, and finish
    an interrupted dpkg; otherwise the next deploy fails on the dpkg lock or state."""
    script = ("for i in $(seq 300); do pgrep -x 'apt-get|dpkg|apt' >/dev/null || break; "
              "sleep 1; done; DEBIAN_FRONTEND=noninteractive dpkg --configure -a")
    if _run(ssh_argv(script)).returncode != 0:
        raise LabError("dpkg --configure -a failed in the container (output above)")


# --- lab.json ----------------------------------------------------------------------------
def lab_description(release, accounts, further=None):
    """The contents of .lab/lab.json, exactly the contract in docs/architecture.md;
    `further`: the "containers" records (lab/containers.py) of further lab containers."""
    return {
        "release": release,
        "container": t.CONTAINER,
        "address": t.CONTAINER_ADDRESS,
        "ssh": {"user": "root", "key": ".lab/id_ed25519", "port": 22},
        "ca_cert": ".lab/ca.pem",
        "domain": t.DOMAIN,
        "hostnames": {"email": t.HOSTNAMES["email"], "community": t.HOSTNAMES["community"]},
        "mail_root": t.MAIL_ROOT,
        "data_volume": t.DATA_VOLUME,
        "accounts": accounts,
        "aliases": t.ALIASES,
        "ports": t.PORTS,
        "containers": dict(further or {}),
    }


# --- verbs -------------------------------------------------------------------------------
def up(release):
    timings = {}
    start = time.monotonic()

    def phase(name, since):
        timings[name] = round(time.monotonic() - since, 1)
        _say(f"{name}: {timings[name]}s")
        return time.monotonic()

    with lock.held():
        if time.monotonic() - start > 1:
            _say(f"waited {time.monotonic() - start:.0f}s for the lab lock")
            start = time.monotonic()
        # Further containers (lab/containers.py) outlive a new `up`: their records stay
        # in lab.json as long as the container exists.
        (LAB / "lab.json").unlink(missing_ok=True)
        mark = time.monotonic()
        accounts = secrets.generate(LAB)
        containers.forget_foreign()
        _replace_unusable_container(release)
        (LAB / "release").write_text(release + "\n")
        mark = phase("lab files", mark)
        _pyinfra("infra02")
        containers.mark_prepared(t.CONTAINER)
        mark = phase("phase 1 (lab host + container)", mark)
        _write_known_hosts()
        _wait_for_ssh()
        _settle_packages()
        mark = phase("container reachable over SSH", mark)
        _pyinfra("email")
        mark = phase("phase 2 (deploy over SSH)", mark)
        _pyinfra("infra02")
        mark = phase("lab DNS records from the deployed server", mark)
        (LAB / "lab.json").write_text(json.dumps(
            lab_description(release, accounts, containers.kept()), indent=2) + "\n")
    timings["total"] = round(time.monotonic() - start, 1)
    (LAB / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    _say(f"up in {timings['total']}s: {t.CONTAINER} (Debian {release}) at "
         f"{t.CONTAINER_ADDRESS}; described in {LAB / 'lab.json'}")


def _stop_pidfile(pidfile):
    try:
        pid = int(Path(pidfile).read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, 15)
        for _ in range(50):
            os.kill(pid, 0)
            time.sleep(0.1)
    except ProcessLookupError:
        pass
    Path(pidfile).unlink(missing_ok=True)


def down():
    with lock.held():
        _say(f"destroying container {t.CONTAINER}")
        _destroy_container()
        # Further containers first: their NICs hang on the bridges removed below.
        containers.destroy_all()
        # Lab daemons keep their pidfiles either at a fixed path (operations/lab_host.py) or
        # somewhere below .lab/ (the lab's Icinga2 master, the self-service API's apt repo).
        for pidfile in [*PIDFILES, *(LAB.rglob("*.pid") if LAB.is_dir() else [])]:
            _stop_pidfile(pidfile)
        if _quiet(["mountpoint", "-q", t.DATA_VOLUME_HOST_PATH]) == 0:
            _run(["umount", t.DATA_VOLUME_HOST_PATH], check=True)
        # Loop devices a killed run may have left attached to the image.
        found = _run(["losetup", "-j", str(DATA_IMAGE)], capture_output=True, text=True)
        for line in found.stdout.splitlines():
            _quiet(["losetup", "-d", line.split(":", 1)[0]])
        DATA_IMAGE.unlink(missing_ok=True)
        if _quiet(["ip", "link", "show", t.BRIDGE]) == 0:
            _run(["ip", "link", "del", t.BRIDGE], check=True)
        shutil.rmtree(LAB_ETC, ignore_errors=True)
        shutil.rmtree(LAB, ignore_errors=True)
    _say("down (kept: the apt-cacher-ng cache and the LXC template cache)")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m lab", description=__doc__.split("\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    up_parser = verbs.add_parser("up", help="build the lab, or bring it up to date")
    up_parser.add_argument("--release", choices=t.RELEASES, default=t.DEFAULT_RELEASE,
                           help="Debian release of the container (another one than the "
                                "existing container's replaces it)")
    verbs.add_parser("down", help="tear the lab down, further containers too (keeps the "
                                  "package caches)")
    container = verbs.add_parser(
        "container", help="bring a further lab container up or down (lab/containers.py)",
        description="Further lab containers beside email, described in lab/topology.py "
                    "CONTAINERS and recorded in .lab/lab.json under \"containers\".")
    actions = container.add_subparsers(dest="action", required=True)
    for action, text in (("up", "create, start and build it, or bring it up to date"),
                         ("down", "destroy it and forget it")):
        actions.add_parser(action, help=text).add_argument(
            "name", choices=sorted(t.CONTAINERS), help="the container")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root: the lab creates a bridge, a loop mount and a container")
    try:
        if args.verb == "up":
            up(args.release)
        elif args.verb == "down":
            down()
        elif args.action == "up":
            containers.up(args.name)
        else:
            containers.down(args.name)
    except (LabError, containers.ContainerError, TimeoutError,
            subprocess.CalledProcessError) as exc:
        _say(f"FAILED: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
