"""The off-host copy of the backup repository: a second host PULLS it every night.

Why pull: the mail server holds no credential for the backup host, so root on a compromised
mail server cannot delete, truncate or rewrite a copy; the backup host's key on the mail
server is forced to a read-only rsync of the repository. Retention of the copies runs on the
backup host only.

Two deploys, composed in deploy.py:

- `pull_access()` on the mail server (group email), only when `backup_pull_keys` names a key:
  - the system user `mailstore-pull` (no password, no home of its own); its
    `authorized_keys` (root-owned) holds each key with `restrict`, `from="backup_pull_from"`
    and `command="sudo -n mailstore-backup-serve"`;
  - `/usr/local/sbin/mailstore-backup-serve`, run through one sudoers rule without
    arguments: under `flock -x REPO/lock` (the repository's own lock: the copy never sees a
    half-written catalog) `mailstore backup export REPO` hard-links what the copy may hold
    into REPO/offhost-view, `rrsync -ro` serves that view, and it is removed. Of an
    encrypted repository that is config.json, the packs and the sealed catalog
    (catalog.sealed and its chunk files in sealed/, written by every run:
    mailstore/backup/sealed.py), never catalog.sqlite or index/, so the backup
    host learns no user, folder, file name, header or owner; an unencrypted one is served
    whole (its packs are plain anyway). Debian's rsync ships /usr/bin/rrsync on every
    release served (bullseye's 3.2.3-4+deb11u1 too: `dpkg -c`, 2026-12-06).
- `copies()` on the backup host (group backup_host):
  - the system user `mailstore-copies`, its SSH key made on the host (the private half never
    leaves it: put `.../id_ed25519.pub` into the mail server's `backup_pull_keys`), the mail
    server's host keys (`backup_copy_source_host_keys`) as its only known_hosts;
  - `backup_copy_dir` (owned by that user) with one read-only directory per night
    (`rsync --link-dest`: unchanged packs and sealed catalog chunks are hard links; only new
    packs, the sealed catalog's new chunks and its manifest travel), `latest`, and
    `state.json`
    for `mailstore check backup-copy`;
  - `/usr/local/sbin/mailstore-copy-job` run from `/etc/cron.d/mailstore-copy`: copy,
    verify the new one without the key (`--previous`: its sealed catalog must not be older
    than the previous copy's), keep the newest `backup_copy_keep` copies, record the state;
  - with `backup_copy_icinga`: the passive service `mailstore-backup-copy` on the master
    (its Host object defined there), registered from here with this host's own API user
    (operations/icinga_registration.py), and `/usr/local/sbin/mailstore-push-copy-result`,
    which the job runs at its end whatever happened: `mailstore check backup-copy` (the
    copy's age against `backup_copy_age_*`, the last verify, the copies kept) submitted as
    that service's result. The credentials file is root's and the copies user's group's
    only (0640): the job runs as that user. No push for 26 h is CRITICAL (freshness).

A copy is a mailstore repository: `mailstore backup verify|restore|list|find --key-file K`
read it with the key alone (the key never has to be on the backup host); the sealed catalog
is rebuilt in a private temporary file, removed as soon as SQLite holds it open.
"""
import hashlib
import io
import json
import re
from pathlib import Path, PurePosixPath

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.operations import apt, files, server

from operations import backup, icinga_registration, secret_file, staging
from operations.secrets import InventoryError, read_password

# --- the mail server's side
PULL_USER = "mailstore-pull"
PULL_HOME = "/var/lib/mailstore-pull"
AUTHORIZED_KEYS = f"{PULL_HOME}/.ssh/authorized_keys"
SERVE = "/usr/local/sbin/mailstore-backup-serve"
SUDOERS = "/etc/sudoers.d/mailstore-backup-pull"
SERVE_TAG = "mailstore-backup-serve"
# rrsync: Debian's, from the rsync package.
RRSYNC = "/usr/bin/rrsync"
# Seconds the copy waits for the repository's lock (a nightly run, prune or restore).
LOCK_WAIT = 3600
# REPO/<this>: what `mailstore backup export` makes for rrsync (the name mailstore uses:
# mailstore/backup/repository.py OFFHOST_VIEW, whose run removes a stale one)
SERVED_VIEW = "offhost-view"

