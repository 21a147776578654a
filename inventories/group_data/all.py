"""Every inventory datum, with its default and what it means.

pyinfra loads this for every host; inventories/prod.py and inventories/lab.py override per
host. inventories/validate.py checks the merged data (and reads the secrets) on the control
machine before any host is touched. Add a datum here, with a one-line comment, or nowhere.
"""

# --- the container on Infra02 ------------------------------------------------------------
# Debian release of the email container: bookworm (default), bullseye or trixie.
debian_release = "bookworm"
# Debian mirror the container's apt talks to (through apt_proxy when that is set).
debian_mirror = "http://deb.debian.org/debian"
# Debian security mirror (suite <release>-security) for the container's sources.list; None
# leaves that suite out (only the bullseye lab does: see inventories/lab.py).
debian_security_mirror = "http://deb.debian.org/debian-security"
# http://host:port of an apt proxy the container must use, or None for direct access.
apt_proxy = None
# LXC container name on Infra02.
container_name = "email"
# eth0 of the container: MAC, bridge on the host, addresses (CIDR) and gateways.
container_net = {
    "link": "br0",
    "hwaddr": "00:ff:8f:e0:4a:90",
    "ipv4": "213.154.225.228/24",
    "ipv4_gateway": None,
    "ipv6": "2001:7b8:616:162:2::228/64",
    "ipv6_gateway": None,
}
# NICs besides eth0, in the container_net shape plus "name" (eth1, eth2 ...; hwaddr None: a
# random MAC at each start): [{"name": "eth1", "link": "br-intra", "hwaddr": "aa:bb:..",
# "ipv4": "172.16.2.19/24", "ipv4_gateway": None, "ipv6": None, "ipv6_gateway": None}].
container_extra_nets = []
# Mounts besides the data volume, one lxc.mount.entry each (target: a path in the container):
# [{"source": "/srv/backup", "target": "srv/backup", "type": "none",
#   "options": "bind,create=dir"}].
container_mounts = []
# DNS servers written to the container's /etc/resolv.conf; empty leaves that file alone.
container_nameservers = []
# Start the container when Infra02 boots.
container_autostart = True
# Set only in a successor's inventory (python -m operations.upgrade derives it): the name of
# the container it replaces, which owns the data volume until the cut-over; the successor
# leaves the owner marker alone and does not start Dovecot (operations/volume_owner.py).
successor_of = None
# eth0 of the successor an upgrade builds beside the serving container (container_net's
# shape): a temporary MAC and address of its own until the cut-over hands over eth0's.
successor_net = None
# Set only in a rebuild rehearsal's inventory (python -m operations.rebuild --rehearse derives
# it): the container whose backups the scratch container `<name>-rehearsal` restores. Its
# data directory is a scratch directory (no mount needed) and its Icinga agent stays stopped.
rehearsal_of = None
# Mount the data volume read-only (a successor before its cut-over).
data_volume_read_only = False
# Host directory holding the mail data volume (a separate filesystem), and where it appears
# inside the container.
data_volume_host_path = "/srv/email-data"
data_volume = "/srv/mail"
# Public SSH keys allowed to log in as root to the container (the deploy's own key first);
# never empty (validated): an empty list would lock every later deploy out of the container.
root_authorized_keys = []

# --- names ---------------------------------------------------------------------------------
# The mail domain served by this host.
mail_domain = "cacert.org"
# Host names by role: email (MX, SMTP from the Internet), community (users: IMAP, POP3,
# submission, web), infra (self-service API, internal), intra (intranet).
hostnames = {
    "email": "email.cacert.org",
    "community": "community.cacert.org",
    "infra": "email.infra.cacert.org",
    "intra": "email.intra.cacert.org",
}

# --- ports and who may reach them -----------------------------------------------------------
# Origins: "any", "local" (loopback only), or a name in `trusted_hosts`.
ports = {
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
}
# Addresses of the hosts named as origins above (production: none may be empty for a port
# that names it).
trusted_hosts = {
    "monitor": [],
    "community": [],
}
# Addresses fail2ban never bans, besides loopback and every trusted host (e.g. the operators'
# jump host).
fail2ban_ignore = []

