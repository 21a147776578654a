"""Fill the lab's `legacy` container the way the Puppet era left the live server.

Called by lab/containers.py once the container runs and answers SSH. Everything it puts
there is hand-written under lab/legacy/rootfs (never the deploy's files/ templates); what
must be made per lab is made here:
- the accounts' clear passwords (once, `.lab/legacy/accounts.json`, 0600) and their hashes
  ({SHA512-CRYPT} / {MD5-CRYPT}, by `openssl passwd` reading the password on stdin);
- TLS certificates for email.cacert.test and community.cacert.test, issued by the lab CA
  (lab/ca.py) into `.lab/legacy/tls/`, installed at the legacy's own paths.
Then, over SSH: the packages (through the lab's apt proxy), the files (one tar stream on
stdin: no secret on a command line), and build.sh, which makes the database, the service
accounts with passwords of the legacy's own (kept only in its configs), the Maildirs and
restarts the services. build.sh leaves /root/.cacert-lab-legacy-built; with that marker
the container is built and is left alone: after that it belongs to whatever adopts it.
"""
import io
import json
import secrets
import shutil
import subprocess
import tarfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from lab import ca

HERE = Path(__file__).resolve().parent
FILES = HERE / "rootfs"
BUILT_MARKER = "root/.cacert-lab-legacy-built"
DOMAIN = "cacert.test"
PACKAGES = ["postfix", "postfix-mysql", "dovecot-imapd", "dovecot-pop3d", "dovecot-lmtpd",
            "dovecot-mysql", "dovecot-sieve", "dovecot-managesieved", "mariadb-server"]
# (user, password scheme, active, real name): the Puppet era's mix of hash schemes.
ACCOUNTS = [("alice", "SHA512-CRYPT", True, "Alice Legacy"),
            ("bob", "MD5-CRYPT", True, "Bob Legacy"),
            ("carol", "SHA512-CRYPT", True, None),
            ("dave", "MD5-CRYPT", False, "Dave Deactivated")]
ALIASES = [
    {"alias": "pr@cacert.test", "owner": "alice@cacert.test", "send_as": True, "kind": "db"},
    {"alias": "info@cacert.test", "owner": "bob@cacert.test", "send_as": False, "kind": "db"},
    {"alias": "postmaster", "owner": "alice@cacert.test", "kind": "etc_aliases"},
    {"alias": "webmaster", "owner": "bob@cacert.test", "kind": "etc_aliases"},
    {"alias": "abuse", "owner": "postmaster", "kind": "etc_aliases"},
    {"alias": "root", "owner": "postmaster", "kind": "etc_aliases"},
    {"alias": "mailer-daemon", "owner": "postmaster", "kind": "etc_aliases"},
]
CERTIFICATES = ("email.cacert.test", "community.cacert.test")
_OPENSSL_SCHEME = {"SHA512-CRYPT": "-6", "MD5-CRYPT": "-1"}


class BuildError(Exception):
    """The legacy container could not be filled; the message says which step."""


def _private(path, content):
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(content)


def accounts(lab_dir):
    """The legacy accounts with their clear passwords, made once; (accounts, fresh)."""
    path = lab_dir / "legacy" / "accounts.json"
    if path.is_file():
        return json.loads(path.read_text()), False
    made = [{"user": user, "email": f"{user}@{DOMAIN}", "password": secrets.token_urlsafe(15),
             "scheme": scheme, "active": active, "realname": realname}
            for user, scheme, active, realname in ACCOUNTS]
    _private(path, json.dumps(made, indent=2) + "\n")
    return made, True


def password_hash(password, scheme):
    """"{SCHEME}$..." as Dovecot reads it; the password goes to openssl on stdin."""
    result = subprocess.run(["openssl", "passwd", _OPENSSL_SCHEME[scheme], "-stdin"],
                            input=password + "\n", capture_output=True, text=True, check=True)
    return "{%s}%s" % (scheme, result.stdout.strip())


def _sql_string(value):
    return "NULL" if value is None else "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def users_sql(made):
    """The INSERTs (upserts) of the accounts, with hashed passwords only."""
    rows = ",\n  ".join(
        "({}, {}, {}, {}, {})".format(
            _sql_string(a["email"]), _sql_string(a["user"]),
            _sql_string(password_hash(a["password"], a["scheme"])), int(a["active"]),
            _sql_string(a["realname"]))
        for a in made)
    return ("USE cacertusers;\nINSERT INTO users (login, mailbox, password, active, realname) "
            f"VALUES\n  {rows}\n  ON DUPLICATE KEY UPDATE mailbox = VALUES(mailbox), "
            "password = VALUES(password), active = VALUES(active);\n")


