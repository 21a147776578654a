"""Rebuilding the container from backups: what Infra02's state must be, and the steps.

`python -m operations.rebuild INVENTORY --from REPO` (operations/rebuild.py) makes the
container anew from this repository, the secrets directory and a backup repository REPO
on Infra02 (a local copy, or the backup host's copy made available there). `--rehearse`
does the same into a scratch container `<name>-rehearsal` that takes over no address.

Before anything changes, Infra02's state is read (`facts_command`, `parse_facts`) and the
repository's config and catalog are fetched to the control machine, where mailstore opens
them with the secret key (`repository_problems`): `check` lists every problem at once (a
living container, a data volume that is not empty, a repository that is missing, does not
open with the key or lacks the snapshot). Then `plan` gives the steps, in this order:

- (rehearsal) a stopped earlier rehearsal and its scratch directory are removed;
- the container: pyinfra `--limit infra02` on inventories/rebuild.py (with a rehearsal's
  data), which creates and starts it;
- a main.cf that defers everything is written into its rootfs before Postfix is installed
  (EARLY_MAIN_CF: the package's own would answer 5xx until the deploy configures it);
- the repository is copied into the new container (to `backup_repository`): the deploy
  then finds it, checks the key against it, and the nightly job goes on with it;
- the new container's fresh SSH host keys are read from its rootfs (on Infra02) into a
  known_hosts file for the first deploy (as the lab does): the backed-up keys come back
  with the restore, and the second deploy finds them in the inventory's own known_hosts;
- the first deploy, `--limit email` on inventories/rebuild.py: everything, with
  postfix_inbound_hold (every RCPT 450, nothing bounced, local delivery queued);
- extras: Dovecot and the self-service API stopped, `mailstore backup restore --extras`
  into a 0700 directory, the `cacertusers` dump loaded as root over the socket, then the
  DKIM keys, SSH host keys (ssh restarted), the Icinga agent's certificate (not in a
  rehearsal: its agent stays stopped) and the self-service API's config put back;
- mail: `mailstore backup restore REPO SNAPSHOT mail_root` (UIDs, UIDVALIDITY, flags,
  sieve scripts, owner and mode as they were);
- a rebuild: the second deploy with the given inventory (the hold ends: main.cf as always,
  Postfix reloaded, Dovecot started), the queue flushed, then the status check (the gate);
- a rehearsal: the restored host keys read for the checks' SSH, Dovecot started and asked
  for every restored user's messages, the checks that apply to a container that does not
  serve (Icinga's agent stays stopped); the scratch container is stopped (and
  with --cleanup destroyed, its scratch directory removed).

Pure functions over plain data: each script step is a bash script run on Infra02 (handover's
`bash()`); its lines `restored KEY VALUE` and `restored-json {...}` are what was restored.
"""
import base64
import posixpath
import re
import shlex
from dataclasses import dataclass

from operations import lxc_config, rebuild_inventory
from operations.handover import (ADMIN, CLIENT, DKIM_KEYS, GRANTS_AGAIN, ICINGA_CERTS,
                                 LXC_PATH, SANDBOX_LINE, SELFSERVICE_UNIT, attach, no_symlinks,
                                 stop_container)

SSH_KEYS = "/etc/ssh"
SELFSERVICE_CONFIG = "/etc/cacert-selfservice-api"
# What a snapshot's catalog is, in a repository and in an off-host copy (sealed: the
# manifest catalog.sealed and its chunk files in SEALED_CHUNKS/, fetched as one tar).
CATALOG_FILES = ("catalog.sqlite", "catalog.sqlite-wal", "catalog.sealed")
SEALED_CHUNKS = "sealed"
_SEALED_CHUNK = re.compile(r"^sealed/[0-9a-f]{32}$")


@dataclass(frozen=True)
class Step:
    """One step. kind "script": `script` runs on Infra02; "pyinfra": the deploy `--limit
    limit`, on the rebuild's inventory (`derived`) or the given one; "known_hosts": the new
    container's host keys read into the first deploy's known_hosts; "gate": the status
    check (a rebuild) or the checks that apply (a rehearsal). `held`: mail is held then."""
    name: str
    kind: str
    script: str = ""
    limit: str = ""
    derived: bool = True
    held: bool = False


