"""Icinga2 agent: the monitor host's parent zone runs its checks here (command_endpoint).

The agent listens on 5665 (the firewall admits only the monitor host), accepts commands and
the global zones' config from its parent, and holds a certificate signed by the parent's CA.
That certificate is obtained once with a ticket (`icinga2 pki ticket --cn <node name>` on the
master, kept in the secrets directory): the ticket is read only while the agent has no signed
certificate, uploaded to a root-only file without ever appearing in the deploy's output, and
`files/icinga2_agent/pki-request.sh` reads it there and deletes it.

A changed configuration is validated (`icinga2 daemon -C`) on a staged copy before it replaces
the live files (operations/staging.py): a broken template never reaches /etc/icinga2.
"""
import re

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.operations import apt, files, server, systemd
from pyinfra.operations.util import any_changed

from operations.secrets import InventoryError, read_secret
from operations import secret_file, staging

PACKAGES = ["icinga2", "monitoring-plugins-basic", "openssl"]
ETC = "/etc/icinga2"
CERTS = "/var/lib/icinga2/certs"
PKI_SCRIPT = "/usr/local/lib/cacert-email/icinga2-pki-request"
# In root's home (mode 0700 on Debian), so not even its short life is visible to other users.
TICKET_FILE = "/root/.icinga2-agent.ticket"
# The staged set is checked as the daemon will read it: the staged files, the live enabled
# features (but the staged api.conf), then `icinga2 daemon -C` on the staged icinga2.conf.
# As root (the staging directory is root's alone; the CLI would drop to nagios) and with its
# cache files written into the stage, not over the live daemon's.
STAGED_CHECK = (
    "mkdir -p {stage}/features-enabled {stage}/cache && "
    f"for f in {ETC}/features-enabled/*.conf; do "
    "if [ -e \"$f\" ]; then ln -sf \"$f\" {stage}/features-enabled/; fi; done && "
    "ln -sf {stage}/api.conf {stage}/features-enabled/api.conf && "
    "icinga2 daemon -C -x critical -DRunAsUser=root -DRunAsGroup=root "
    "-DCacheDir={stage}/cache -c {stage}/icinga2.conf"
)
TEMPLATES = {
    "icinga2.conf": f"{ETC}/icinga2.conf",
    "constants.conf": f"{ETC}/constants.conf",
    "zones.conf": f"{ETC}/zones.conf",
    "api.conf": f"{ETC}/features-available/api.conf",
}

# Names go into the Icinga DSL between double quotes: allow what host and zone names use.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class Icinga2DataError(ValueError):
    """An icinga2_* inventory datum is unusable; the message names the key."""


def _name(value, key):
    if not isinstance(value, str) or not _NAME.match(value):
        raise Icinga2DataError(f"{key}: {value!r} is not a usable Icinga2 object name "
                               "(letters, digits, '.', '_', '-')")
    return value


def settings(data):
    """The template variables for this host, from its inventory data (validated here)."""
    endpoints = data["icinga2_parent_endpoints"]
    if not endpoints:
        raise Icinga2DataError("icinga2_parent_endpoints: at least one parent endpoint is needed")
    parents = []
    for i, endpoint in enumerate(endpoints):
        key = f"icinga2_parent_endpoints[{i}]"
        if not isinstance(endpoint, dict) or not {"name", "host", "port"} >= set(endpoint) \
                or "name" not in endpoint:
            raise Icinga2DataError(f"{key}: must be {{'name': ..., 'host': ..., 'port': ...}}, "
                                   f"got {endpoint!r}")
        host_name = endpoint.get("host")
        if host_name is not None:
            _name(host_name, f"{key} host")
        port = endpoint.get("port", 5665)
        if not isinstance(port, int) or not 0 < port < 65536:
            raise Icinga2DataError(f"{key} port: {port!r} is not a TCP port")
        parents.append({"name": _name(endpoint["name"], f"{key} name"),
                        "host": host_name, "port": port})
    return {
        "node_name": _name(data["icinga2_node_name"], "icinga2_node_name"),
        "parent_zone": _name(data["icinga2_parent_zone"], "icinga2_parent_zone"),
        "parent_endpoints": parents,
        "global_zones": [_name(z, "icinga2_global_zones") for z in data["icinga2_global_zones"]],
        "accept_config": bool(data["icinga2_accept_config"]),
        "port": data["ports"]["icinga2"]["port"],
    }


def read_ticket(name, node_name):
    """The agent's PKI ticket from the secret `name` (also checked by the production
    inventory's validation, before any host is touched)."""
    ticket = read_secret(name).strip()
    if not re.match(r"^[0-9a-f]{40}$", ticket):
        raise InventoryError(f"secret {name}: not an Icinga2 ticket (40 hex digits, from "
                             f"`icinga2 pki ticket --cn {node_name}`)")
    return ticket


@deploy("Icinga2 agent")
def agent():
    """Package, signed certificate, zones and API listener from inventory (checked on a staged
    copy before they replace the live files), reload."""
    values = settings(host.data.dict())
    apt.packages(name="Icinga2 and the monitoring plugins", packages=PACKAGES)

    # The certificate first: `icinga2 daemon -C` refuses an ApiListener without one.
    files.put(name="Icinga2 PKI request script", src="files/icinga2_agent/pki-request.sh",
              dest=PKI_SCRIPT, mode="755")
    changes = []
    if not host.get_fact(File, path=f"{CERTS}/ca.crt"):
        parent = next((p for p in values["parent_endpoints"] if p["host"]), None)
        if parent is None:
            raise Icinga2DataError("icinga2_parent_endpoints: the agent has no certificate yet "
                                   "and no parent endpoint has a `host` to request one from")
        ticket = read_ticket(host.data.icinga2_ticket_secret, host.data.icinga2_node_name)
        secret_file.upload(name="Icinga2 ticket (from the secrets directory)", content=ticket,
                           dest=TICKET_FILE)
        changes.append(server.shell(
            name=f"Icinga2 certificate signed by {parent['name']} (ticket)",
            commands=[f"{PKI_SCRIPT} {values['node_name']} {parent['host']} {parent['port']} "
                      f"{TICKET_FILE}"]))

    changes.append(staging.files(
        name="Icinga2 configuration (checked before it is used)",
        config_files=[staging.ConfigFile(dest, staging.render(f"files/icinga2_agent/{name}.j2",
                                                              **values))
                      for name, dest in TEMPLATES.items()],
        stage=f"{staging.STAGING_ROOT}/icinga2",
        check=STAGED_CHECK,
    ))
    changes.append(files.link(name="Icinga2 api feature enabled",
                              path=f"{ETC}/features-enabled/api.conf",
                              target="../features-available/api.conf"))

    if host.data.successor_of or host.data.rehearsal_of:
        # A successor before its cut-over, or a rebuild's rehearsal: same endpoint name as the
        # serving container's agent, and the parent takes one connection per endpoint. A
        # successor's starts at the cut-over, a rehearsal's never.
        systemd.service(name="Icinga2 stopped until the cut-over", service="icinga2",
                        running=False, enabled=True)
        return
    systemd.service(name="Icinga2 running", service="icinga2", running=True, enabled=True)
    systemd.service(name="Reload Icinga2", service="icinga2", reloaded=True,
                    _if=any_changed(*changes))
