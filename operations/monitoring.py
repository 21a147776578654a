"""Monitoring of the email container: the mailstore checks, run by the Icinga2 agent for the
master (command_endpoint), registered on the master by `mailstore icinga register`.

What the deploy leaves on the server (all from inventory, nothing edited by hand):

- `/etc/mailstore/icinga/checks.json`: the description `mailstore icinga register` reads
  (format: mailstore/icinga/description.py). Services: `mailstore-volume` (data volume),
  `mailstore-maildir` (mail_root, against the database), `mailstore-cert-<pair>` (each pair of
  `certificates`, with its key), `mailstore-crl` (the CRL refresh job last succeeded recently
  and no CRL is near its nextUpdate), `mailstore-mailq` (also CRITICAL while the mail
  migration holds delivery: operations/migration.py HELD_FILE), `mailstore-backup-repository`
  (age and verify state of backup_repository) — all active, run by the agent — and `mailstore-backup`,
  passive: the nightly backup job pushes its result (`mailstore-push-backup-result`).
- `/etc/mailstore/icinga/api.credentials` (0600, root): the API user and its password (secret
  `icinga2_api_password_secret`), and the CA of the master's API certificate.
- `/etc/sudoers.d/mailstore-checks`: Icinga runs checks as `nagios`, which cannot traverse
  Dovecot's 0700 Maildirs nor read the private keys or the backup repository. Rather than
  widening those permissions (or putting nagios in groups that grant far more than a check
  needs), nagios may run exactly the declared command lines — same arguments — as vmail
  (maildir) or root (cert, backup). The file is generated from the same list as the
  description, checked with `visudo -cf` on a staged copy, and only then installed.
- `/usr/local/sbin/mailstore-icinga-push SERVICE CHECK [ARGS...]` and
  `/usr/local/sbin/mailstore-push-backup-result` (no arguments, for the backup cron job).

Registration runs on the server (it holds the credentials the pushes need anyway) against
the master's API, TLS verified against the master's CA and its node name. It runs when the
description, credentials, CA or connection differ from what the last *successful*
registration recorded, so a run that failed there (master down) is finished by the next one,
or when a dry run says the master's objects drifted (lost in a restore, edited by hand); an
unchanged inventory on an unchanged master changes nothing (operations/icinga_registration.py,
which the backup host's registration shares).
"""
import hashlib
import json
import re
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files

from operations.secrets import InventoryError, read_password
from operations import crl, icinga_registration, migration, staging
# RegistrationPending: the fact whose answer decides whether registration runs.
from operations.icinga_registration import (MAILSTORE, RegistrationPending,  # noqa: F401
                                            connection_args)

REPO = Path(__file__).resolve().parents[1]
SUDO = "/usr/bin/sudo"
ETC = "/etc/mailstore/icinga"
DESCRIPTION = f"{ETC}/checks.json"
CREDENTIALS = f"{ETC}/api.credentials"
UPLOADED_CA = f"{ETC}/ca.pem"
# The Icinga CA that signed this agent: the master's API certificate comes from it as well.
AGENT_CA = "/var/lib/icinga2/certs/ca.crt"
MAILDIR_DB_FILE = "/etc/mailstore/maildir-check.cnf"
MAILDIR_CACHE = "/var/cache/mailstore/check-maildir.json"
SUDOERS = "/etc/sudoers.d/mailstore-checks"
PUSH = "/usr/local/sbin/mailstore-icinga-push"
PUSH_BACKUP = "/usr/local/sbin/mailstore-push-backup-result"
# Written after a successful registration: the digest of what was registered.
REGISTERED_MARKER = "/var/lib/mailstore/icinga-registered.sha256"
# Blocks on their own lines leave no blank line behind (one would end a shell continuation).
JINJA = {"trim_blocks": True, "lstrip_blocks": True}
# Icinga2's agent runs its checks as this user (Debian's package).
AGENT_USER = "nagios"

