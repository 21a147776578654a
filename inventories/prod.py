"""Production: the LXC host Infra02 and the container email.cacert.org on it.

    export CACERT_EMAIL_SECRETS=/path/outside/the/repository
    pyinfra inventories/prod.py deploy.py --limit infra02     # the container
    pyinfra inventories/prod.py deploy.py --dry --diff        # what would change

Facts from CAcert's infrastructure documentation ("Email", see docs/architecture.md). No secret
lives here: the secrets directory ($CACERT_EMAIL_SECRETS) holds ca.pem, <pair>.chain.pem and
<pair>.key.pem for each pair of `certificates`, mysql_postfix.password and
mysql_dovecot.password, backup.key, icinga2_api.password and icinga2-agent.ticket, and for the
backup host icinga2_api_backup_copy.password. Everything
is validated when this file is loaded, before any host is touched (inventories/validate.py):
the run stops with a list of what is missing or wrong, one line each.

SSH: both hosts are reached under these names; put the admins' jump host, user and key in
~/.ssh/config (pyinfra's paramiko connector reads it).
"""
from inventories.validate import stop_unless_valid

# Addresses of the container: eth0 (public, MAC 00:ff:8f:e0:4a:90 on Infra02's bridge br0),
# eth1 (intranet, email.intra.cacert.org 172.16.2.19) and eth2 (internal,
# email.infra.cacert.org 10.0.0.19: Icinga and the self-service API). The bridges, MACs and
# prefix lengths of eth1 and eth2 are not documented: the PLACEHOLDER values below stop every
# run until they are copied from the live config (/var/lib/lxc/email/config on Infra02,
# lxc.net.1.* and lxc.net.2.*; an hwaddr the live config lacks is None). The deploy keeps
# every other line of that config (inventories/group_data/all.py, container_extra_nets).
EMAIL = {
    "debian_release": "bullseye",   # Debian 11 today; bookworm and trixie are served too
    "container_name": "email",
    "container_net": {
        "link": "br0",
        "hwaddr": "00:ff:8f:e0:4a:90",
        "ipv4": "213.154.225.228/24",
        "ipv4_gateway": None,
        "ipv6": "2001:7b8:616:162:2::228/64",
        "ipv6_gateway": None,
    },
    # python -m operations.upgrade: the successor container's eth0 until the cut-over hands
    # it eth0's MAC and addresses. Choose a free MAC and address on br0; only an upgrade
    # reads it (and stops while it is PLACEHOLDER).
    "successor_net": {
        "link": "br0",
        "hwaddr": "PLACEHOLDER-successor-mac",
        "ipv4": "PLACEHOLDER-successor-address/24",
        "ipv4_gateway": None,
        "ipv6": None,
        "ipv6_gateway": None,
    },
    "container_extra_nets": [
        {"name": "eth1", "link": "PLACEHOLDER-intranet-bridge", "hwaddr": "PLACEHOLDER-eth1-mac",
         "ipv4": "172.16.2.19/PLACEHOLDER-prefix-length", "ipv4_gateway": None,
         "ipv6": None, "ipv6_gateway": None},
        {"name": "eth2", "link": "PLACEHOLDER-internal-bridge", "hwaddr": "PLACEHOLDER-eth2-mac",
         "ipv4": "10.0.0.19/PLACEHOLDER-prefix-length", "ipv4_gateway": None,
         "ipv6": None, "ipv6_gateway": None},
    ],
    "mail_domain": "cacert.org",
    "hostnames": {
        "email": "email.cacert.org",
        "community": "community.cacert.org",
        "infra": "email.infra.cacert.org",
        "intra": "email.intra.cacert.org",
    },
    # Who may reach which port: everything public except MariaDB (local), Icinga2 (the
    # monitor) and the self-service API (the community host).
    "ports": {
        "ssh": {"port": 22, "from": "any"},
        "smtp": {"port": 25, "from": "any"},
        "http": {"port": 80, "from": "any"},
        "pop3": {"port": 110, "from": "any"},
        "imap": {"port": 143, "from": "any"},
        "https": {"port": 443, "from": "any"},
        "smtps": {"port": 465, "from": "any"},
        "submission": {"port": 587, "from": "any"},
        "imaps": {"port": 993, "from": "any"},
        "pop3s": {"port": 995, "from": "any"},
        "sieve": {"port": 4190, "from": "any"},
        "mariadb": {"port": 3306, "from": "local"},
        "icinga2": {"port": 5665, "from": "monitor"},
        "selfservice_api": {"port": 9443, "from": "community"},
    },
    "certificates": {
        # SMTP from the Internet, and Postfix's client certificate.
        "email": {
            "cert": "/etc/ssl/public/email.cacert.org.chain.pem",
            "key": "/etc/ssl/private/email.cacert.org.key.pem",
            "names": ["email.cacert.org"],
            "services": ["postfix"],
        },
        # What users connect to: SMTPS, submission, IMAP(S), POP3(S), sieve, the web.
        "community": {
            "cert": "/etc/ssl/public/community.cacert.org.chain.pem",
            "key": "/etc/ssl/private/community.cacert.org.key.pem",
            "names": ["community.cacert.org"],
            "services": ["postfix", "dovecot", "nginx"],
        },
        # The self-service API, internal name.
        "selfservice_api": {
            "cert": "/etc/cacert-selfservice-api/certs/server.crt.pem",
            "key": "/etc/cacert-selfservice-api/private/server.key.pem",
            "names": ["email.infra.cacert.org"],
            "services": ["cacert-selfservice-api"],
        },
    },
    "mail_root": "/home/mailboxes",
    "mysql_database": "cacertusers",
    "transports": {
        "lists.cacert.org": "smtp:[lists.cacert.org]",
        "issue.cacert.org": "smtp:[issue.cacert.org]",
    },
}