# --- certificates --------------------------------------------------------------------------
# Each pair: where it goes on the server, the names it must cover, the services that reload
# when it changes. The files come from the secrets directory: <name>.chain.pem, <name>.key.pem.
certificates = {
    "email": {
        "cert": "/etc/ssl/public/email.cacert.org.chain.pem",
        "key": "/etc/ssl/private/email.cacert.org.key.pem",
        "names": ["email.cacert.org"],
        "services": ["postfix"],
    },
    "community": {
        "cert": "/etc/ssl/public/community.cacert.org.chain.pem",
        "key": "/etc/ssl/private/community.cacert.org.key.pem",
        "names": ["community.cacert.org"],
        "services": ["postfix", "dovecot", "nginx"],
    },
    "selfservice_api": {
        "cert": "/etc/cacert-selfservice-api/certs/server.crt.pem",
        "key": "/etc/cacert-selfservice-api/private/server.key.pem",
        "names": ["email.infra.cacert.org"],
        "services": ["cacert-selfservice-api"],
        # The API runs as this user, not root; selfservice_api.account() creates the group.
        "key_group": "cacert-selfservice-api",
    },
}
# Warn (and fail the validation with --strict... see validate.py) when a certificate expires
# within this many days.
certificate_warn_days = 30

# --- mail --------------------------------------------------------------------------------
# Where the Maildirs live: <mail_root>/<user>/Maildir. Today /home/mailboxes; the migration
# (README) moves them to data_volume and switches this.
mail_root = "/home/mailboxes"
# Where the Maildirs were before: while it differs from mail_root and still holds users not
# yet moved, the deploy moves them to mail_root first (operations/migration.py, README
# "Moving mail to the data volume").
mail_root_previous = "/home/mailboxes"
# Accounts and aliases seeded into the database by the deploy (lab only; in production the
# self-service API manages them): [{"user": "alice", "email": "alice@cacert.test"}, ...] and
# [{"alias": "pr@...", "owner": "alice@...", "send_as": True}, ...]. Passwords come from the
# secrets directory: accounts/<email>.password.
mail_accounts = []
mail_aliases = []
# MariaDB database holding users and aliases.
mysql_database = "cacertusers"
# Route these domains to other hosts (Postfix transport map): domain -> nexthop.
transports = {
    "lists.cacert.org": "smtp:[lists.cacert.org]",
    "issue.cacert.org": "smtp:[issue.cacert.org]",
}
# Optional relay for all outgoing mail (e.g. "[emailout.cacert.org]"), or None to deliver
# directly.
relayhost = None
# /etc/aliases (local part -> target) besides the mail_aliases with send_as False, which are
# added to it. Production: copy the live /etc/aliases here before the first deploy.
etc_aliases = {"mailer-daemon": "postmaster", "abuse": "postmaster", "root": "postmaster"}
# /etc/postfix/arbitration, a regexp recipient rewrite: [{"match": POSIX regexp on the full
# address, "to": address}], e.g. to support+deletedaccounts@cacert.org or support@issue....
arbitration_rewrites = []
# /etc/postfix/cacert-inc-bcc (recipient_bcc_maps): recipient address -> address that gets a copy.
recipient_bcc = {}
# Separator of address extensions: alice+lists@ is delivered to alice.
recipient_delimiter = "+"
# Networks that may send through this host without logging in (everyone else must authenticate).
mynetworks = ["127.0.0.0/8", "[::1]/128"]
# Extra main.cf parameters (name -> value), written after the generated ones (local tuning).
postfix_main_cf_extra = {}
# Every RCPT deferred with 450, soft_bounce on, local delivery queued: set only by
# `python -m operations.rebuild` while the database and mail are restored (and left on in
# its rehearsal's scratch container). A deploy without it ends the hold.
postfix_inbound_hold = False
# Owner of every Maildir; Dovecot's LMTP, IMAP and POP3 access mail as this user.
vmail_user = "vmail"
# Its uid/gid, fixed so that restored or migrated mail keeps a stable numeric owner.
vmail_uid = 5000
# Dovecot 2.4 (trixie) only: verify password hashes of weak schemes ({MD5-CRYPT}, {PLAIN-MD5},
# DES/MD5 {CRYPT}...; auth_allow_weak_schemes). True by default so that moving a live server to
# trixie locks nobody out: each such hash is replaced by {BLF-CRYPT} at the user's next
# IMAP/POP3 login. Set False once `mailstore account list --weak` lists nobody (or only
# accounts you accept to lock out). Dovecot 2.3 (bullseye, bookworm) verifies them always.
dovecot_allow_weak_schemes = True