# --- the backup host's side
COPY_USER = "mailstore-copies"
COPY_HOME = "/var/lib/mailstore-copies"
SSH_KEY = f"{COPY_HOME}/.ssh/id_ed25519"
KNOWN_HOSTS = f"{COPY_HOME}/.ssh/known_hosts"
JOB = "/usr/local/sbin/mailstore-copy-job"
CRON = "/etc/cron.d/mailstore-copy"
TAG = "mailstore-copy"
# --- the backup host in Icinga (backup_copy_icinga)
COPY_SERVICE = "mailstore-backup-copy"
# A nightly job: a day without a pushed result, plus two hours of slack, is CRITICAL (as the
# mail server's own backup service: operations/monitoring.py BACKUP_FRESHNESS).
COPY_FRESHNESS = 26 * 3600
ICINGA_DIR = "/etc/mailstore/icinga"
ICINGA_DESCRIPTION = f"{ICINGA_DIR}/backup-copy.json"
ICINGA_CREDENTIALS = f"{ICINGA_DIR}/backup-copy.credentials"
ICINGA_CA = f"{ICINGA_DIR}/backup-copy-ca.pem"
PUSH = "/usr/local/sbin/mailstore-push-copy-result"
REGISTERED_MARKER = "/var/lib/mailstore/icinga-registered-backup-copy.sha256"
REPO = Path(__file__).resolve().parents[1]
ICINGA_KEYS = ("host", "url", "tls_name", "ca", "user", "password_secret")

_SSH_KEY = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) "
                      r"[A-Za-z0-9+/]+={0,3}( [A-Za-z0-9@._+-]+)?$")
_HOST_KEY = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) "
                       r"[A-Za-z0-9+/]+={0,3}$")
# A host name or an address (v4 or v6): goes into authorized_keys, ssh's command line and a
# known_hosts line unquoted.
_HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.:-]*$")
# Values of backup_copy_icinga go into a shell script unquoted: no quoting needed, ever.
_ICINGA_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_URL = re.compile(r"^https://[A-Za-z0-9.-]+(:[0-9]+)?/?$")


class BackupHostDataError(ValueError):
    """A datum of the off-host copy is unusable; the message names the key."""


def _hosts(value, key):
    if not isinstance(value, list) or not all(isinstance(v, str) and _HOST.match(v)
                                              for v in value):
        raise BackupHostDataError(f"{key}: {value!r} must be a list of host names or "
                                  "addresses")
    return value


def source_settings(data):
    """The mail server's side (pure): None when no backup host pulls, else
    {"keys", "sources", "repository"}; raises BackupHostDataError naming every bad key."""
    keys = data["backup_pull_keys"]
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise BackupHostDataError("backup_pull_keys: must be a list of SSH public key lines")
    problems = []
    bad = [k for k in keys if not _SSH_KEY.match(k.strip())]
    if bad:
        problems.append(f"backup_pull_keys: {bad[0][:40]!r}... is not one SSH public key line "
                        "(TYPE BASE64 [COMMENT], no options: the deploy adds them)")
    sources = data["backup_pull_from"]
    try:
        _hosts(sources, "backup_pull_from")
    except BackupHostDataError as exc:
        problems.append(str(exc))
    if keys and not sources:
        problems.append("backup_pull_from: empty, but backup_pull_keys names a key: list the "
                        "backup host's addresses (the key works from nowhere else)")
    if problems:
        raise BackupHostDataError("\n".join(problems))
    if not keys:
        return None
    return {"keys": [k.strip() for k in keys], "sources": sources,
            "repository": backup.settings(data)["repository"]}