@dataclass(frozen=True)
class Target:
    """What a rebuild (or a rehearsal) makes, from the given inventory's merged data."""
    name: str               # the container
    serving: str            # the inventory's container_name
    volume_host_path: str   # the data directory on Infra02
    rehearse: bool
    repository: str         # --from, on Infra02
    snapshot: str


def target(infra02_data, repository, snapshot, rehearse):
    name = infra02_data["container_name"]
    return Target(rebuild_inventory.name_of(name, rehearse), name,
                  rebuild_inventory.scratch_path(name) if rehearse
                  else infra02_data["data_volume_host_path"],
                  rehearse, repository.rstrip("/") or "/", snapshot)


_PLAIN_PATH = re.compile(r"^/[A-Za-z0-9._/+-]*$")
_SNAPSHOT = re.compile(r"^[A-Za-z0-9._-]+$")


def check_arguments(repository, snapshot):
    """Every problem of --from and --snapshot."""
    problems = []
    if not _PLAIN_PATH.match(repository) or ".." in repository.split("/") or \
            repository.rstrip("/") == "":
        problems.append(f"--from {repository}: must be an absolute path on Infra02 (not /) "
                        "of A-Z a-z 0-9 . _ / + -")
    if not _SNAPSHOT.match(snapshot):
        problems.append(f"--snapshot {snapshot}: not a snapshot id or `latest`")
    return problems


def facts_command(t, repository_disk=None, lxc_path=LXC_PATH):
    """A shell command on Infra02 that prints what `parse_facts` reads. `repository_disk`:
    where the repository goes when it lies on a disk the container mounts (its contents
    are counted unless it is --from itself)."""
    lines = []
    names = [t.name] + ([f"{t.serving}-next"] if t.rehearse else [])
    for n in names:
        d = shlex.quote(f"{lxc_path}/{n}")
        lines.append(f"if [ -e {d} ]; then echo \"container {n} $(lxc-info -P "
                     f"{shlex.quote(lxc_path)} -n {n} -s -H 2>/dev/null || echo UNKNOWN)\"; fi")
    volume = shlex.quote(t.volume_host_path)
    lines.append(f"echo \"volume_entries $(find {volume} -mindepth 1 -maxdepth 1 "
                 "! -name lost+found 2>/dev/null | wc -l)\"")
    repo = shlex.quote(t.repository)
    if repository_disk:
        disk = shlex.quote(repository_disk)
        lines.append(f"if [ -d {disk} ] && [ ! {disk} -ef {repo} ]; then echo \"disk_entries "
                     f"$(ls -A {disk} | wc -l)\"; fi")
    lines.append(f"if [ -d {repo} ]; then echo repository yes; fi")
    lines.append(f"if [ -f {repo}/config.json ]; then echo \"config $(base64 -w0 < "
                 f"{repo}/config.json)\"; fi")
    for name in CATALOG_FILES:
        lines.append(f"if [ -f {repo}/{name} ]; then echo 'catalog {name}'; fi")
    lines.append(f"if [ -d {repo}/{SEALED_CHUNKS} ]; then echo 'catalog {SEALED_CHUNKS}'; fi")
    return "; ".join(lines) + "; true"


def catalog_command(repository, name):
    """The command printing one catalog file of the repository, base64 (SEALED_CHUNKS: a
    tar of that directory)."""
    if name == SEALED_CHUNKS:
        return f"tar -C {shlex.quote(repository)} -cf - {SEALED_CHUNKS} | base64"
    return f"base64 < {shlex.quote(f'{repository}/{name}')}"


def parse_facts(output):
    """{"containers": {name: state}, "volume_entries": int, "repository": bool,
    "config": bytes or None, "catalog": [file names], "disk_entries": int}."""
    facts = {"containers": {}, "volume_entries": 0, "repository": False, "config": None,
             "catalog": [], "disk_entries": 0}
    for line in output.splitlines():
        word, _, rest = line.partition(" ")
        rest = rest.strip()
        if word == "container":
            name, _, state = rest.partition(" ")
            facts["containers"][name] = state or "UNKNOWN"
        elif word in ("volume_entries", "disk_entries") and rest.isdigit():
            facts[word] = int(rest)
        elif word == "repository":
            facts["repository"] = True
        elif word == "config":
            facts["config"] = base64.b64decode(rest)
        elif word == "catalog":
            facts["catalog"].append(rest)
    return facts


