"""Port origins enforced inside the container with nftables.

The inventory's `ports` table says who may reach each port ("any", "local" or a name in
`trusted_hosts`); `rules()` turns it into the list the template renders. The new ruleset is
checked with `nft -c -f` on the staged file before it replaces /etc/nftables.conf, and then
loaded; nftables.service loads the same file at boot.
"""
import ipaddress

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.server import Command
from pyinfra.operations import apt, server, systemd

from operations import staging

CONFIG = "/etc/nftables.conf"
TABLE = "inet cacert_email"
STAGE = f"{staging.STAGING_ROOT}/firewall"
CHECK = "nft -c -f {stage}/nftables.conf"


class FirewallError(Exception):
    """The ports table cannot be turned into rules; the message names the entry."""


def rules(ports, trusted_hosts):
    """One rule per port, in port order: name, port, origin and the allowed source addresses.

    + ports: {"name": {"port": 25, "from": "any" | "local" | <trusted_hosts key>}}
    + trusted_hosts: {"monitor": ["192.0.2.1", "2001:db8::1"], ...}
    """
    result = []
    for name, entry in sorted(ports.items(), key=lambda item: (item[1]["port"], item[0])):
        port, origin = entry["port"], entry["from"]
        if not isinstance(port, int) or not 0 < port < 65536:
            raise FirewallError(f"ports[{name!r}]: port {port!r} is not a TCP port number")
        rule = {"name": name, "port": port, "origin": origin, "ipv4": [], "ipv6": []}
        if origin == "any":
            rule["comment"] = f"{name}: from anywhere"
        elif origin == "local":
            rule["comment"] = f"{name}: local only"
        elif origin in trusted_hosts:
            rule["comment"] = f"{name}: from {origin} only"
            for address in trusted_hosts[origin]:
                try:
                    network = ipaddress.ip_network(address, strict=False)
                except ValueError:
                    raise FirewallError(f"trusted_hosts[{origin!r}]: {address!r} is not an "
                                        "IP address or network") from None
                rule[f"ipv{network.version}"].append(str(network))
        else:
            raise FirewallError(f"ports[{name!r}]: origin {origin!r} is neither 'any', 'local' "
                                f"nor a key of trusted_hosts ({', '.join(sorted(trusted_hosts))})")
        result.append(rule)
    return result


@deploy("Firewall")
def nftables():
    """The generated ruleset in /etc/nftables.conf, checked, loaded, and loaded at boot."""
    port_rules = rules(host.data.ports, host.data.trusted_hosts)
    apt.packages(name="nftables", packages=["nftables"])
    config = staging.files(
        name="nftables.conf (checked with nft -c)",
        config_files=[staging.ConfigFile(
            CONFIG, staging.render("files/firewall/nftables.conf.j2", rules=port_rules),
            mode="755")],
        stage=STAGE, check=CHECK)
    # Also load when the table is missing although the file is right (e.g. someone ran
    # `nft flush ruleset`).
    loaded = host.get_fact(Command, command=f"nft list table {TABLE} >/dev/null 2>&1 "
                                            "&& echo loaded || echo missing") == "loaded"
    server.shell(name="Load the nftables ruleset", commands=[f"nft -f {CONFIG}"],
                 _if=lambda: config.did_change() or not loaded)
    # Started once (it loads the same file) but never restarted: its ExecStop flushes the
    # whole ruleset, fail2ban's bans included.
    systemd.service(name="nftables at boot", service="nftables", running=True, enabled=True)
