"""Backups on the server: the repository on `backup_repository`, its key, and the nightly job.

What the deploy leaves on the server (all from inventory):

- `backup_key_file` (0600, root): the repository's key, from the secret `backup_key_secret`
  (64 hex digits). Uploaded as a file, never in a command line. Without it nothing in the
  repository can be read: keep the secret's copy off the server (README, "Backups").
- `backup_repository`, created by `mailstore backup init` when it holds no repository yet
  (its `config.json` is missing); an existing one is never touched by the deploy. When the
  uploaded key changed, the deploy proves that the repository opens with it and fails
  otherwise, rather than leave a job that fails every night.
- `/usr/local/sbin/mailstore-backup-job`: run, verify (a sample re-read weekly), prune, push
  the result to Icinga (`mailstore-push-backup-result`, operations/monitoring.py), all logged
  to syslog (tag `mailstore-backup`); exit 0 only if every step succeeded.
- `/etc/cron.d/mailstore-backup`: runs the job at `backup_schedule` under nice/ionice.
"""
import io
import re
from pathlib import PurePosixPath

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.operations import apt, files
from pyinfra.operations import server as shell_ops  # `server` is this module's deploy

from operations.secrets import read_backup_key
from operations import secret_file, staging

MAILSTORE = "/usr/local/bin/mailstore"
JOB = "/usr/local/sbin/mailstore-backup-job"
CRON = "/etc/cron.d/mailstore-backup"
LOCK = "/run/lock/mailstore-backup-job.lock"
TAG = "mailstore-backup"
# Installed by operations/monitoring.py; the job pushes its result through it when present.
PUSH = "/usr/local/sbin/mailstore-push-backup-result"

# Values go into a shell script and a cron line unquoted: no character the shell reads.
_PATH = re.compile(r"^/[A-Za-z0-9._/+-]*$")
_DATABASE = re.compile(r"^[A-Za-z0-9_]+$")
# One cron time field: numbers, ranges, steps, lists, `*`, or a three-letter name.
_CRON_FIELD = re.compile(r"^(\*|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?"
                         r"(,(\*|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?)*$")


# What a rebuild needs that no deploy can make again, added to every snapshot besides
# `backup_include`: the SSH host keys (the published SSHFP records name them), the Icinga
# agent's certificate and key (signed by the master), the self-service API's config and keys,
# and (with dkim_signing) the DKIM signing key, whose public half is published in DNS. The
# same paths as operations/dkim.py KEY_ROOT, operations/icinga2_agent.py CERTS and
# operations/selfservice_api.py ETC (a unit test holds them equal); named here so that this
# module imports no sibling.
REBUILD_MATERIAL = ["/etc/ssh", "/var/lib/icinga2/certs", "/etc/cacert-selfservice-api"]
DKIM_KEYS = "/etc/opendkim/keys"


class BackupDataError(ValueError):
    """A backup datum is unusable; the message names the key."""


def _path(value, key):
    if not isinstance(value, str) or not _PATH.match(value) or ".." in value.split("/") \
            or value == "/":
        raise BackupDataError(f"{key}: {value!r} must be an absolute path (not /) of letters, "
                              "digits and ._/+-")
    return value.rstrip("/")


def _count(value, key):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BackupDataError(f"{key}: {value!r} must be a whole number >= 0")
    return value