def host_settings(data):
    """The backup host's side (pure): {"source", "host_keys", "directory", "schedule",
    "keep"}; raises BackupHostDataError naming every bad key."""
    problems = []
    source = data["backup_copy_source"]
    if not isinstance(source, str) or not _HOST.match(source):
        problems.append(f"backup_copy_source: {source!r} must be the mail server's host name "
                        "or address")
    host_keys = data["backup_copy_source_host_keys"]
    if not isinstance(host_keys, list) or not host_keys or not all(
            isinstance(k, str) and _HOST_KEY.match(k.strip()) for k in host_keys):
        problems.append("backup_copy_source_host_keys: must list the mail server's SSH host "
                        "keys, 'TYPE BASE64' each (ssh-keyscan SERVER, checked by hand)")
    directory = data["backup_copy_dir"]
    try:
        directory = backup._path(directory, "backup_copy_dir")
    except backup.BackupDataError as exc:
        problems.append(str(exc))
    schedule = data["backup_copy_schedule"]
    fields = schedule.split() if isinstance(schedule, str) else []
    if len(fields) != 5 or not all(backup._CRON_FIELD.match(f) for f in fields):
        problems.append(f"backup_copy_schedule: {schedule!r} must be the five time fields of "
                        "a cron line, e.g. '30 5 * * *'")
    keep = data["backup_copy_keep"]
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        problems.append(f"backup_copy_keep: {keep!r} must be a whole number >= 1 (copies "
                        "kept, one per night)")
    ages = {}
    for key in ("backup_copy_age_warning", "backup_copy_age_critical"):
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems.append(f"{key}: {value!r} must be a whole number of seconds >= 1")
        else:
            ages[key] = value
    if len(ages) == 2 and ages["backup_copy_age_warning"] > ages["backup_copy_age_critical"]:
        problems.append("backup_copy_age_warning: must not exceed backup_copy_age_critical")
    icinga = None
    try:
        icinga = _icinga(data["backup_copy_icinga"])
    except BackupHostDataError as exc:
        problems.append(str(exc))
    zone = data["icinga2_parent_zone"]
    if icinga is not None:
        # the master's zone, as the mail server's services have it (operations/monitoring.py)
        if isinstance(zone, str) and _ICINGA_NAME.match(zone):
            icinga["zone"] = zone
        else:
            problems.append(f"icinga2_parent_zone: {zone!r} is not a usable zone name")
    if problems:
        raise BackupHostDataError("\n".join(problems))
    return {"source": source, "host_keys": [k.strip() for k in host_keys],
            "directory": directory, "schedule": " ".join(fields), "keep": keep,
            "age_warning": ages["backup_copy_age_warning"],
            "age_critical": ages["backup_copy_age_critical"], "icinga": icinga}


def _icinga(value):
    """backup_copy_icinga checked: None, or the dict with every key (tls_name may be None)."""
    if value is None:
        return None
    key = "backup_copy_icinga"
    if not isinstance(value, dict) or set(value) - set(ICINGA_KEYS) or \
            set(ICINGA_KEYS) - set(value) - {"tls_name"}:
        raise BackupHostDataError(f"{key}: must be None or a dict with the keys "
                                  f"{', '.join(ICINGA_KEYS)} (tls_name may be left out)")
    value = {"tls_name": None, **value}
    problems = []
    for name in ("host", "user", "password_secret", "tls_name"):
        if (value[name] is not None or name != "tls_name") and not (
                isinstance(value[name], str) and _ICINGA_NAME.match(value[name])):
            problems.append(f"{key}[{name!r}]: {value[name]!r} is not a usable name")
    if not isinstance(value["url"], str) or not _URL.match(value["url"]):
        problems.append(f"{key}['url']: {value['url']!r} must be https://host[:port]")
    if not isinstance(value["ca"], str) or not value["ca"]:
        problems.append(f"{key}['ca']: {value['ca']!r} must name the master's CA (a PEM "
                        "file, path relative to the repository root)")
    if problems:
        raise BackupHostDataError("\n".join(problems))
    return {**value, "url": value["url"].rstrip("/")}


def icinga_material(conf):
    """(CA text, credentials file text) for `conf`'s backup_copy_icinga, read from the control
    machine (the CA relative to the repository, the password from the secrets directory);
    None without Icinga. Raises InventoryError naming the file."""
    icinga = conf["icinga"]
    if icinga is None:
        return None
    path = Path(icinga["ca"])
    path = path if path.is_absolute() else REPO / path
    try:
        ca = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError(f"backup_copy_icinga['ca']: cannot read {path}: "
                             f"{getattr(exc, 'strerror', None) or exc}") from None
    if "-----BEGIN CERTIFICATE-----" not in ca:
        raise InventoryError(f"backup_copy_icinga['ca']: {path} holds no PEM certificate")
    password = read_password(icinga["password_secret"])
    return ca, json.dumps({"username": icinga["user"], "password": password}) + "\n"


def check_icinga_material(data):
    """For the validator: the CA and the password secret of backup_copy_icinga are usable
    (a PLACEHOLDER CA path is the production rule's to name)."""
    conf = host_settings(data)
    if conf["icinga"] is not None and "PLACEHOLDER" not in conf["icinga"]["ca"]:
        icinga_material(conf)


