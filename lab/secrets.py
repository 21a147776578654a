"""Everything `.lab/` holds that the deploy and the tests need: SSH key, CA, certificates,
passwords. Each file is made only if it is missing, so a second `lab up` keeps them.

Layout (a contract with the services' operations and the tests):
    .lab/id_ed25519, .lab/id_ed25519.pub    root's key for the container
    .lab/ca.pem                             the lab's trust anchor (root CA)
    .lab/ca/{root,intermediate}.{pem,key.pem}  the CA itself (to sign more in tests)
    .lab/secrets/                           what $CACERT_EMAIL_SECRETS names (0700, files 0600)
        ca.pem, <cert>.chain.pem (leaf + intermediate), <cert>.key.pem
        mysql_postfix.password, mysql_dovecot.password
        backup.key                          the backup repository's key (64 hex digits)
        icinga2_api.password                the lab master's `mailstore` API user (the same
                                            value as .lab/icinga2-master/secrets/mailstore.password)
        accounts/<email>.password
"""
import os
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from lab import ca, topology

SERVICE_PASSWORDS = ("mysql_postfix", "mysql_dovecot")


def _write(path, content, mode=0o600):
    """Write atomically with `mode`: a killed run leaves the old file or none, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(content if isinstance(content, bytes) else content.encode())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _private_dir(path):
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def ssh_key(lab_dir):
    key_path = lab_dir / "id_ed25519"
    pub_path = lab_dir / "id_ed25519.pub"
    if key_path.is_file() and pub_path.is_file():
        return
    key = ed25519.Ed25519PrivateKey.generate()
    _write(key_path, key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()))
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                        serialization.PublicFormat.OpenSSH)
    _write(pub_path, pub + b" cacert-lab\n", mode=0o644)


def _load(cert_path, key_path):
    return (serialization.load_pem_private_key(key_path.read_bytes(), None),
            x509.load_pem_x509_certificate(cert_path.read_bytes()))


def certificates(lab_dir):
    """The CA (if missing) and each certificate (if missing, or if the CA was just made)."""
    ca_dir = _private_dir(lab_dir / "ca")
    sec = _private_dir(lab_dir / "secrets")
    files = [ca_dir / n for n in ("root.pem", "root.key.pem", "intermediate.pem",
                                  "intermediate.key.pem")]
    fresh_ca = not all(f.is_file() for f in files)
    if fresh_ca:
        root_key, root = ca.make_root()
        inter_key, inter = ca.make_intermediate(root_key, root)
        _write(ca_dir / "root.key.pem", ca.key_pem(root_key))
        _write(ca_dir / "intermediate.key.pem", ca.key_pem(inter_key))
        _write(ca_dir / "intermediate.pem", ca.cert_pem(inter), 0o644)
        _write(ca_dir / "root.pem", ca.cert_pem(root), 0o644)
    inter_key, inter = _load(ca_dir / "intermediate.pem", ca_dir / "intermediate.key.pem")
    root_pem = (ca_dir / "root.pem").read_bytes()
    _write(lab_dir / "ca.pem", root_pem, 0o644)
    _write(sec / "ca.pem", root_pem)
    for cert_key, name in topology.CERTIFICATE_NAMES.items():
        chain, key = sec / f"{cert_key}.chain.pem", sec / f"{cert_key}.key.pem"
        if fresh_ca or not (chain.is_file() and key.is_file()):
            leaf_key, leaf = ca.make_server(inter_key, inter, [name])
            _write(key, ca.key_pem(leaf_key))
            _write(chain, ca.cert_pem(leaf) + ca.cert_pem(inter))


def passwords(lab_dir):
    """Random passwords for the services' DB accounts and the test accounts; returns the
    accounts with their passwords (for lab.json)."""
    sec = _private_dir(lab_dir / "secrets")
    for name in SERVICE_PASSWORDS:
        path = sec / f"{name}.password"
        if not path.is_file():
            _write(path, secrets.token_urlsafe(24) + "\n")
    accounts_dir = _private_dir(sec / "accounts")
    accounts = []
    for account in topology.ACCOUNTS:
        path = accounts_dir / f"{account['email']}.password"
        if not path.is_file():
            _write(path, secrets.token_urlsafe(18) + "\n")
        accounts.append({**account, "password": path.read_text().strip()})
    return accounts


def icinga_api_password(lab_dir):
    """The password of the lab Icinga2 master's API user `mailstore`, in both places that need
    it: the master's own secrets (master.sh keeps a file that exists) and the deploy's secrets
    directory (`icinga2_api_password_secret`, read by operations/monitoring.py)."""
    master = lab_dir / "icinga2-master" / "secrets" / "mailstore.password"
    deploy = _private_dir(lab_dir / "secrets") / "icinga2_api.password"
    for path in (master, deploy):
        if path.is_file() and path.read_text().strip():
            password = path.read_text().strip()
            break
    else:
        password = secrets.token_hex(32)  # hex: master.sh puts it in an Icinga string
    _private_dir(master.parent)
    for path in (master, deploy):
        if not path.is_file() or path.read_text().strip() != password:
            _write(path, password + "\n")


def backup_key(lab_dir):
    """The backup repository's key (`backup_key_secret`): 64 hex digits, made once."""
    path = _private_dir(lab_dir / "secrets") / "backup.key"
    if not path.is_file():
        _write(path, secrets.token_hex(32) + "\n")


def generate(lab_dir):
    """Make whatever of `.lab/` is missing; return the accounts with passwords."""
    _private_dir(lab_dir)
    ssh_key(lab_dir)
    certificates(lab_dir)
    icinga_api_password(lab_dir)
    backup_key(lab_dir)
    return passwords(lab_dir)
