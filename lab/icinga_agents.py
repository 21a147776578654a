"""The lab's Icinga2 master and the agents of further lab containers (lab/containers.py).

The master (operations/lab_icinga_master.py, `.lab/icinga2-master/`) is made by `./lab/up`
for the email container's agent. A further container whose description names an
`icinga2_node` gets, at each `lab container up`:
  - its agent's PKI ticket, `.lab/secrets/icinga2-agent-NAME.ticket` (what its inventory's
    icinga2_ticket_secret names): Icinga's ticket is PBKDF2-HMAC-SHA1 of the CN with the
    master's ticket salt (50000 rounds, 20 bytes), as `icinga2 pki ticket` makes it;
  - its Endpoint, Zone and Host on the master, in `etc/agents.d/NAME.conf`, so that the
    agent's zone is known and `mailstore icinga register` finds its host; the master is
    reloaded (validated first by master.sh) when that file changed.
A container without an agent whose description names an `icinga2_host` (the backup host:
its only services are passive, pushed by its own jobs) gets its Host object alone, in the
same file, kept UP by `dummy` (nothing on the master could check it otherwise).
`container down NAME` keeps the master's objects: Services the agent registered through the
API name its host, and a master whose config loses that host would refuse to load them.
"""
import hashlib
import subprocess
from pathlib import Path

from lab import atomic

MASTER = "icinga2-master"
INCLUDE = 'include_recursive "agents.d"'
ROUNDS = 50000


def ticket(common_name, salt):
    """The PKI ticket of the agent `common_name` for a master with ticket salt `salt`."""
    return hashlib.pbkdf2_hmac("sha1", common_name.encode(), salt.encode(), ROUNDS, 20).hex()


def ticket_secret(name):
    """The secret file (in the lab's secrets directory) holding container `name`'s ticket."""
    return f"icinga2-agent-{name}.ticket"


def objects(common_name, address, zone="master"):
    """The master's config for one further agent (an Icinga2 config text)."""
    return (
        f"/* Made by `python -m lab container up` (lab/icinga_agents.py). */\n"
        f'object Endpoint "{common_name}" {{\n}}\n\n'
        f'object Zone "{common_name}" {{\n  endpoints = [ "{common_name}" ]\n'
        f"  parent = \"{zone}\"\n}}\n\n"
        f'object Host "{common_name}" {{\n  zone = "{zone}"\n  address = "{address}"\n'
        f'  check_command = "cluster-zone"\n  vars.cluster_zone = "{common_name}"\n'
        f"  check_interval = 30s\n  retry_interval = 30s\n}}\n")


def host_object(host_name, address, zone="master"):
    """The master's config for a container without an agent (an Icinga2 config text)."""
    return (
        f"/* Made by `python -m lab container up` (lab/icinga_agents.py). */\n"
        f'object Host "{host_name}" {{\n  zone = "{zone}"\n  address = "{address}"\n'
        f"  /* No agent: its services are passive (pushed); nothing checks the host. */\n"
        f'  check_command = "dummy"\n  vars.dummy_state = 0\n'
        f'  vars.dummy_text = "lab container without an agent"\n'
        f"  check_interval = 5m\n}}\n")


def ensure_host(lab_dir, name, host_name, address, say):
    """The Host object `host_name` of container `name` (no agent) on the master; False (and
    a line saying why) when the lab has no master yet."""
    master = Path(lab_dir) / MASTER
    if not (master / "etc" / "icinga2.conf").is_file():
        say(f"no lab Icinga2 master in {master}: no Host object for {name}")
        return False
    _install(master, name, host_object(host_name, address), f"host {host_name}", say)
    return True


def ensure_agent(lab_dir, name, common_name, address, say):
    """Ticket and master objects for container `name`'s agent `common_name`; False (and a
    line saying why) when the lab has no master yet."""
    master = Path(lab_dir) / MASTER
    salt_file = master / "secrets" / "ticket-salt"
    main_conf = master / "etc" / "icinga2.conf"
    if not (salt_file.is_file() and main_conf.is_file()):
        say(f"no lab Icinga2 master in {master}: no agent ticket for {name}")
        return False
    atomic.write(Path(lab_dir) / "secrets" / ticket_secret(name),
           ticket(common_name, salt_file.read_text().strip()) + "\n", 0o600)
    _install(master, name, objects(common_name, address), f"agent {common_name}", say)
    return True


def _install(master, name, text, what, say):
    """Container `name`'s objects in the master's agents.d; reload the master if they (or
    its include of agents.d) changed."""
    main_conf = master / "etc" / "icinga2.conf"
    conf = master / "etc" / "agents.d" / f"{name}.conf"
    changed = not conf.is_file() or conf.read_text() != text
    if changed:
        atomic.write(conf, text, 0o644)
    # A master made before its template included agents.d (the template has the same line
    # now, so the next deploy of the lab host keeps it).
    if INCLUDE not in main_conf.read_text():
        with open(main_conf, "a") as f:
            f.write(f"\n/* Agents of further lab containers (lab/icinga_agents.py). */\n"
                    f"{INCLUDE}\n")
        changed = True
    if changed:
        say(f"lab Icinga2 master: {what} of {name} known; reloading")
        subprocess.run([str(master / "master.sh"), str(master), "reload"], check=True)