# --- texts (pure) ---------------------------------------------------------------------------
def authorized_keys(conf):
    return staging.render("files/backup_host/authorized_keys.j2", keys=conf["keys"],
                          sources=conf["sources"], serve=SERVE)


def serve_script(conf):
    return staging.render("files/backup_host/mailstore-backup-serve.j2",
                          repository=conf["repository"], rrsync=RRSYNC, tag=SERVE_TAG,
                          wait=LOCK_WAIT, authorized_keys=AUTHORIZED_KEYS,
                          sudoers_name=PurePosixPath(SUDOERS).name,
                          mailstore=backup.MAILSTORE, view=SERVED_VIEW)


def sudoers(conf):
    return staging.render("files/backup_host/mailstore-backup-pull.sudoers.j2",
                          pull_user=PULL_USER, serve=SERVE)


def known_hosts(conf):
    return "".join(f"{conf['source']} {key}\n" for key in conf["host_keys"])


def job_script(conf):
    return staging.render("files/backup_host/mailstore-copy-job.j2",
                          job=JOB, user=COPY_USER, cron_name=PurePosixPath(CRON).name,
                          source=conf["source"], directory=conf["directory"], tag=TAG,
                          pull_user=PULL_USER, keep=conf["keep"], mailstore=backup.MAILSTORE,
                          ssh_key=SSH_KEY, known_hosts=KNOWN_HOSTS,
                          push=PUSH if conf["icinga"] else None, service=COPY_SERVICE)


def push_script(conf):
    """mailstore-push-copy-result: the check's result submitted to the master (no secret in
    it: the password is in the credentials file it names)."""
    icinga = conf["icinga"]
    return staging.render("files/backup_host/mailstore-push-copy-result.j2",
                          push=PUSH, job=JOB, user=COPY_USER, mailstore=backup.MAILSTORE,
                          host=icinga["host"], service=COPY_SERVICE, freshness=COPY_FRESHNESS,
                          url=icinga["url"], tls_name=icinga["tls_name"], ca=ICINGA_CA,
                          credentials=ICINGA_CREDENTIALS,
                          directory=conf["directory"], warning=conf["age_warning"],
                          critical=conf["age_critical"])


def description(conf):
    """The description `mailstore icinga register` reads on the backup host: one passive
    service on its Host object (pure)."""
    icinga = conf["icinga"]
    return {"host": icinga["host"],
            # no agent here: nothing runs an active check (the key is required, unused)
            "command_endpoint": icinga["host"],
            "mailstore": backup.MAILSTORE,
            "service_zone": icinga["zone"],
            "services": [{"name": COPY_SERVICE, "passive": True, "freshness": COPY_FRESHNESS,
                          "display_name": "mailstore off-host copy (pushed by the nightly "
                                          "copy job)"}]}


def cron_file(conf):
    return staging.render("files/backup_host/mailstore-copy.cron.j2",
                          schedule=conf["schedule"], user=COPY_USER, job=JOB, tag=TAG,
                          source=conf["source"], directory=conf["directory"])


# --- deploys --------------------------------------------------------------------------------
@deploy("Off-host copy: read-only pull access")
def pull_access():
    """On the mail server: the backup host's key may run a read-only rsync of the repository
    and nothing else. Does nothing while `backup_pull_keys` is empty."""
    conf = source_settings(host.data.dict())
    if conf is None:
        return
    apt.packages(name="rsync and sudo for the off-host copy", packages=["rsync", "sudo"])
    # ensure_home=False: pyinfra would chown the home to the user, the next operation back
    # to root, and every run would change both.
    server.user(name=f"User {PULL_USER} (the backup host's login)", user=PULL_USER,
                system=True, home=PULL_HOME, create_home=False, ensure_home=False,
                shell="/bin/sh")
    # Root-owned all the way: the login cannot change its own keys.
    files.directory(name="Its home", path=PULL_HOME, user="root", group="root", mode="755")
    files.directory(name="Its .ssh", path=f"{PULL_HOME}/.ssh", user="root", group="root",
                    mode="755")
    files.put(name="The backup host's key, forced to a read-only copy",
              src=io.StringIO(authorized_keys(conf)), dest=AUTHORIZED_KEYS, user="root",
              group="root", mode="644")
    files.put(name="mailstore-backup-serve (rrsync -ro under the repository's lock)",
              src=io.StringIO(serve_script(conf)), dest=SERVE, user="root", group="root",
              mode="755")
    staging.files(
        name="sudoers: the pull user runs exactly mailstore-backup-serve",
        config_files=[staging.ConfigFile(SUDOERS, sudoers(conf), mode="440")],
        stage=f"{staging.STAGING_ROOT}/backup-pull-sudoers",
        check=f"visudo -cf {{stage}}/{PurePosixPath(SUDOERS).name}")