# The off-host copy (operations/backup_host.py, README "Off-host copy"): the backup host pulls
# the repository every night with a key forced to a read-only rsync. PLACEHOLDERs: the
# backup host's address; its pull key (made by its first deploy:
# /var/lib/mailstore-copies/.ssh/id_ed25519.pub); the mail server's SSH host keys.
BACKUP_HOST_ADDRESS = "PLACEHOLDER-backup-host-address"
EMAIL_PULL = {
    "backup_pull_keys": ["PLACEHOLDER-backup-host-pull-key"],
    "backup_pull_from": [BACKUP_HOST_ADDRESS],
}
BACKUP_HOST = {
    "ssh_hostname": BACKUP_HOST_ADDRESS,
    "debian_release": "bookworm",
    "backup_copy_source": "email.cacert.org",
    "backup_copy_source_host_keys": ["ssh-ed25519 PLACEHOLDER-email-ssh-host-key"],
    "backup_copy_dir": "/srv/mailstore-copies",
    "backup_copy_schedule": "30 5 * * *",
    "backup_copy_keep": 30,
    # Its Icinga service mailstore-backup-copy (README "Off-host copy"): the master's admins
    # define the Host object and an API user for this host (the secret file
    # icinga2_api_backup_copy.password holds its password); PLACEHOLDERs: that Host's name,
    # the master's API address, the name its certificate carries, its CA (PEM, in the
    # repository).
    "backup_copy_icinga": {
        "host": "PLACEHOLDER-backup-host-icinga-name",
        "url": "https://PLACEHOLDER-icinga-master-address:5665",
        "tls_name": "PLACEHOLDER-icinga-master-node-name",
        "ca": "PLACEHOLDER-icinga-ca.pem",
        "user": "mailstore-backup-copy",
        "password_secret": "icinga2_api_backup_copy.password",
    },
}

infra02 = [("infra02", dict(EMAIL))]
email = [("email.cacert.org", {**EMAIL, **EMAIL_PULL})]
backup_host = [("backup.cacert.org", dict(BACKUP_HOST))]
# Stops here, listing every problem, unless every host's data and the secrets are usable.
stop_unless_valid(production=True, infra02=infra02, email=email, backup_host=backup_host)