def settings(data):
    """Everything the job needs, checked (pure; raises BackupDataError naming the key)."""
    repository = _path(data["backup_repository"], "backup_repository")
    mail_root = _path(data["mail_root"], "mail_root")
    if repository == mail_root or repository.startswith(mail_root + "/") \
            or mail_root.startswith(repository + "/"):
        raise BackupDataError(f"backup_repository: {repository} must not be inside mail_root "
                              f"({mail_root}) nor contain it")
    if not isinstance(data["backup_encrypt"], bool):
        raise BackupDataError("backup_encrypt: must be True or False")
    key_file = _path(data["backup_key_file"], "backup_key_file") \
        if data["backup_encrypt"] else None
    schedule = data["backup_schedule"]
    fields = schedule.split() if isinstance(schedule, str) else []
    if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
        raise BackupDataError(f"backup_schedule: {schedule!r} must be the five time fields of "
                              "a cron line, e.g. '30 2 * * *'")
    weekday = data["backup_verify_weekday"]
    if isinstance(weekday, bool) or weekday not in range(1, 8):
        raise BackupDataError(f"backup_verify_weekday: {weekday!r} must be 1 (Monday) .. "
                              "7 (Sunday)")
    sample = data["backup_verify_sample"]
    if isinstance(sample, bool) or not isinstance(sample, (int, float)) \
            or not 0 < sample <= 1:
        raise BackupDataError(f"backup_verify_sample: {sample!r} must be a fraction in (0, 1]")
    keep = data["backup_keep"]
    if not isinstance(keep, dict) or set(keep) != {"daily", "weekly", "monthly"}:
        raise BackupDataError("backup_keep: must be {'daily': N, 'weekly': N, 'monthly': N}")
    keep = {k: _count(v, f"backup_keep[{k!r}]") for k, v in keep.items()}
    if not any(keep.values()):
        raise BackupDataError("backup_keep: all zero would prune every snapshot")
    include = data["backup_include"]
    if not isinstance(include, list):
        raise BackupDataError("backup_include: must be a list of absolute paths")
    include = [_path(p, f"backup_include[{i}]") for i, p in enumerate(include)]
    if key_file:
        for path in include:
            if key_file == path or key_file.startswith(path + "/"):
                raise BackupDataError(f"backup_include: {path} holds backup_key_file "
                                      f"({key_file}); the key must never be stored in the "
                                      "repository it opens")
    material = REBUILD_MATERIAL + ([DKIM_KEYS] if data.get("dkim_signing") else [])
    include += [p for p in material if p not in include]
    if not isinstance(data["backup_mysql_dump"], bool):
        raise BackupDataError("backup_mysql_dump: must be True or False")
    database = data["mysql_database"]
    if data["backup_mysql_dump"] and not (isinstance(database, str)
                                          and _DATABASE.match(database)):
        raise BackupDataError(f"mysql_database: {database!r} is not a plain database name")
    return {
        "repository": repository, "mail_root": mail_root, "key_file": key_file,
        "schedule": " ".join(fields), "verify_weekday": weekday, "sample": sample,
        "keep": keep, "include": include,
        "mysql_dump": database if data["backup_mysql_dump"] else None,
    }


def job_script(conf):
    """The text of the job script for `settings()` (pure)."""
    run_args = [f"--include {p}" for p in conf["include"]]
    if conf["mysql_dump"]:
        run_args.append(f"--mysql-dump {conf['mysql_dump']}")
    prune_args = " ".join(f"--keep-{k} {conf['keep'][k]}" for k in ("daily", "weekly", "monthly"))
    return staging.render("files/backup/mailstore-backup-job.j2",
                          job=JOB, tag=TAG, mailstore=MAILSTORE, repository=conf["repository"],
                          mail_root=conf["mail_root"], push=PUSH, lock=LOCK,
                          key_file=conf["key_file"], run_args=run_args, prune_args=prune_args,
                          verify_weekday=conf["verify_weekday"], sample=conf["sample"])


def cron_file(conf):
    """The text of /etc/cron.d/mailstore-backup (pure)."""
    return staging.render("files/backup/mailstore-backup.cron.j2",
                          schedule=conf["schedule"], job=JOB, tag=TAG,
                          repository=conf["repository"])


@deploy("Backups")
def server():
    """The backup repository, its key, and the nightly job that fills, checks and prunes it."""
    conf = settings(host.data.dict())
    key_args = f" --key-file {conf['key_file']}" if conf["key_file"] else ""

    # flock, ionice (util-linux) and logger (bsdutils) are Essential in every Debian release.
    apt.packages(name="cron for the nightly job", packages=["cron"])
    key = None
    if conf["key_file"]:
        text = read_backup_key(host.data.backup_key_secret)
        # Only made if missing; its owner and mode are left alone (and the uploads below do not
        # touch them either): it may be shared, e.g. /etc/mailstore or /etc/ssl/private.
        files.directory(name="Directory of the backup key",
                        path=str(PurePosixPath(conf["key_file"]).parent))
        # Never readable by others, not even for a moment, and never shown (secret_file).
        key = secret_file.upload(name="Backup key (0600, root)", content=text,
                                 dest=conf["key_file"], user="root", group="root", mode="600")
    # The repository itself is 0700 (init makes it so); its parent may be shared (/srv).
    files.directory(name="Directory holding the backup repository",
                    path=str(PurePosixPath(conf["repository"]).parent))
    if host.get_fact(File, path=f"{conf['repository']}/config.json") is None:
        shell_ops.shell(name=f"Create the backup repository {conf['repository']}",
                        commands=[f"{MAILSTORE} backup init {conf['repository']}{key_args}"])
    elif key is not None:
        # `find` decrypts the catalog's headers: it fails, naming the key, on a wrong one.
        shell_ops.shell(name="The existing backup repository opens with the uploaded key",
                        commands=[f"{MAILSTORE} backup find {conf['repository']}{key_args} "
                                  "--limit 1 >/dev/null"],
                        _if=key.did_change)
    files.put(name="mailstore-backup-job (run, verify, prune, push)",
              src=io.StringIO(job_script(conf)), dest=JOB, user="root", group="root",
              mode="755", create_remote_dir=False)
    files.put(name="Nightly backup in /etc/cron.d", src=io.StringIO(cron_file(conf)),
              dest=CRON, user="root", group="root", mode="644", create_remote_dir=False)
