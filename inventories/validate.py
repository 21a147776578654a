"""Validation of the inventory, on the control machine, before any host is touched.

pyinfra reads the inventory file before it connects anywhere, so inventories/prod.py and
inventories/lab.py pass each host's data through `checked()`: a bad datum or a missing or
malformed secret stops the run there, with an error naming the key or the file.
"""
import logging
import re

from inventories.defaults import defaults
from inventories.secrets import (InventoryError, read_backup_key, read_password, read_secret,
                                 secrets_dir)
from operations import backup, certificates, crl, dkim

# pyinfra's own connection data may appear in a host's data beside ours.
_CONNECTION_KEYS = {"ssh_user", "ssh_key", "ssh_port", "ssh_known_hosts_file",
                    "ssh_strict_host_key_checking", "ssh_hostname", "_sudo"}


def checked(group, data):
    """Return `data` (this host's overrides) after validating it merged over the defaults.

    + group: the inventory group the host is in ("infra02" or "email")
    + data: the host's own data, as given in the inventory file
    """
    merged = {**defaults(), **data}
    unknown = sorted(set(data) - set(defaults()) - _CONNECTION_KEYS)
    if unknown:
        raise InventoryError(f"unknown inventory keys: {', '.join(unknown)}")
    release = merged["debian_release"]
    if release not in ("bullseye", "bookworm", "trixie"):
        raise InventoryError(f"debian_release={release!r}: use bullseye, bookworm or trixie")
    if group == "email":
        _check_mail_data(merged)
        _check_certificates(merged)
        _check_mail_secrets(merged)
        _check_backup(merged)
        _check_dkim_and_crl(merged)
    return data


# --- the email container's data --------------------------------------------------------------

# A mailbox directory name: becomes <mail_root>/<user>, so no "/", no leading dot (no "..").
_USER = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_LOCAL = r"[A-Za-z0-9!#$%&*+/=?^_{|}~.-]+"
_DOMAIN = r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}"
_ADDRESS = re.compile(rf"^{_LOCAL}@{_DOMAIN}$")
_DOMAIN_ONLY = re.compile(rf"^{_DOMAIN}$")
_POSTFIX_PARAMETER = re.compile(r"^[a-z][a-z0-9_]*$")
_CERTIFICATE_FIELDS = {"cert", "key", "names", "services"}
_CERTIFICATE_OPTIONAL = {"key_group"}
# The pairs the operations use (postfix: email + community; dovecot: community; the API: its own).
_CERTIFICATE_KEYS = {"email", "community", "selfservice_api"}


def _address(value, where):
    if not isinstance(value, str) or not _ADDRESS.match(value):
        raise InventoryError(f"{where}: {value!r} is not an email address")


def _line(value, where):
    if not isinstance(value, str) or not value or any(c in value for c in "\r\n\0"):
        raise InventoryError(f"{where}: {value!r} must be a non-empty single-line string")