def check(t, facts, email_data):
    """Every problem of Infra02's state for the rebuild `t`, one line each (the repository's
    key and snapshot: `repository_problems`). `email_data`: the email host's merged data."""
    problems = []
    state = facts["containers"].get(t.name)
    if state is not None and not t.rehearse:
        problems.append(
            f"container {t.name} exists ({state}): a rebuild never overwrites a container; "
            f"once its data is safe destroy it deliberately (lxc-destroy -n {t.name}), or "
            f"prove the backups without touching it: --rehearse")
    if state is not None and t.rehearse and state != "STOPPED":
        problems.append(f"container {t.name} is {state}: a rehearsal runs or was left "
                        f"running; stop it (lxc-stop -n {t.name}): the next rehearsal "
                        "replaces a stopped one")
    successor = facts["containers"].get(f"{t.serving}-next")
    if t.rehearse and successor == "RUNNING":
        problems.append(f"{t.serving}-next runs with successor_net's address, which the "
                        "rehearsal uses too: rehearse after the upgrade's cut-over, or stop it")
    if facts["volume_entries"] and not t.rehearse:
        problems.append(f"data volume {t.volume_host_path} on Infra02 is not empty "
                        f"({facts['volume_entries']} entries): a rebuild restores into an "
                        "empty volume; move what is there aside first, or --rehearse")
    if facts.get("disk_entries") and not t.rehearse:
        disk = repository_in_container(email_data)
        problems.append(f"{disk} (backup_repository's disk) is not empty: a rebuild never "
                        f"writes over a repository there; give it as --from, or move it aside")
    if not facts["repository"]:
        problems.append(f"--from {t.repository}: no such directory on Infra02")
    elif facts["config"] is None:
        problems.append(f"--from {t.repository}: not a mailstore backup repository "
                        "(no config.json)")
    elif not any(name in facts["catalog"] for name in ("catalog.sqlite", "catalog.sealed")):
        problems.append(f"--from {t.repository}: holds no catalog (catalog.sqlite, or "
                        "catalog.sealed in an off-host copy)")
    if not email_data.get("backup_encrypt", True) and facts["config"] and \
            b'"encryption": "none"' not in facts["config"]:
        problems.append(f"--from {t.repository} is encrypted but backup_encrypt is False: "
                        "the deploy would install no key to restore it with")
    return problems