# --- self-service API (operations/selfservice_api.py) ----------------------------------------
# CAcert's apt repository that ships cacert-selfservice-api (deb822 fields). `key` is the
# repository's ASCII-armoured public signing key, a path relative to the repository root (or
# absolute), installed as /etc/apt/keyrings/cacert-selfservice-api.asc (`Signed-By`); `suite`
# None means the container's debian_release; `direct` makes apt bypass apt_proxy for this host.
# PLACEHOLDER values: fill in the real URL and key before the first production run (the
# production inventory's validation refuses any value containing "PLACEHOLDER").
selfservice_api_repo = {
    "url": "https://PLACEHOLDER-cacert-apt-repository.invalid/debian",
    "suite": None,
    "components": ["main"],
    "key": "files/selfservice_api/PLACEHOLDER-cacert-apt-signing-key.asc",
    "direct": False,
}
# Address the API listens on (port: ports["selfservice_api"]; nftables admits only the
# community host).
selfservice_api_listen = "0.0.0.0"
# CA certificate(s) (PEM, path relative to the repository root) whose client certificates may
# call the API; installed as /etc/cacert-selfservice-api/certs/client-ca.pem. PLACEHOLDER: the
# CAcert class 3 root/intermediate that signs the community host's client certificate.
selfservice_api_client_ca = "files/selfservice_api/PLACEHOLDER-cacert-client-ca.pem"
# CRL file on the server checked against client certificates (kept fresh by the CRL job; the
# API skips the check while the file does not exist yet).
selfservice_api_crl = "/var/lib/cacert-crl/cacert-class3.crl.pem"

# --- Icinga2 agent (operations/icinga2_agent.py) ----------------------------------------------
# This agent's endpoint and zone name: the CN of its Icinga certificate, as the master knows it.
icinga2_node_name = "email.infra.cacert.org"
# The parent zone (the master or a satellite) and its endpoints; with a `host`, the agent
# also connects out to it (then the master need not reach port 5665 here).
icinga2_parent_zone = "master"
icinga2_parent_endpoints = [
    {"name": "monitor.cacert.org", "host": "monitor.infra.cacert.org", "port": 5665},
]
# Global zones the parent syncs (templates and the CheckCommands `mailstore icinga register`
# creates there).
icinga2_global_zones = ["global-templates"]
# Accept config synced from the parent: needed for CheckCommands that are not in the ITL.
icinga2_accept_config = True
# Secret file (in the secrets directory) holding this agent's PKI ticket, made on the master
# with `icinga2 pki ticket --cn <icinga2_node_name>`; read only until the agent is signed.
icinga2_ticket_secret = "icinga2-agent.ticket"

# --- backups (mailstore backup; the nightly job and its checks) -----------------------------
# Repository of the nightly backup on the server, and its key file (0600, root; keep a copy
# elsewhere: without it nothing can be restored).
# Production: point backup_repository at a separate disk or mount, not the mail's volume.
backup_repository = "/srv/backup/mailstore"
backup_key_file = "/etc/mailstore/backup.key"
# Encrypt the repository (AES-256-GCM) with the key in this secret file (in the secrets
# directory; 64 hex digits, `openssl rand -hex 32`), installed as backup_key_file.
backup_encrypt = True
backup_key_secret = "backup.key"
# When the nightly job starts: the five time fields of a cron line (container's local time).
backup_schedule = "30 2 * * *"
# ISO weekday (1 Monday .. 7 Sunday) on which the job also re-reads and re-hashes this
# fraction of the stored objects (verify --read-data --sample).
backup_verify_weekday = 7
backup_verify_sample = 0.1
# Snapshots prune keeps: the newest of each of the last N days, ISO weeks and months.
backup_keep = {"daily": 7, "weekly": 5, "monthly": 12}
# Config paths added to every snapshot, and whether to add a dump of mysql_database: with the
# deploy, enough to rebuild the server. The keys a rebuild cannot make again (SSH host keys,
# DKIM, the Icinga agent's certificate, the self-service API's config) are always added
# (operations/backup.py REBUILD_MATERIAL); a path holding backup_key_file is refused.
backup_include = ["/etc/postfix", "/etc/dovecot", "/etc/aliases"]
backup_mysql_dump = True