def certificates(lab_dir):
    """{name: (chain PEM, key PEM)} issued by the lab's intermediate CA, made once."""
    tls = lab_dir / "legacy" / "tls"
    inter_pem = (lab_dir / "ca" / "intermediate.pem").read_bytes()
    issued = {}
    for name in CERTIFICATES:
        chain, key = tls / f"{name}.pem", tls / f"{name}.key"
        if not (chain.is_file() and key.is_file()):
            inter_key = serialization.load_pem_private_key(
                (lab_dir / "ca" / "intermediate.key.pem").read_bytes(), None)
            leaf_key, leaf = ca.make_server(inter_key, x509.load_pem_x509_certificate(inter_pem),
                                            [name])
            _private(key, ca.key_pem(leaf_key).decode())
            chain.write_bytes(ca.cert_pem(leaf) + inter_pem)
        issued[name] = (chain.read_bytes(), key.read_bytes())
    return issued


def _mode(relative):
    if relative.endswith(".sh"):
        return 0o700
    return 0o600 if relative.startswith(("root/", "etc/ssl/private/")) else 0o644


def payload(users, issued):
    """A tar (bytes) of what goes below / in the container: lab/legacy/rootfs, the accounts'
    SQL and the TLS files, all owned by root."""
    members = {str(p.relative_to(FILES)): p.read_bytes()
               for p in sorted(FILES.rglob("*")) if p.is_file()}
    members["root/cacert-lab-legacy/users.sql"] = users.encode()
    for name, (chain, key) in issued.items():
        members[f"etc/ssl/certs/{name}.pem"] = chain
        members[f"etc/ssl/private/{name}.key"] = key
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        folder = tarfile.TarInfo("root/cacert-lab-legacy")
        folder.type, folder.mode = tarfile.DIRTYPE, 0o700
        tar.addfile(folder)
        for relative, content in members.items():
            info = tarfile.TarInfo(relative)
            info.size, info.mode = len(content), _mode(relative)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _install_packages_script():
    return ("set -e; export DEBIAN_FRONTEND=noninteractive; "
            "for i in $(seq 300); do pgrep -x 'apt-get|dpkg|apt' >/dev/null || break; sleep 1; "
            "done; dpkg --configure -a; "
            "printf '%s\\n' 'postfix postfix/main_mailer_type select No configuration' "
            "'postfix postfix/mailname string email.cacert.test' | debconf-set-selections; "
            "apt-get update -q; apt-get install -y -q --no-install-recommends "
            + " ".join(PACKAGES))


def record(made):
    """The legacy's own fields in its lab.json entry (contract: the legacy contract)."""
    return {
        "domain": DOMAIN,
        "hostnames": {"email": "email.cacert.test", "community": "community.cacert.test"},
        "ca_cert": ".lab/ca.pem",
        "accounts": [{k: a[k] for k in ("user", "email", "password", "scheme", "active")}
                     for a in made],
        "aliases": ALIASES,
        "mail_root": "/home/mailboxes",
        "vmail_uid": 2000,
    }


def build(name, lab_dir, ssh, rootfs, say):
    """Fill the container once (see the module docstring); return its lab.json fields."""
    made, fresh = accounts(lab_dir)
    issued = certificates(lab_dir)
    # Fresh passwords for a built container: build again, so that its hashes match them.
    if fresh or not (Path(rootfs) / BUILT_MARKER).exists():
        say(f"building the legacy server in {name}: packages, configs, accounts, mail")
        steps = [("the packages", _install_packages_script(), None),
                 ("the files", "tar -x -p -f - -C /", payload(users_sql(made), issued)),
                 ("build.sh", "/root/cacert-lab-legacy/build.sh", None)]
        for label, command, stdin in steps:
            if ssh(command, input=stdin).returncode != 0:
                raise BuildError(f"{name}: installing {label} failed (its output is above)")
    return record(made)


def clean(lab_dir):
    """Forget the legacy's passwords, certificates and adopted data (its container is gone)."""
    shutil.rmtree(lab_dir / "legacy", ignore_errors=True)
