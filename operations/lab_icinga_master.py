"""Lab only: an Icinga2 master on the lab host, standing in for CAcert's monitor host.

Debian's icinga2 runs from its own tree `.lab/icinga2-master/` (config, CA, state, logs, pid;
`files/lab_icinga_master/master.sh` passes every path with -D), bound to the parent endpoint's
address on the lab bridge, so it shares nothing with /etc/icinga2 or with an Icinga2 that a
test runs on loopback. systemd is not PID 1 here: master.sh starts it with a pidfile.

What it knows: the container's agent endpoint and zone, its host with a `disk` and a `load`
check run by the agent (command_endpoint), and two API users with only what they need
(`lab-reader`: query hosts and services; `mailstore`: its CheckCommands, Services and passive
results). Its CA signs the agent through a ticket, which master.sh writes to the lab's secrets
directory (`icinga2_ticket_secret`), where the agent's deploy reads it.
Clients: CA `.lab/icinga2-master/lib/ca/ca.crt`, passwords `.lab/icinga2-master/secrets/`.
"""
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.operations import apt, files, server

from operations.secrets import secrets_dir
from operations.lab_host import PidAlive

REPO = Path(__file__).resolve().parents[1]
MASTER_DIR = REPO / ".lab" / "icinga2-master"
CONTROL = MASTER_DIR / "master.sh"
PIDFILE = MASTER_DIR / "run" / "icinga2.pid"
CA_CERT = MASTER_DIR / "lib" / "ca" / "ca.crt"
TEMPLATES = ("icinga2.conf", "zones.conf", "objects.conf", "api-users.conf")
JINJA = {"trim_blocks": True, "lstrip_blocks": True}


def api_password_file(user):
    """Where a client finds the lab master's password of API user `user`."""
    return MASTER_DIR / "secrets" / f"{user}.password"


def settings(data):
    """Template variables for the master, from the same data the agent is configured with."""
    parent = data["icinga2_parent_endpoints"][0]
    return {
        "master_name": parent["name"],
        "bind_host": parent["host"],
        "port": parent["port"],
        "parent_zone": data["icinga2_parent_zone"],
        "global_zones": list(data["icinga2_global_zones"]),
        "agent_name": data["icinga2_node_name"],
        "agent_address": data["container_net"]["ipv4"].split("/")[0],
        "master_dir": str(MASTER_DIR),
    }


@deploy("Lab: Icinga2 master")
def master():
    """Install, configure and (re)start the lab's Icinga2 master; write the agent's ticket."""
    values = settings(host.data.dict())
    ticket = secrets_dir() / host.data.icinga2_ticket_secret
    apt.packages(name="Icinga2 (daemon only)", packages=["icinga2-bin", "icinga2-common"])
    files.directory(name="Lab master directory", path=str(MASTER_DIR), mode="700")
    files.put(name="Lab master control script",
                        src="files/lab_icinga_master/master.sh", dest=str(CONTROL), mode="755")
    configs = [
        files.template(name=f"Lab master {name}", src=f"files/lab_icinga_master/{name}.j2",
                       dest=str(MASTER_DIR / "etc" / name), mode="644",
                       jinja_env_kwargs=dict(JINJA), **values)
        for name in TEMPLATES
    ]

    missing = [path for path in (MASTER_DIR / "etc" / "secrets.conf", CA_CERT,
                                 MASTER_DIR / "lib" / "certs" / f"{values['master_name']}.crt",
                                 ticket)
               if not host.get_fact(File, path=str(path))]
    if missing:
        configs.append(server.shell(
            name="Lab master secrets, CA, certificate and the agent's ticket",
            commands=[f"{CONTROL} {MASTER_DIR} setup {values['master_name']} "
                      f"{values['agent_name']} {ticket}"]))

    alive = host.get_fact(PidAlive, pidfile=str(PIDFILE))
    if not alive:
        server.shell(name="Start the lab Icinga2 master",
                     commands=[f"{CONTROL} {MASTER_DIR} start"])
    else:
        server.shell(name="Validate and reload the lab Icinga2 master",
                     commands=[f"{CONTROL} {MASTER_DIR} reload"],
                     _if=lambda: any(op.did_change() for op in configs))