# --- the off-host copy (operations/backup_host.py): a backup host pulls the repository ------
# On the mail server: the backup host's pull key(s) (the .pub its deploy made,
# /var/lib/mailstore-copies/.ssh/id_ed25519.pub, as one 'TYPE BASE64 COMMENT' line each) and
# the addresses it connects from. Empty: no off-host copy, nothing is installed for it.
backup_pull_keys = []
backup_pull_from = []
# On the backup host (group backup_host): the mail server it copies from (host name or
# address), that server's SSH host keys ('TYPE BASE64' lines, e.g. from ssh-keyscan, checked
# against the server's own /etc/ssh/ssh_host_*_key.pub), where the nightly copies go, when the
# job starts (cron's five time fields, the backup host's local time: after backup_schedule's
# job has ended), and how many nightly copies are kept (unchanged files are hard links: a
# copy costs only what was new that night).
backup_copy_source = None
backup_copy_source_host_keys = []
backup_copy_dir = "/srv/mailstore-copies"
backup_copy_schedule = "30 5 * * *"
backup_copy_keep = 30
# The off-host copy in Icinga: after each night (copy and verify done or failed) the job pushes
# `mailstore check backup-copy` as the passive service mailstore-backup-copy (the copy's age,
# its last verify, the copies kept; CRITICAL also when no result came for 26 h) of a Host
# object on the master, registered there from the backup host with an API user of its own.
# None: not monitored. Else a dict: "host" (the Host object's name on the master, defined
# there as the mail server's is), "url" (https://master:5665, its API), "tls_name" (the name
# its certificate carries, when not the URL's host; None: the URL's), "ca" (that
# certificate's CA, PEM, path relative to the repository root), "user" (the API user;
# permissions: README, "Off-host copy") and "password_secret" (the secret file holding its
# password).
backup_copy_icinga = None
# Pushed right after the job: the last copy must be minutes old, so a night whose copy failed
# (the last copy is then a day old) turns CRITICAL at once (seconds since the copy ended).
backup_copy_age_warning = 4 * 3600
backup_copy_age_critical = 6 * 3600

# --- monitoring: the mailstore checks on the master (operations/monitoring.py) --------------
# The master's Icinga2 API, for `mailstore icinga register|push` on this server; None:
# https://<host>:<port> of the first icinga2_parent_endpoints entry that has a host.
icinga2_api_url = None
# The name the API's certificate carries (Icinga: the master's node name), when it is not the
# URL's host; None with icinga2_api_url None: that endpoint's `name`.
icinga2_api_tls_name = None
# CA of the API's certificate (PEM, path relative to the repository root); None: the Icinga
# CA that signed this agent (/var/lib/icinga2/certs/ca.crt).
icinga2_api_ca = None
# API user for registration and pushes (permissions it needs: README, "Monitoring"), and the
# secret file (in the secrets directory) holding its password.
icinga2_api_user = "mailstore"
icinga2_api_password_secret = "icinga2_api.password"
# Seconds between two runs of each active mailstore check (retries: a fifth of it).
monitoring_check_interval = 300
# Extra arguments (thresholds) per check service, e.g. {"mailstore-volume": ["-w", "15:"]};
# the services: mailstore-volume, -maildir, -mailq, -backup-repository, -cert-<pair>.
monitoring_check_args = {}

# --- DKIM signing (operations/dkim.py) --------------------------------------------------------
# OpenDKIM signs mail for mail_domain submitted by logged-in users (submission/smtps) and mail
# sent from the host itself; Postfix hands it every message as a milter (main.cf).
dkim_signing = True
# The DKIM selector: <selector>._domainkey.<mail_domain> carries the public key. The key is
# made once on the server, /etc/opendkim/keys/<mail_domain>/<selector>.private; to rotate, set
# a new selector (a new key is made, the old one stays for the DNS report until removed).
dkim_selector = "202611"
# TCP port on 127.0.0.1 where OpenDKIM listens for Postfix (a TCP socket: smtpd is chrooted).
dkim_milter_port = 8891

# --- CRL refresh (operations/crl.py) ------------------------------------------------------------
# CRLs (DER or PEM) fetched by the refresh timer and bundled into selfservice_api_crl:
# CAcert's root CRL and class 3 CRL.
crl_urls = ["http://crl.cacert.org/revoke.crl", "http://crl.cacert.org/class3-revoke.crl"]
# PEM files (paths relative to the repository) with the CA certificates that may sign those
# CRLs; a CRL not signed by one of them is refused. Empty: selfservice_api_client_ca.
crl_issuers = []
# When the refresh runs (systemd OnCalendar expression), plus a random delay of up to 10 min.
crl_schedule = "hourly"
# systemd services restarted after a refresh changed the bundle (they read it only at start).
crl_consumers = ["cacert-selfservice-api"]

# --- status checks from the control machine (python -m operations.status) -------------------
# Address of this machine to connect from (e.g. a trusted host's, to see its ports answer);
# None: whatever the route gives. The --source option overrides it.
status_source = None
# Resolver to ask for the published DNS records; None: the control machine's own resolvers.
status_nameserver = None
# CA (PEM, path relative to the repository root) the served certificates must chain to;
# None: the control machine's system trust store.
status_ca = None
# Kinds of DNS record (A, AAAA, MX, SSHFP, DKIM, SPF, DMARC, MTA-STS, TLSRPT) this
# environment's zone does not carry: reported as SKIP instead of checked. Production: none.
status_dns_unpublished = []
# The newest complete backup snapshot may be this many seconds old (a nightly job, plus
# two hours of slack); older is a FAIL.
status_backup_max_age = 26 * 3600
