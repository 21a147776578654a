"""The lab's fixed facts: addresses, names, test accounts. One home, read by
inventories/lab.py (for the deploy) and by lab/__main__.py (for .lab/lab.json)."""

import ipaddress

RELEASES = ("bullseye", "bookworm", "trixie")
DEFAULT_RELEASE = "bookworm"

CONTAINER = "email"
BRIDGE = "labbr0"
BRIDGE_ADDRESS = "10.0.3.1"
PREFIXLEN = 24
CONTAINER_ADDRESS = "10.0.3.19"
CONTAINER_HWADDR = "00:16:3e:ca:ce:19"
# The successor an upgrade builds beside CONTAINER (`<CONTAINER>-next`, operations/upgrade.py)
# until its cut-over: its temporary eth0.
SUCCESSOR_ADDRESS = "10.0.3.49"
SUCCESSOR_HWADDR = "00:16:3e:ca:ce:49"
# Secondary addresses of this machine on the bridge: a test connecting from one of them is
# the monitor or the community host; from BRIDGE_ADDRESS it is an untrusted origin.
MONITOR_ADDRESS = "10.0.3.2"
COMMUNITY_ADDRESS = "10.0.3.3"
APT_PROXY_PORT = 3142
# The Debian mirror the containers name (apt-cacher-ng maps it to its backend), as the
# deploy's debian_mirror default.
DEBIAN_MIRROR = "http://deb.debian.org/debian"

DOMAIN = "cacert.test"
HOSTNAMES = {
    "email": "email.cacert.test",
    "community": "community.cacert.test",
    "infra": "email.infra.cacert.test",
    "intra": "email.intra.cacert.test",
}
# Certificate key in the inventory -> the lab name it is issued for.
CERTIFICATE_NAMES = {
    "email": "email.cacert.test",
    "community": "community.cacert.test",
    "selfservice_api": "email.infra.cacert.test",
}

# Host side of the data volume (a loop-mounted image, see operations/lab_host.py) and where
# it appears in the container.
DATA_VOLUME_HOST_PATH = "/srv/cacert-lab/mail"
DATA_VOLUME = "/srv/mail"
MAIL_ROOT = "/home/mailboxes"

ACCOUNTS = [
    {"user": "alice", "email": "alice@cacert.test"},
    {"user": "bob", "email": "bob@cacert.test"},
]
ALIASES = [
    {"alias": "pr@cacert.test", "owner": "alice@cacert.test", "send_as": True},
    {"alias": "postmaster@cacert.test", "owner": "alice@cacert.test", "send_as": False},
]

PORTS = {"smtp": 25, "smtps": 465, "submission": 587, "imap": 143, "imaps": 993,
         "pop3": 110, "pop3s": 995, "sieve": 4190, "http": 80, "https": 443}


def security_mirror(release, mirror):
    """The Debian security mirror of the lab's container on `release`: `mirror`, but None on
    bullseye. This machine's Debian mirror lacks part of bullseye-security's pool
    (dovecot-sieve, -managesieved, -mysql, -pop3d 2.3.13+dfsg1-2+deb11u4 and icinga2
    2.12.3-1+deb11u1 answer 404 while their Packages entries and other packages of the same
    versions are there; measured 2026-11-25), and packages built from one source must share
    one version. So the bullseye lab installs from bullseye and bullseye-updates only, like
    the container's base system (debootstrap takes no security updates). Production keeps
    the security suite."""
    return None if release == "bullseye" else mirror


def bridge_hwaddr(address):
    """The fixed MAC of the lab bridge whose host address is `address` ("10.0.3.1/24"): 02:00
    (locally administered) and the address's four bytes. A Linux bridge without an address of
    its own takes the lowest MAC of its ports and changes it when a container comes or goes;
    the containers' ARP caches then name a MAC that is gone, and connections from the lab
    host's addresses time out for seconds (seen when the legacy and successor containers
    come and go beside `email`)."""
    packed = ipaddress.ip_interface(address).ip.packed
    return "02:00:" + ":".join(f"{byte:02x}" for byte in packed)


# --- further lab containers (`python -m lab container up NAME`, lab/containers.py) -----------
# Bridges besides BRIDGE, made by the first container that needs one: name -> host address.
EXTRA_BRIDGES = {"labbr1": "10.0.4.1/24", "labbr2": "10.0.5.1/24"}

# One description per container: Debian release, NICs (eth0 first, on BRIDGE; its address is
# the one SSH and lab.json use), the gateway, host directories its LXC config mounts, a data
# volume (a loop-mounted image of its own, for the deploy's data_volume_host_path), and the
# LXC config: "generated" from the NICs, or a hand-written file (REPO-relative) that must name
# the same NICs. `role` is what lab.json calls it; `builder` names what fills it after its
# first boot (lab/containers.py BUILDERS), None for a bare Debian; `icinga2_node` the name
# its Icinga2 agent has on the lab master, `icinga2_host` the name of its Host object there
# when it has no agent (passive services only) (lab/icinga_agents.py).
CONTAINERS = {
    "legacy": {
        "release": "bullseye",
        "role": "legacy",
        "nics": [
            {"name": "eth0", "bridge": BRIDGE, "address": "10.0.3.29/24",
             "hwaddr": "00:16:3e:ca:ce:29"},
            {"name": "eth1", "bridge": "labbr1", "address": "10.0.4.19/24",
             "hwaddr": "00:16:3e:ca:ce:a9"},
            {"name": "eth2", "bridge": "labbr2", "address": "10.0.5.19/24",
             "hwaddr": "00:16:3e:ca:ce:b9"},
        ],
        "gateway": BRIDGE_ADDRESS,
        "host_dirs": ["/srv/cacert-lab/legacy-spool"],
        # Never the main container's volume (DATA_VOLUME_HOST_PATH): the first deploy moves
        # the legacy's mail here.
        "data_volume": {"path": "/srv/cacert-lab/legacy-mail",
                        "image": "/var/lib/cacert-lab/legacy-mail.img", "size": "256M"},
        "config": "lab/legacy/lxc.conf",
        "builder": "legacy",
        # Its Icinga2 agent's name on the lab master (the email container's agent has
        # email.infra.cacert.test): lab/icinga_agents.py.
        "icinga2_node": "legacy.infra.cacert.test",
    },
    # The off-host copy's backup host (operations/backup_host.py, inventories/lab_backup.py):
    # a bare Debian the deploy fills; brought up by the test that needs it.
    "backup": {
        "release": "bookworm",
        "role": "backup_host",
        "nics": [
            {"name": "eth0", "bridge": BRIDGE, "address": "10.0.3.39/24",
             "hwaddr": "00:16:3e:ca:ce:39"},
        ],
        "gateway": BRIDGE_ADDRESS,
        "host_dirs": [],
        "config": "generated",
        "builder": None,
        # No agent: its Icinga service is passive, pushed by its copy job (a Host object on
        # the lab master, lab/icinga_agents.py).
        "icinga2_host": "backup.infra.cacert.test",
    },
}