def repository_problems(t, files, key_file, directory):
    """Problems opening the repository's `files` ({name: bytes}: config.json and the
    catalog, written into the empty 0700 `directory`) with `key_file`, and finding the
    snapshot in it. [] when the key opens it and the snapshot is there."""
    import os

    from mailstore import backup
    from mailstore.backup import catalog
    # Not the face's list_snapshots: it reads the catalog without the key; opening the
    # repository with need_key checks the key (and config.json's authentication) too.
    from mailstore.backup.repository import Repository

    for name, data in files.items():
        if name == SEALED_CHUNKS:
            _write_chunks(directory, data)
            continue
        with open(os.open(os.path.join(directory, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                          0o600), "wb") as f:
            f.write(data)
    try:
        with Repository(directory, key_file=key_file, readonly=True) as repo:
            snapshots = catalog.snapshots(repo.db)
    except backup.BackupError as exc:
        return [f"--from {t.repository}: {str(exc).replace(directory, t.repository)}"]
    if not snapshots:
        return [f"--from {t.repository}: holds no snapshot yet"]
    if t.snapshot != "latest" and t.snapshot not in [s["id"] for s in snapshots]:
        return [f"--snapshot {t.snapshot}: not in {t.repository} (newest: "
                f"{snapshots[-1]['id']}; `mailstore backup list` lists them)"]
    return []


def _write_chunks(directory, data):
    """The sealed catalog's chunk files from the tar `data` into `directory`/sealed: only
    regular files named as chunks are (anything else in the tar is not written)."""
    import io
    import os
    import tarfile

    os.mkdir(os.path.join(directory, SEALED_CHUNKS), 0o700)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar:
                if not (member.isfile() and _SEALED_CHUNK.match(member.name)):
                    continue
                with open(os.open(os.path.join(directory, member.name), os.O_WRONLY |
                                  os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                    f.write(tar.extractfile(member).read())
    except (tarfile.TarError, FileExistsError):
        pass    # what is missing then, the sealed catalog's check names


def repository_in_container(data):
    """The host path of `backup_repository` when it lies on one of the container's mounts
    (a separate disk, which outlives the container), else None (it goes into the rootfs)."""
    path = data["backup_repository"].rstrip("/")
    for mount in data["container_mounts"]:
        inside = "/" + lxc_config.mount_target(mount["target"])
        if path == inside or path.startswith(inside + "/"):
            return mount["source"].rstrip("/") + path[len(inside):]
    return None


def plan(t, email_data, lxc_path=LXC_PATH, previous_rehearsal=False):
    """The steps of the rebuild `t` (check() found no problem). `email_data`: the email
    host's merged data as the first deploy has it (for a rehearsal: derived)."""
    name = t.name
    rootfs = f"{lxc_path}/{name}/rootfs"
    repository = email_data["backup_repository"].rstrip("/")
    # The key the first deploy installed from the secrets directory (a file: never on a
    # command line); an unencrypted repository needs none.
    key = f"--key-file {email_data['backup_key_file']}" if email_data["backup_encrypt"] else ""
    steps = []
    if t.rehearse and previous_rehearsal:
        steps.append(Step(f"remove the previous rehearsal {name}", "script", script=(
            f"lxc-destroy -n {name}\nrm -rf {shlex.quote(t.volume_host_path)}\n"
            f"echo 'removed {name} and {t.volume_host_path}'")))
    steps.append(Step(f"container {name} (Infra02)", "pyinfra", limit="infra02"))
    steps.append(Step("Postfix held before its package is installed", "script",
                      script=_postfix_held_early(rootfs)))
    steps.append(Step(f"backup repository {t.repository} -> {name}", "script",
                      script=_copy_repository(t, email_data, rootfs)))
    steps.append(Step(f"SSH host keys of the new {name} (for the first deploy)",
                      "known_hosts", script=f"cat {rootfs}/etc/ssh/ssh_host_*_key.pub"))
    steps.append(Step("deploy with the inbound hold (RCPT 450)", "pyinfra", limit="email",
                      held=True))
    steps.append(Step("restore database, keys and configs", "script", held=True,
                      script=attach(name, _restore_extras(t, email_data, repository, key))))
    steps.append(Step(f"restore mail into {email_data['mail_root']}", "script", held=True,
                      script=attach(name, _restore_mail(t, email_data, repository, key))))
    if t.rehearse:
        # The checks reach it over SSH again: it has the backed-up host keys now.
        steps.append(Step(f"SSH host keys of {name} as restored (for the checks)",
                          "known_hosts", script=f"cat {rootfs}/etc/ssh/ssh_host_*_key.pub"))
        steps.append(Step("Dovecot reads the restored mail", "script",
                          script=attach(name, _dovecot_reads(email_data))))
        steps.append(Step("checks (rehearsal)", "gate"))
    else:
        steps.append(Step("deploy without hold", "pyinfra", limit="email", derived=False,
                          held=True))
        steps.append(Step("flush the queue", "script",
                          script=attach(name, "postqueue -f && sleep 2 && "
                                              "(mailq | tail -n 1)")))
        steps.append(Step("status (gate)", "gate"))
    return steps


def finish_rehearsal(t, cleanup):
    """The rehearsal's last step: the scratch container stopped (destroyed with `cleanup`,
    its scratch directory too); run whatever happened before."""
    name = t.name
    # line by line: the drain that stop_container runs in the container is a script of lines
    script = (f"if [ -e {LXC_PATH}/{name} ]; then\n{stop_container(name)}\nfi\n"
              f"echo '{name} stopped'")
    if cleanup:
        script += (f"\nif [ -e {LXC_PATH}/{name} ]; then lxc-destroy -n {name}; fi\n"
                   f"rm -rf {shlex.quote(t.volume_host_path)}\n"
                   f"echo '{name} and {t.volume_host_path} removed'")
    return Step(f"{'remove' if cleanup else 'stop'} {name}", "script", script=script)


# Debian's postfix package starts Postfix as soon as it is installed, with the main.cf it
# finds, or else one of its own ("Internet Site"), which would answer 554 (relay access
# denied) for the mail domain until the deploy's own configuration replaces it. A main.cf
# is kept by the package: this one answers every RCPT 450 and soft_bounce turns any other
# 5xx into a 4xx, until the first deploy writes its held configuration.
EARLY_MAIN_CF = """\
# Written by `python -m operations.rebuild` before Postfix was installed; the deploy
# replaces it (files/postfix/main.cf.j2, with postfix_inbound_hold while the restore runs).
soft_bounce = yes
smtpd_relay_restrictions = defer
smtpd_recipient_restrictions = defer
defer_transports = local lmtp smtp
"""


def _postfix_held_early(rootfs):
    path = f"{rootfs}/etc/postfix/main.cf"
    data = base64.b64encode(EARLY_MAIN_CF.encode()).decode()
    return "\n".join([
        no_symlinks(rootfs, ["/etc/postfix/main.cf"]),
        f"if [ -e {path} ]; then echo 'Postfix is configured already'; exit 0; fi",
        f"mkdir -p {rootfs}/etc/postfix && echo {data} | base64 -d > {path}.rebuild && "
        f"chmod 644 {path}.rebuild && mv {path}.rebuild {path} && echo 'main.cf: RCPT 450'",
    ])


def _copy_repository(t, data, rootfs):
    path = data["backup_repository"].rstrip("/")
    on_mount = None if t.rehearse else repository_in_container(data)
    dest = on_mount or f"{rootfs}{path}"
    quoted_from, quoted_dest = shlex.quote(t.repository), shlex.quote(dest)
    lines = [] if on_mount else [no_symlinks(rootfs, [path])]
    lines.append(f"if [ {quoted_from} -ef {quoted_dest} ]; then echo 'in place already: "
                 f"{dest}'; exit 0; fi")
    lines.append(f"if [ -n \"$(ls -A {quoted_dest} 2>/dev/null)\" ]; then echo '{dest} is "
                 "not empty: give it as --from, or move it aside' >&2; exit 1; fi")
    # Owned like the new rootfs' own root directory: root inside the container, also when
    # its ids are mapped (whoever owned the copy on Infra02).
    lines.append(f"mkdir -p {quoted_dest} && chmod 700 {quoted_dest} && "
                 f"cp -a {quoted_from}/. {quoted_dest}/ && "
                 f"chown -R --reference={shlex.quote(rootfs)} {quoted_dest} && "
                 # An off-host copy's files are read-only; unseal and the job write there.
                 f"chmod -R u+w {quoted_dest} && "
                 f"echo \"restored repository_bytes $(du -sb {quoted_dest} | cut -f1)\"")
    return "\n".join(lines)


def _restore_extras(t, data, repository, key):
    database = data["mysql_database"]
    snapshot = shlex.quote(t.snapshot)
    lines = [
        "set -eu; umask 077",
        # Nothing may write mail or accounts while they come back.
        f"systemctl stop dovecot; if systemctl cat {SELFSERVICE_UNIT} >/dev/null 2>&1; then "
        f"systemctl stop {SELFSERVICE_UNIT}; fi",
        # An off-host copy holds its catalog sealed: the nightly job needs it open again.
        f"if [ ! -f {repository}/catalog.sqlite ]; then mailstore backup unseal {repository} "
        f"{key}; fi",
        "d=$(mktemp -d /root/rebuild.XXXXXX); trap 'rm -rf \"$d\"' EXIT",
        f"mailstore backup restore {repository} {snapshot} \"$d\" --extras {key} "
        "--quiet",
        "echo \"restored extras_files $(find \"$d\" -type f | wc -l)\"",
    ]
    if data["backup_mysql_dump"]:
        lines += [
            # sh has no pipefail: a missing dump would load nothing, silently.
            f"if [ ! -s \"$d/mysql/{database}.sql\" ]; then echo 'the snapshot holds no dump "
            f"of {database}' >&2; exit 1; fi",
            f"for i in $(seq 150); do {ADMIN} --silent ping >/dev/null 2>&1 && break; "
            "sleep 0.2; done",
            f"sed -e {shlex.quote(SANDBOX_LINE)} \"$d/mysql/{database}.sql\" | "
            f"{CLIENT} {database}",
            GRANTS_AGAIN,
            f"echo \"restored database_users $({CLIENT} -N -e 'SELECT COUNT(*) FROM users' "
            f"{database})\"",
        ]
    lines += [
        _put_back(DKIM_KEYS, "opendkim:opendkim", "systemctl try-restart opendkim",
                  "dkim_keys"),
        f"if [ -d \"$d{SSH_KEYS}\" ]; then cp -p \"$d{SSH_KEYS}\"/ssh_host_* {SSH_KEYS}/ && "
        "systemctl restart ssh && echo \"restored ssh_host_keys $(ls \"$d/etc/ssh\" | "
        "grep -c '^ssh_host_.*_key$')\"; fi",
    ]
    if not t.rehearse:
        # A rehearsal's agent stays stopped: the master knows one endpoint of this name.
        lines.append(_put_back(ICINGA_CERTS, "nagios:nagios", "systemctl try-restart icinga2",
                               "icinga_certificate"))
    lines.append(f"if [ -d \"$d{SELFSERVICE_CONFIG}\" ]; then mkdir -p {SELFSERVICE_CONFIG} && "
                 f"cp -a \"$d{SELFSERVICE_CONFIG}\"/. {SELFSERVICE_CONFIG}/ && echo \"restored selfservice_files $(find "
                 f"\"$d{SELFSERVICE_CONFIG}\" -type f | wc -l)\"; fi")
    # The API writes accounts only: back now that they are.
    lines.append(f"if systemctl cat {SELFSERVICE_UNIT} >/dev/null 2>&1; then "
                 f"systemctl restart {SELFSERVICE_UNIT}; fi")
    return "\n".join(lines)


def _put_back(path, owner, then, label):
    """Replace `path` by its restored copy below $d, owned by `owner` (the packages' uids
    may differ from the old container's), then run `then`."""
    return (f"if [ -d \"$d{path}\" ]; then rm -rf {path} && mkdir -p {posixpath.dirname(path)} "
            f"&& cp -a \"$d{path}\" {path} && chown -R {owner} {path} && {then} && "
            f"echo \"restored {label} $(find {path} -type f | wc -l)\"; fi")


def _restore_mail(t, data, repository, key):
    root = data["mail_root"]
    return "\n".join([
        "set -eu",
        "systemctl stop dovecot",
        f"out=$(mailstore backup restore {repository} {shlex.quote(t.snapshot)} {root} "
        f"{key} --json)",
        "echo \"restored-json $(printf '%s' \"$out\" | tr -d '\\n')\"",
        f"echo \"restored users $(find {root} -mindepth 2 -maxdepth 2 -name Maildir | "
        "wc -l)\"",
    ])


def _dovecot_reads(data):
    """Dovecot started on the restored mail: its count of every user's messages (-A: the
    userdb's logins, which are not the directories' names) equals the message files."""
    root = data["mail_root"]
    return "\n".join([
        "set -eu",
        "systemctl start dovecot",
        f"files=$(find {root} -mindepth 2 -path '*/Maildir*' \\( -path '*/cur/*' -o "
        "-path '*/new/*' \\) -type f | wc -l)",
        "counts=$(doveadm -f tab mailbox status -A messages '*')",
        "printf '%s\\n' \"$counts\" | awk -F '\\t' 'NR > 1 {n[$1] += $NF} "
        "END {for (u in n) print u \": \" n[u] \" messages\"}'",
        "seen=$(printf '%s\\n' \"$counts\" | awk -F '\\t' 'NR > 1 {s += $NF} "
        "END {print s + 0}')",
        "echo \"Dovecot counts $seen messages, the Maildirs hold $files\"",
        "[ \"$seen\" = \"$files\" ]",
    ])