BACKUP_SERVICE = "mailstore-backup"
# A nightly job: a day without a pushed result, plus two hours of slack, is CRITICAL.
BACKUP_FRESHNESS = 26 * 3600
# Pushed right after the job: the newest complete snapshot must be fresh (seconds).
BACKUP_PUSH_WARNING = 4 * 3600
BACKUP_PUSH_CRITICAL = 6 * 3600
# Only the postfix account's view of active mailboxes: no password hashes.
# Deactivated users too (their Maildir is kept, no orphan); only active ones can be missing.
MAILDIR_DB_QUERY = "SELECT mailbox, active FROM mailstore_mailboxes"

# Values go into sudoers, a shell script and Icinga's command lines: no quoting needed, ever.
_PATH = re.compile(r"^/[A-Za-z0-9._/+-]*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_URL = re.compile(r"^https://[A-Za-z0-9.-]+(:[0-9]+)?/?$")
_ARG = re.compile(r"^[A-Za-z0-9@~:._/+-]+$")


class MonitoringDataError(ValueError):
    """A monitoring datum is unusable; the message names the key."""


def _path(value, key):
    if not isinstance(value, str) or not _PATH.match(value) or ".." in value.split("/"):
        raise MonitoringDataError(f"{key}: {value!r} must be an absolute path of letters, "
                                  "digits and ._/+-")
    return value


def _name(value, key):
    if not isinstance(value, str) or not _NAME.match(value):
        raise MonitoringDataError(f"{key}: {value!r} is not a usable name")
    return value


def api_connection(data):
    """{"url", "tls_name"} of the master's API, from icinga2_api_* or the parent endpoint."""
    url, tls_name = data["icinga2_api_url"], data["icinga2_api_tls_name"]
    if url is None:
        parent = next((p for p in data["icinga2_parent_endpoints"] if p.get("host")), None)
        if parent is None:
            raise MonitoringDataError("icinga2_api_url: None, and no icinga2_parent_endpoints "
                                      "entry has a `host` to derive it from")
        url = f"https://{parent['host']}:{parent.get('port', 5665)}"
        tls_name = parent["name"] if tls_name is None else tls_name
    if not isinstance(url, str) or not _URL.match(url):
        raise MonitoringDataError(f"icinga2_api_url: {url!r} must be https://host[:port]")
    if tls_name is not None:
        _name(tls_name, "icinga2_api_tls_name")
    return {"url": url.rstrip("/"), "tls_name": tls_name}


def _extra_args(data, service):
    args = data["monitoring_check_args"].get(service, [])
    if not isinstance(args, list) or not all(isinstance(a, str) and _ARG.match(a)
                                             for a in args):
        raise MonitoringDataError(f"monitoring_check_args[{service!r}]: must be a list of "
                                  f"plain arguments (letters, digits, @~:._/+-), got {args!r}")
    return list(args)


def services(data):
    """[(service name, check, args, run as)] of the active checks; run as None: the agent's
    own user, else a user sudo switches to (pure; from inventory)."""
    unknown = sorted(set(data["monitoring_check_args"]) - _service_names(data))
    if unknown:
        raise MonitoringDataError(f"monitoring_check_args: no such service {', '.join(unknown)}")
    found = [("mailstore-volume", "volume", [_path(data["data_volume"], "data_volume")], None),
             ("mailstore-maildir", "maildir",
              [_path(data["mail_root"], "mail_root"), "--db-defaults-file", MAILDIR_DB_FILE,
               "--db-query", MAILDIR_DB_QUERY, "--cache", MAILDIR_CACHE],
              _name(data["vmail_user"], "vmail_user"))]
    for key, pair in sorted(data["certificates"].items()):
        found.append((_cert_service(key), "cert",
                      [_path(pair["cert"], f"certificates[{key!r}] cert"), "--key",
                       _path(pair["key"], f"certificates[{key!r}] key")], "root"))
    found.append(("mailstore-crl", "crl", crl.source_files(data), None))
    # CRITICAL while the mail migration holds delivery (operations/migration.py)
    found.append(("mailstore-mailq", "mailq", ["--held", migration.HELD_FILE], None))
    found.append(("mailstore-backup-repository", "backup",
                  ["--repo", _path(data["backup_repository"], "backup_repository"),
                   "--key-file", _path(data["backup_key_file"], "backup_key_file")], "root"))
    return [(name, check, args + _extra_args(data, name), runas)
            for name, check, args, runas in found]


def _service_names(data):
    names = {"mailstore-volume", "mailstore-maildir", "mailstore-mailq", "mailstore-crl",
             "mailstore-backup-repository"}
    return names | {_cert_service(key) for key in data["certificates"]}


def _cert_service(key):
    return "mailstore-cert-" + key.replace("_", "-")


def _prefix(runas):
    if runas is None:
        return [MAILSTORE]
    if runas == "root":
        return [SUDO, "-n", MAILSTORE]
    return [SUDO, "-n", "-u", runas, MAILSTORE]


def description(data):
    """The description `mailstore icinga register` reads (a dict; pure)."""
    node = _name(data["icinga2_node_name"], "icinga2_node_name")
    interval = data["monitoring_check_interval"]
    if not isinstance(interval, int) or interval < 10:
        raise MonitoringDataError(f"monitoring_check_interval: {interval!r} must be >= 10 s")
    active = services(data)
    by_check = {}
    for name, check, _, runas in active:
        prefix = _prefix(runas)
        if by_check.setdefault(check, prefix) != prefix:
            # one CheckCommand per plugin: every service of a plugin runs it the same way
            raise MonitoringDataError(f"{name}: check {check} must run as one user for all "
                                      "its services")
    result = {
        "host": node,
        "command_endpoint": node,
        "mailstore": MAILSTORE,
        "mailstore_by_check": {c: p for c, p in sorted(by_check.items()) if p != [MAILSTORE]},
        "service_zone": _name(data["icinga2_parent_zone"], "icinga2_parent_zone"),
        "services": [
            {"name": name, "check": check, "args": args, "check_interval": interval,
             "retry_interval": max(10, interval // 5), "max_check_attempts": 3}
            for name, check, args, _ in active
        ] + [{"name": BACKUP_SERVICE, "passive": True, "freshness": BACKUP_FRESHNESS,
              "display_name": "mailstore backup (pushed by the nightly job)"}],
    }
    # A global zone carries the CheckCommands to the agent, which must know them to run them.
    if data["icinga2_global_zones"]:
        result["command_zone"] = _name(data["icinga2_global_zones"][0], "icinga2_global_zones")
    return result


def _sudoers_arg(arg):
    """An argument as sudoers reads it: these characters are special in a Cmnd_Spec."""
    return re.sub(r"([\\,:=*?\[\]!#\"'])", r"\\\1", arg)


def sudoers_commands(data):
    """{run as user: [command line]} that the agent's user may run through sudo (pure)."""
    commands = {}
    for _, check, args, runas in services(data):
        if runas is not None:
            line = " ".join([MAILSTORE, "check", check] + [_sudoers_arg(a) for a in args])
            commands.setdefault(runas, []).append(line)
    return commands


def _read_ca(data):
    """(path on the server, content to upload or None) of the master's API CA."""
    if data["icinga2_api_ca"] is None:
        return AGENT_CA, None
    path = Path(data["icinga2_api_ca"])
    path = path if path.is_absolute() else REPO / path
    try:
        text = path.read_text()
    except OSError as exc:
        raise InventoryError(f"icinga2_api_ca: cannot read {path}: {exc.strerror}") from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise InventoryError(f"icinga2_api_ca: {path} holds no PEM certificate")
    return UPLOADED_CA, text


def _credentials(data):
    user = _name(data["icinga2_api_user"], "icinga2_api_user")
    password = read_password(data["icinga2_api_password_secret"])
    return json.dumps({"username": user, "password": password}) + "\n"


@deploy("Monitoring")
def checks():
    """The mailstore checks for the Icinga2 agent, their registration on the master, and the
    push commands for passive results."""
    data = host.data.dict()
    desc = description(data)
    connection = api_connection(data)
    ca_path, ca_text = _read_ca(data)

    apt.packages(name="sudo (the agent runs privileged checks through it)", packages=["sudo"])
    files.directory(name="mailstore config directory", path=ETC, mode="700")
    files.directory(name="check maildir cache directory", path=str(Path(MAILDIR_CACHE).parent),
                    user=data["vmail_user"], group=data["vmail_user"], mode="700")
    files.directory(name="mailstore state directory", path=str(Path(REGISTERED_MARKER).parent),
                    mode="755")

    staging.files(
        name="check maildir: database access (postfix's read-only account)",
        config_files=[staging.ConfigFile(
            MAILDIR_DB_FILE,
            staging.render("files/monitoring/maildir-check.cnf.j2",
                           vmail_user=data["vmail_user"], mysql_database=data["mysql_database"],
                           password=read_password("mysql_postfix.password")),
            mode="640", group=data["vmail_user"])],
        stage=f"{staging.STAGING_ROOT}/monitoring-db")

    staging.files(
        name="sudoers: exactly the declared checks, as the user that can run them",
        config_files=[staging.ConfigFile(
            SUDOERS,
            staging.render("files/monitoring/mailstore-checks.sudoers.j2",
                           agent_user=AGENT_USER, commands=sudoers_commands(data)),
            mode="440")],
        stage=f"{staging.STAGING_ROOT}/monitoring-sudoers",
        check="visudo -cf {stage}/mailstore-checks")

    description_text = json.dumps(desc, indent=2, sort_keys=True) + "\n"
    credentials_text = _credentials(data)
    icinga_files = [staging.ConfigFile(DESCRIPTION, description_text),
                    staging.ConfigFile(CREDENTIALS, credentials_text, mode="600")]
    if ca_text is not None:
        icinga_files.append(staging.ConfigFile(UPLOADED_CA, ca_text))
    # The staged set is accepted only if the master takes it: description valid, credentials
    # and TLS good, host known (a dry run changes nothing on the master).
    stage = f"{staging.STAGING_ROOT}/monitoring-icinga"
    staged_ca = f"{stage}/ca.pem" if ca_text is not None else ca_path
    staging.files(
        name="Icinga registration: description, API credentials, CA",
        config_files=icinga_files, stage=stage,
        check=" ".join([MAILSTORE, "icinga", "register", "--dry-run"]
                       + connection_args(connection, staged_ca, f"{stage}/api.credentials")
                       + ["--description", f"{stage}/checks.json", ">/dev/null"]))

    files.template(name="mailstore-icinga-push (submit a check as a passive result)",
                   src="files/monitoring/mailstore-icinga-push.j2", dest=PUSH, mode="755",
                   jinja_env_kwargs=dict(JINJA),
                   mailstore=MAILSTORE, host=desc["host"], ca=ca_path, credentials=CREDENTIALS,
                   **connection)
    files.template(name="mailstore-push-backup-result (for the backup cron job)",
                   src="files/monitoring/mailstore-push-backup-result.j2", dest=PUSH_BACKUP,
                   mode="755", jinja_env_kwargs=dict(JINJA), push=PUSH, service=BACKUP_SERVICE,
                   freshness=BACKUP_FRESHNESS,
                   repository=_path(data["backup_repository"], "backup_repository"),
                   key_file=_path(data["backup_key_file"], "backup_key_file"),
                   warning=BACKUP_PUSH_WARNING, critical=BACKUP_PUSH_CRITICAL)

    wanted = hashlib.sha256("\0".join(
        [description_text, credentials_text, ca_text or ca_path, json.dumps(connection)]
    ).encode()).hexdigest()
    icinga_registration.register(
        f"Register the mailstore checks on the master ({connection['url']})", connection,
        ca_path, CREDENTIALS, DESCRIPTION, REGISTERED_MARKER, wanted, prune=True)