@deploy("Off-host copy: the backup host")
def copies():
    """On the backup host: the copying user and its key, the copies' directory, the nightly
    job (copy, prune, verify) and its cron line. mailstore itself: operations/mailstore.py."""
    conf = host_settings(host.data.dict())
    apt.packages(name="rsync, ssh and cron for the nightly copy",
                 packages=["rsync", "openssh-client", "cron"])
    server.user(name=f"User {COPY_USER} (owns the copies)", user=COPY_USER, system=True,
                home=COPY_HOME, create_home=False, shell="/bin/sh")
    files.directory(name="Its home", path=COPY_HOME, user=COPY_USER, group=COPY_USER,
                    mode="755")
    files.directory(name="Its .ssh", path=f"{COPY_HOME}/.ssh", user=COPY_USER,
                    group=COPY_USER, mode="700")
    # Made here, once: the private key never leaves this host.
    if host.get_fact(File, path=SSH_KEY) is None:
        server.shell(name="Its SSH key (made once; the mail server gets the .pub)",
                     commands=[f"su -s /bin/sh {COPY_USER} -c \"ssh-keygen -q -t ed25519 "
                               f"-N '' -C {COPY_USER}@$(hostname) -f {SSH_KEY}\""])
    files.put(name="The mail server's host keys, its only known host",
              src=io.StringIO(known_hosts(conf)), dest=KNOWN_HOSTS, user=COPY_USER,
              group=COPY_USER, mode="644")
    files.directory(name="The copies' directory", path=conf["directory"], user=COPY_USER,
                    group=COPY_USER, mode="755")
    files.put(name="mailstore-copy-job (copy, prune, verify)",
              src=io.StringIO(job_script(conf)), dest=JOB, user="root", group="root",
              mode="755", create_remote_dir=False)
    files.put(name="Nightly copy in /etc/cron.d", src=io.StringIO(cron_file(conf)), dest=CRON,
              user="root", group="root", mode="644", create_remote_dir=False)
    _monitoring(conf)


def _monitoring(conf):
    """The copy's service on the master and the push the job runs; with backup_copy_icinga
    None, the push command is removed (the job no longer calls it)."""
    material = icinga_material(conf)
    if material is None:
        files.file(name="No Icinga push (backup_copy_icinga is None)", path=PUSH,
                   present=False)
        return
    ca_text, credentials_text = material
    icinga = conf["icinga"]
    connection = {"url": icinga["url"], "tls_name": icinga["tls_name"]}
    # The job runs as the copies' user and pushes: the credentials are its group's (0640).
    files.directory(name="Icinga config directory", path=ICINGA_DIR, user="root",
                    group=COPY_USER, mode="750")
    files.directory(name="mailstore state directory",
                    path=str(PurePosixPath(REGISTERED_MARKER).parent), mode="755")
    files.put(name="The master's API CA", src=io.StringIO(ca_text), dest=ICINGA_CA,
              user="root", group="root", mode="644")
    secret_file.upload(name="This host's Icinga API credentials", dest=ICINGA_CREDENTIALS,
                       content=credentials_text, user="root", group=COPY_USER, mode="640")
    description_text = json.dumps(description(conf), indent=2, sort_keys=True) + "\n"
    files.put(name="Icinga description: the copy's passive service",
              src=io.StringIO(description_text), dest=ICINGA_DESCRIPTION, user="root",
              group="root", mode="644")
    files.put(name="mailstore-push-copy-result (the job's result to Icinga)",
              src=io.StringIO(push_script(conf)), dest=PUSH, user="root", group="root",
              mode="755", create_remote_dir=False)
    wanted = hashlib.sha256("\0".join(
        [description_text, credentials_text, ca_text, json.dumps(connection)]
    ).encode()).hexdigest()
    # No --prune: this host declares one service, and nothing else on the master is its own.
    icinga_registration.register(
        f"Register the off-host copy's service on the master ({icinga['url']})", connection,
        ICINGA_CA, ICINGA_CREDENTIALS, ICINGA_DESCRIPTION, REGISTERED_MARKER, wanted)
