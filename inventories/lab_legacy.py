"""The lab's legacy server: this machine acts as Infra02 (`@local`) for the container
`legacy`, which is reached over SSH; for adopting it (`python -m operations.adopt
inventories/lab_legacy.py`) and, later, for the first deploy onto it.

Built by `python -m lab container up legacy` (lab/containers.py, lab/legacy); the main lab
(`./lab/up`) must be up. The data: the lab's own (inventories/lab.py: names, keys, lab CA,
apt proxy, DNS) with the legacy's addresses and release, and then, if
`.lab/legacy/adopted.json` exists (what `python -m operations.adopt ... --write` wrote), the
data read from the legacy server on top. The lab's main-container accounts are left out: the
legacy's accounts are in its own database. The lab host preparation (group lab_host) is left
out too: it would point the lab's DNS at this container.
"""
import json
from pathlib import Path

from inventories.lab import shared_data
from inventories.validate import stop_unless_valid
from lab import icinga_agents, topology as t
from operations.secrets import InventoryError

REPO = Path(__file__).resolve().parent.parent
LAB = REPO / ".lab"
ADOPTED = LAB / "legacy" / "adopted.json"
SPEC = t.CONTAINERS["legacy"]
_ETH0 = SPEC["nics"][0]


def _adopted(path):
    """The adopted data in `path` without its "_" keys; {} if there is none."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InventoryError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InventoryError(f"{path}: not a JSON object of inventory data")
    return {key: value for key, value in data.items() if not key.startswith("_")}


def legacy_data(adopted_path=ADOPTED):
    """The data of both groups: lab defaults for the legacy container, adopted data on top."""
    data = shared_data()
    data.update({
        "debian_release": SPEC["release"],
        "debian_security_mirror": t.security_mirror(SPEC["release"],
                                                    data["debian_security_mirror"]),
        "container_name": "legacy",
        "container_net": {"link": _ETH0["bridge"], "hwaddr": _ETH0["hwaddr"],
                          "ipv4": _ETH0["address"], "ipv4_gateway": SPEC["gateway"],
                          "ipv6": None, "ipv6_gateway": None},
        # Its own loop-mounted image (`lab container up legacy`), never the main container's
        # volume; the legacy keeps its mail in its rootfs until a migration moves it there.
        "data_volume_host_path": SPEC["data_volume"]["path"],
        "mail_accounts": [],
        "mail_aliases": [],
        # Its own agent on the lab master (the email container's is email.infra.cacert.test);
        # `lab container up legacy` makes the ticket and the master's objects.
        "icinga2_node_name": SPEC["icinga2_node"],
        "icinga2_ticket_secret": icinga_agents.ticket_secret("legacy"),
    })
    data.update(_adopted(adopted_path))
    return data


_DATA = legacy_data()
infra02 = [("@local", dict(_DATA))]
email = [
    (t.HOSTNAMES["email"], {
        **_DATA,
        "ssh_hostname": str(_ETH0["address"]).split("/")[0],
        "ssh_user": "root",
        "ssh_key": str(LAB / "id_ed25519"),
        # `lab container up legacy` writes the container's host keys here, read from its rootfs.
        "ssh_known_hosts_file": str(LAB / "known_hosts-legacy"),
        "ssh_strict_host_key_checking": "yes",
    }),
]
stop_unless_valid(infra02=infra02, email=email)