def _check_mail_data(data):
    root = data["mail_root"]
    if not isinstance(root, str) or not root.startswith("/") or ".." in root.split("/"):
        raise InventoryError(f"mail_root={root!r}: must be an absolute path without '..'")
    seen = set()
    for i, account in enumerate(data["mail_accounts"]):
        where = f"mail_accounts[{i}]"
        if not isinstance(account, dict) or set(account) != {"user", "email"}:
            raise InventoryError(f"{where}: must be {{'user': ..., 'email': ...}}, got {account!r}")
        user = account["user"]
        if not isinstance(user, str) or not _USER.match(user):
            raise InventoryError(
                f"{where}: user {user!r} is not a valid mailbox name (a-z, 0-9, '.', '_', '-', "
                f"not starting with '.' or '-'): it becomes the directory <mail_root>/<user>")
        _address(account["email"], f"{where} email")
        for name in (user, account["email"].lower()):
            if name in seen:
                raise InventoryError(f"{where}: {name!r} appears twice in mail_accounts")
            seen.add(name)
    for i, alias in enumerate(data["mail_aliases"]):
        where = f"mail_aliases[{i}]"
        if not isinstance(alias, dict) or set(alias) != {"alias", "owner", "send_as"}:
            raise InventoryError(
                f"{where}: must be {{'alias': ..., 'owner': ..., 'send_as': bool}}, got {alias!r}")
        _address(alias["alias"], f"{where} alias")
        _address(alias["owner"], f"{where} owner")
        if not isinstance(alias["send_as"], bool):
            raise InventoryError(f"{where}: send_as must be True or False")
        domain = alias["alias"].rsplit("@", 1)[1].lower()
        if not alias["send_as"] and domain != data["mail_domain"]:
            # Those go to /etc/aliases, which knows local parts of the mail domain only.
            raise InventoryError(f"{where}: {alias['alias']} has send_as False, so it goes to "
                                 f"/etc/aliases, which serves @{data['mail_domain']} only")
    for local, target in data["etc_aliases"].items():
        if not _USER.match(local):
            raise InventoryError(f"etc_aliases: {local!r} is not a local part for /etc/aliases")
        _line(target, f"etc_aliases[{local!r}]")
    for i, rule in enumerate(data["arbitration_rewrites"]):
        where = f"arbitration_rewrites[{i}]"
        if not isinstance(rule, dict) or set(rule) != {"match", "to"}:
            raise InventoryError(f"{where}: must be {{'match': regexp, 'to': address}}")
        _line(rule["match"], f"{where} match")
        try:
            re.compile(rule["match"])
        except re.error as exc:
            raise InventoryError(f"{where}: match {rule['match']!r} is no regexp: {exc}") from None
        if "/" in rule["match"]:
            raise InventoryError(f"{where}: match must not contain '/' (Postfix's delimiter)")
        _address(rule["to"], f"{where} to")
    for recipient, copy_to in data["recipient_bcc"].items():
        _address(recipient, "recipient_bcc key")
        _address(copy_to, f"recipient_bcc[{recipient!r}]")
    for domain, nexthop in data["transports"].items():
        if not _DOMAIN_ONLY.match(domain):
            raise InventoryError(f"transports: {domain!r} is not a domain")
        _line(nexthop, f"transports[{domain!r}]")
        if " " in nexthop:
            raise InventoryError(f"transports[{domain!r}]: {nexthop!r} contains a space")
    for name, value in data["postfix_main_cf_extra"].items():
        if not _POSTFIX_PARAMETER.match(name):
            raise InventoryError(f"postfix_main_cf_extra: {name!r} is not a Postfix parameter name")
        _line(str(value), f"postfix_main_cf_extra[{name!r}]")


def _check_certificates(data):
    """Each pair of `certificates`: well-formed entry, then the cryptographic checks."""
    pairs = data["certificates"]
    unknown = sorted(set(pairs) - _CERTIFICATE_KEYS)
    if unknown:
        raise InventoryError(f"certificates: unknown key(s) {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(_CERTIFICATE_KEYS))})")
    missing = sorted(_CERTIFICATE_KEYS - set(pairs))
    if missing:
        raise InventoryError(f"certificates: missing {', '.join(missing)}")
    ca_pem = read_secret("ca.pem")
    for key, cert in sorted(pairs.items()):
        where = f"certificates[{key!r}]"
        fields = set(cert)
        if not _CERTIFICATE_FIELDS <= fields or fields - _CERTIFICATE_FIELDS - _CERTIFICATE_OPTIONAL:
            raise InventoryError(
                f"{where}: needs exactly {', '.join(sorted(_CERTIFICATE_FIELDS))} "
                f"(optional: key_group), got {', '.join(sorted(fields))}")
        for path in (cert["cert"], cert["key"]):
            if not path.startswith("/"):
                raise InventoryError(f"{where}: {path!r} must be an absolute path")
        if not cert["names"]:
            raise InventoryError(f"{where}: names must list the hostnames it serves")
        try:
            warnings = certificates.check_pair(
                read_secret(f"{key}.chain.pem"), read_secret(f"{key}.key.pem"), ca_pem,
                cert["names"], data["certificate_warn_days"],
                what=f"{where} ({secrets_dir() / key}.chain.pem)")
        except certificates.CertificateError as exc:
            raise InventoryError(str(exc)) from None
        for warning in warnings:
            logging.getLogger("pyinfra").warning("WARNING: %s", warning)


def _check_mail_secrets(data):
    """The database passwords and one password per seeded account exist and are usable."""
    for name in ("mysql_postfix.password", "mysql_dovecot.password"):
        read_password(name)
    for account in data["mail_accounts"]:
        read_password(f"accounts/{account['email']}.password")


def _check_backup(data):
    """The nightly backup's data (operations/backup.py) and, when encrypted, its key."""
    try:
        backup.settings(data)
    except backup.BackupDataError as exc:
        raise InventoryError(str(exc)) from None
    if data["backup_encrypt"]:
        read_backup_key(data["backup_key_secret"])


def _check_dkim_and_crl(data):
    """DKIM (operations/dkim.py) and CRL refresh (operations/crl.py) data."""
    try:
        dkim.settings(data)
        crl.check_data(data)
    except (dkim.DkimDataError, crl.CrlDataError) as exc:
        raise InventoryError(str(exc)) from None
