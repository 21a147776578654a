"""The lab: this machine acts as Infra02 (`@local`), the container `email` is reached over SSH.

Built by `./lab/up` (lab/__main__.py), which first generates `.lab/` (SSH key, CA,
certificates, secrets) and writes `.lab/release`. Addresses and names: lab/topology.py.
"""
import copy
import os
from pathlib import Path

from operations.defaults import defaults
from operations.secrets import InventoryError
from inventories.validate import stop_unless_valid
from lab import topology as t

REPO = Path(__file__).resolve().parent.parent
LAB = REPO / ".lab"
# The secrets the lab generated, unless the caller names other ones.
os.environ.setdefault("CACERT_EMAIL_SECRETS", str(LAB / "secrets"))


def _release():
    """The release `lab up --release` chose (written to .lab/release), bookworm by default."""
    if os.environ.get("CACERT_LAB_RELEASE"):
        return os.environ["CACERT_LAB_RELEASE"]
    path = LAB / "release"
    return path.read_text().strip() if path.is_file() else t.DEFAULT_RELEASE


def _deploy_public_key():
    path = LAB / "id_ed25519.pub"
    if not path.is_file():
        raise InventoryError(f"{path} is missing: run ./lab/up (it generates the lab's SSH key)")
    return path.read_text().strip()


def _certificates():
    """Production paths, lab names."""
    certs = copy.deepcopy(defaults()["certificates"])
    for key, name in t.CERTIFICATE_NAMES.items():
        certs[key]["names"] = [name]
    return certs


_SHARED = {
    "debian_release": _release(),
    "debian_security_mirror": t.security_mirror(_release(),
                                                defaults()["debian_security_mirror"]),
    "apt_proxy": f"http://{t.BRIDGE_ADDRESS}:{t.APT_PROXY_PORT}",
    "container_name": t.CONTAINER,
    "container_net": {
        "link": t.BRIDGE,
        "hwaddr": t.CONTAINER_HWADDR,
        "ipv4": f"{t.CONTAINER_ADDRESS}/{t.PREFIXLEN}",
        "ipv4_gateway": t.BRIDGE_ADDRESS,
        "ipv6": None,
        "ipv6_gateway": None,
    },
    # python -m operations.upgrade: the successor's eth0 until the cut-over.
    "successor_net": {
        "link": t.BRIDGE,
        "hwaddr": t.SUCCESSOR_HWADDR,
        "ipv4": f"{t.SUCCESSOR_ADDRESS}/{t.PREFIXLEN}",
        "ipv4_gateway": t.BRIDGE_ADDRESS,
        "ipv6": None,
        "ipv6_gateway": None,
    },
    "container_nameservers": [t.BRIDGE_ADDRESS],
    # lab_host.prepare() loop-mounts the lab's data volume image here.
    "data_volume_host_path": t.DATA_VOLUME_HOST_PATH,
    "data_volume": t.DATA_VOLUME,
    "root_authorized_keys": [_deploy_public_key()],
    "mail_domain": t.DOMAIN,
    "hostnames": dict(t.HOSTNAMES),
    # Secondary addresses of this machine on the bridge: connect from them to act as the
    # monitor or the community host; the bridge address itself is an untrusted origin.
    "trusted_hosts": {"monitor": [t.MONITOR_ADDRESS], "community": [t.COMMUNITY_ADDRESS]},
    # The lab host runs the deploy and tests that fail logins on purpose: never banned. The
    # fail2ban lab test attacks from a network namespace address instead.
    "fail2ban_ignore": [t.BRIDGE_ADDRESS],
    "certificates": _certificates(),
    # The lab's Icinga2 master on the bridge address (operations/lab_icinga_master.py).
    "icinga2_node_name": "email.infra.cacert.test",
    "icinga2_parent_endpoints": [
        {"name": "master.cacert.test", "host": t.BRIDGE_ADDRESS, "port": 5665},
    ],
    # `mailstore icinga register|push` verify the lab master's API against its own CA.
    "icinga2_api_ca": ".lab/icinga2-master/lib/ca/ca.crt",
    # Tests wait for the agent's results: check often.
    "monitoring_check_interval": 30,
    # The lab's signed apt repository with a stand-in package (operations/lab_selfservice_repo.py)
    # and the lab CA, which signs the test clients' certificates.
    "selfservice_api_repo": {
        "url": f"http://{t.BRIDGE_ADDRESS}:8080/",
        "suite": "lab",
        "components": ["main"],
        "key": ".lab/selfservice-repo/public/archive-key.asc",
        "direct": True,
    },
    "selfservice_api_client_ca": ".lab/ca.pem",
    # The lab CA's CRLs, served beside that repository (operations/crl.py lab_published()).
    "crl_urls": [f"http://{t.BRIDGE_ADDRESS}:8080/crl/root.crl",
                 f"http://{t.BRIDGE_ADDRESS}:8080/crl/intermediate.crl"],
    "crl_issuers": [".lab/ca/root.pem", ".lab/ca/intermediate.pem"],
    # A sink on the lab host (tests may listen there) stands in for the Lists and Issue hosts.
    "transports": {
        "lists.cacert.test": f"smtp:[{t.BRIDGE_ADDRESS}]:2525",
        "issue.cacert.test": f"smtp:[{t.BRIDGE_ADDRESS}]:2525",
    },
    # `python -m operations.status`: the lab's resolver and CA; the lab's dnsmasq publishes A,
    # MX and DKIM only (operations/lab_host.py).
    "status_nameserver": t.BRIDGE_ADDRESS,
    "status_ca": ".lab/ca.pem",
    "status_dns_unpublished": ["SSHFP", "SPF", "TLSRPT"],
    # The upgrade's lab test (tests/lab/test_upgrade_cutover.py) puts the mail on the data
    # volume, as production's is before an upgrade.
    "mail_root": os.environ.get("CACERT_LAB_MAIL_ROOT") or t.MAIL_ROOT,
    "mail_accounts": copy.deepcopy(t.ACCOUNTS),
    "mail_aliases": copy.deepcopy(t.ALIASES),
}



def shared_data():
    """A copy of the data every lab host shares (inventories/lab_legacy.py starts from it)."""
    return copy.deepcopy(_SHARED)


def backup_pull(path=LAB / "backup" / "pull_key.pub"):
    """The email container's data for the lab's backup host (inventories/lab_backup.py): its
    pull key, once its deploy made it and the off-host copy's lab test copied it here; {}
    before (no off-host copy)."""
    if not path.is_file():
        return {}
    address = t.CONTAINERS["backup"]["nics"][0]["address"].split("/")[0]
    return {"backup_pull_keys": [path.read_text().strip()], "backup_pull_from": [address]}


infra02 = [("@local", dict(_SHARED))]
# Only the lab's Infra02 gets the lab host preparation (bridge, apt proxy, DNS, loop volume).
lab_host = ["@local"]
email = [
    (t.HOSTNAMES["email"], {
        **_SHARED,
        "ssh_hostname": t.CONTAINER_ADDRESS,
        "ssh_user": "root",
        "ssh_key": str(LAB / "id_ed25519"),
        # lab up writes the container's host keys here, read from its rootfs on this host.
        "ssh_known_hosts_file": str(LAB / "known_hosts"),
        "ssh_strict_host_key_checking": "yes",
        **backup_pull(),
    }),
]
stop_unless_valid(infra02=infra02, email=email)
