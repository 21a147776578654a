"""Handing the service from one container to another on Infra02: the plan of a cut-over and
of its rollback, decided from the host's state before anything is changed.

An upgrade (operations/upgrade.py) builds `<name>-next` beside the serving `<name>`. A
cut-over hands the service to it, a rollback gives it back; both are one handover from a
*source* (gives the service up) to a *target* (takes it), in the same steps:

- before anything is held: (cut-over) the serving container's hand-written LXC keys that
  the successor lacks are listed; the source's keys the deploy cannot make again (DKIM, the
  Icinga agent's certificate; cut-over only: a rollback finds them equal) and the backup
  repository are carried to the target when the source owns the volume; the SSH host keys
  are compared (the successor inherited them: the SSHFP records stay true); the target is
  held (its own queue) and stopped;
- held: Postfix on the source keeps accepting and defers delivery, Dovecot and the
  self-service API stop (mail-quiesce of operations/migration.py); the volume's owner marker
  names nobody (`handover-in-progress`), so no Dovecot can start while the names change;
  `cacertusers` is dumped into a root-only file on Infra02 when the source owns the volume
  (its database is the newest); the source stops; its Postfix queue is moved into the
  target's (incoming and hold), owned by the target's postfix; the containers are renamed
  (the target becomes `<name>`, a cut-over's old container `<name>-prev`, a rollback's
  successor `<name>-next` again), their LXC configs merged for their new role (the target:
  the serving inventory's NICs, MACs and addresses, the volume read-write; the others: no
  autostart, the volume read-only; a successor drops the serving container's extra NICs and
  its own hold), and each one's Dovecot start check rewritten for its new name (the marker
  names containers by name); the target starts, the dump
  is loaded, the marker names it, `postsuper -s` fixes the carried queue files' names, and
  mail-resume starts Dovecot and flushes the queue.

The source is stopped, never destroyed. Which container is which is read from the names
that exist (see `roles`), so a rollback also finishes a handover that stopped half-way; the
host's state is read by `facts_command` and parsed by `parse_facts`; `check` lists every
problem when the state does not fit. Pure functions over plain data; each step is a bash
script run on Infra02 by operations/upgrade.py (`bash()`: the first failure stops it).
"""
import base64
import posixpath
import re
import shlex
from dataclasses import dataclass

from operations import lxc_config, mariadb, staging
from operations.migration import HELD_FILE

LXC_PATH = "/var/lib/lxc"
PREVIOUS = "-prev"
# The marker's owner while the names change: no container has it, so no Dovecot starts.
NOBODY = "handover-in-progress"
# The dump of cacertusers between the two containers: a root-only directory on Infra02.
DUMP_DIR = "/var/lib/cacert-handover"
MARKER = ".cacert-owner"
SBIN = "/usr/local/sbin"
POSTFIX_SPOOL = "/var/spool/postfix"
# Queues carried, and where to in the target: a message in flight or deferred on the source
# is new to the target (incoming); what an operator held stays held.
QUEUES = (("incoming", "incoming"), ("active", "incoming"), ("deferred", "incoming"),
          ("hold", "hold"))
DROP_IN = "/etc/systemd/system/dovecot.service.d/cacert-volume-owner.conf"
POLICY_RC_D = "/usr/sbin/policy-rc.d"
# What the successor's deploy cannot make identical: the DKIM key (published in DNS) and the
# Icinga agent's certificate (signed by the master). Carried inside the containers, so that
# owners are matched by name (the packages' uids differ between releases).
DKIM_KEYS = "/etc/opendkim/keys"
ICINGA_CERTS = "/var/lib/icinga2/certs"
SELFSERVICE_UNIT = "cacert-selfservice-api"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Newer mariadb-dump writes this first line, which older clients (a rollback's bullseye)
# refuse; it only switches the client into a mode that refuses shell escapes. (MariaDB
# 11.8 on trixie ends it with a blank: matched by its start.)
SANDBOX_LINE = r"1{/^\/\*M!999999\\- enable the sandbox mode \*\//d}"
# MariaDB's own names first (a trixie client may lack the mysql* ones), else the old names.
DUMP_TOOL = "$(command -v mariadb-dump || echo mysqldump)"
CLIENT = "$(command -v mariadb || echo mysql)"
ADMIN = "$(command -v mariadb-admin || echo mysqladmin)"
# Loading a dump made with --routines drops and re-creates rehash_password, and MariaDB drops
# a routine's privileges with it: Dovecot's re-hash account lost its EXECUTE (its post-login
# step failed "Access denied" after a rollback, lab, 2026-12-06). The deploy's own accounts
# SQL (operations/mariadb.py, STATE_DIR, idempotent) gives the grants back after every load.
GRANTS_AGAIN = (f"if [ -f {mariadb.STATE_DIR}/accounts.sql ]; then "
                f"{CLIENT} --batch < {mariadb.STATE_DIR}/accounts.sql; fi")
# The nightly backup job's lock (operations/backup.py LOCK): held while the repository is
# copied, so a job never writes it half-way through (the job exits 75 meanwhile).
BACKUP_LOCK = "/run/lock/mailstore-backup-job.lock"


class Refused(Exception):
    """The host's state does not fit the command; one problem per line, nothing changed."""


@dataclass(frozen=True)
class Container:
    """One container as Infra02 has it: its state (RUNNING, STOPPED, ...), config text and
    Debian release (its rootfs' VERSION_CODENAME)."""
    name: str
    state: str
    config: str
    release: str = ""
    scripts: bool = True   # mail-quiesce and mail-resume installed (any deploy puts them)


@dataclass(frozen=True)
class Roles:
    """Who gives the service up (source) and who takes it (target), by their current names;
    `renames` ((from, to), ...) in the order they are done; `final` {current: final name}."""
    source: str
    target: str
    renames: tuple
    final: dict


@dataclass(frozen=True)
class Step:
    """One step: its name, the bash script run on Infra02, and whether delivery is held
    while it runs (for the figures)."""
    name: str
    script: str
    held: bool = False


# Names and paths go into the steps' shell scripts unquoted: plain characters only.
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_PLAIN_PATH = re.compile(r"^/[A-Za-z0-9._/+-]*$")


def check_data(data):
    """Every problem of the serving inventory's merged Infra02 `data` for a handover."""
    problems = []
    if not _PLAIN_NAME.match(str(data["container_name"])):
        problems.append(f"container_name={data['container_name']!r}: not a plain container "
                        "name (A-Z a-z 0-9 _ . -)")
    for key in ("data_volume", "data_volume_host_path", "backup_repository"):
        value = str(data[key])
        if not _PLAIN_PATH.match(value) or ".." in value.split("/") or value == "/":
            problems.append(f"{key}={data[key]!r}: must be an absolute path (not /) of "
                            "A-Z a-z 0-9 . _ / + -")
    if not re.match(r"^[A-Za-z0-9_]+$", str(data["mysql_database"])):
        problems.append(f"mysql_database={data['mysql_database']!r}: not a plain name")
    volume = posixpath.normpath(str(data["data_volume"]))
    root = posixpath.normpath(str(data["mail_root"]))
    if root != volume and not root.startswith(volume + "/"):
        problems.append(f"mail_root={data['mail_root']!r} is not on the data volume "
                        f"({data['data_volume']}): the successor would not see the mail; "
                        "move it there first (README: Moving mail to the data volume)")
    return problems


def names(name):
    """(serving, successor, previous) container names of an upgrade of `name`."""
    return name, f"{name}-next", f"{name}{PREVIOUS}"


def facts_command(name, volume_host_path, lxc_path=LXC_PATH):
    """A shell command on Infra02 that prints what `parse_facts` reads."""
    lines = []
    for n in names(name):
        d = shlex.quote(f"{lxc_path}/{n}")
        lines.append(
            f"if [ -f {d}/config ]; then echo 'container {n}'; "
            f"echo \"state $(lxc-info -P {shlex.quote(lxc_path)} -n {n} -s -H 2>/dev/null "
            f"|| echo UNKNOWN)\"; echo \"config $(base64 -w0 < {d}/config)\"; "
            f"echo \"release $(. {d}/rootfs/etc/os-release 2>/dev/null; "
            "echo $VERSION_CODENAME)\"; "
            f"if [ -x {d}/rootfs{SBIN}/mail-quiesce ] && [ -x {d}/rootfs{SBIN}/mail-resume ]; "
            "then echo 'scripts yes'; else echo 'scripts no'; fi; fi")
    marker = shlex.quote(f"{volume_host_path}/{MARKER}")
    lines.append(f"if [ -f {marker} ]; then echo \"marker $(head -n 1 {marker})\"; fi")
    return "; ".join(lines) + "; true"


def parse_facts(output):
    """{"containers": {name: Container}, "marker": owner or None} from facts_command's
    output."""
    found, marker, current = {}, None, None
    for line in output.splitlines():
        word, _, rest = line.partition(" ")
        if word == "container":
            current = rest.strip()
            found[current] = {"name": current, "state": "UNKNOWN", "config": ""}
        elif word in ("state", "release") and current:
            found[current][word] = rest.strip()
        elif word == "scripts" and current:
            found[current]["scripts"] = rest.strip() == "yes"
        elif word == "config" and current:
            found[current]["config"] = base64.b64decode(rest.strip()).decode(
                "utf-8", errors="surrogateescape")
        elif word == "marker":
            marker = rest.strip()
    return {"containers": {n: Container(**c) for n, c in found.items()}, "marker": marker}


def roles(command, name, existing):
    """Roles for `command` ("cutover" or "rollback") from the set of `existing` container
    names; Refused when they do not fit."""
    serving, successor, previous = names(name)
    found = set(existing) & {serving, successor, previous}
    if command == "cutover":
        if found == {serving, successor}:
            return Roles(serving, successor, ((serving, previous), (successor, serving)),
                         {serving: previous, successor: serving})
        if found == {serving, previous}:
            raise Refused(f"already cut over: {serving} is the successor, the old container "
                          f"is {previous}; `rollback` gives the service back to it")
        if successor not in found:
            raise Refused(f"no successor {successor} on Infra02: run `prepare` first")
        raise Refused(f"containers {', '.join(sorted(found))} exist: an earlier handover "
                      "stopped half-way; run `rollback`")
    if found == {serving, previous}:
        return Roles(serving, previous, ((serving, successor), (previous, serving)),
                     {serving: successor, previous: serving})
    if found == {serving, successor}:
        return Roles(successor, serving, (), {successor: successor, serving: serving})
    if found == {successor, previous}:
        return Roles(successor, previous, ((previous, serving),),
                     {successor: successor, previous: serving})
    if len(found) == 3:
        raise Refused(f"{serving}, {successor} and {previous} all exist: which one served "
                      "before is not clear; move the one that is neither aside by hand")
    raise Refused(f"nothing to roll back to: neither {successor} nor {previous} exists")


def _rootfs_problems(container, lxc_path):
    paths = lxc_config.values(container.config, "lxc.rootfs.path")
    path = lxc_config.dir_rootfs(paths[-1]) if paths else None
    want = f"{lxc_path}/{container.name}/rootfs"
    if path != want:
        return [f"{container.name}: lxc.rootfs.path is {paths[-1] if paths else 'not set'}, "
                f"not dir:{want}: a rename moves the container's directory and needs its "
                "rootfs inside it"]
    return []


def check(command, name, facts, lxc_path=LXC_PATH):
    """(Roles, every problem of the host's state for `command`, one line each)."""
    containers, marker = facts["containers"], facts["marker"]
    try:
        found = roles(command, name, containers)
    except Refused as exc:
        return None, str(exc).splitlines()
    problems = []
    source, target = containers[found.source], containers[found.target]
    for c in (source, target):
        problems += _rootfs_problems(c, lxc_path)
        if c.state not in ("RUNNING", "STOPPED"):
            problems.append(f"{c.name} is {c.state}: it must be RUNNING or STOPPED")
        if not c.scripts:
            problems.append(f"{c.name} lacks {SBIN}/mail-quiesce or mail-resume, which hold "
                            "and resume delivery: deploy it with this version first")
    if command == "cutover":
        for c in (source, target):
            if c.state != "RUNNING":
                problems.append(f"{c.name} is {c.state}, not RUNNING: "
                                + ("run `prepare` again (it starts and refreshes it)"
                                   if c is target else f"start it (lxc-start -n {c.name})"))
        if marker != source.name:
            problems.append(f"the data volume's marker names {marker or 'nobody'}, not "
                            f"{source.name}: the serving container must own the volume")
    else:
        if target.state == "RUNNING" and marker == target.name and not found.renames:
            problems.append(f"{target.name} serves already (running, owns the volume): "
                            f"nothing to roll back; to drop the successor: lxc-stop -n "
                            f"{source.name}")
        if marker == source.name and source.state != "RUNNING":
            problems.append(f"{source.name} owns the volume but is {source.state}: its "
                            f"database holds the newest account changes; start it "
                            f"(lxc-start -n {source.name}) and run rollback again")
    return found, problems


def attach(container, command):
    """`command` (a shell command line) run as root in a running container."""
    return (f"lxc-attach -n {shlex.quote(container)} --clear-env -v PATH={PATH} "
            f"-v HOME=/root -- sh -c {shlex.quote(command)}")


def _rootfs(lxc_path, container, path=""):
    return f"{lxc_path}/{container}/rootfs{path}"


def no_symlinks(rootfs, paths):
    """Fail unless no component of `paths` below `rootfs` is a symlink: written from the
    host, it would resolve on the host."""
    checks = set()
    for path in paths:
        parts = path.strip("/").split("/")
        checks.update(f"{rootfs}/" + "/".join(parts[:i + 1]) for i in range(len(parts)))
    quoted = " ".join(shlex.quote(p) for p in sorted(checks))
    return (f"for p in {quoted}; do if [ -L \"$p\" ]; then echo \"refusing to write through "
            f"the symlink $p\" >&2; exit 1; fi; done")


def _write(path, text, mode="644"):
    """A host command writing `text` (no secret: it travels base64 on the command line)."""
    data = base64.b64encode(text.encode()).decode()
    quoted = shlex.quote(path)
    return (f"echo {data} | base64 -d > {quoted}.handover && chmod {mode} {quoted}.handover "
            f"&& mv -f {quoted}.handover {quoted}")


def owner_files(volume, container):
    """{path in the container: text} of Dovecot's start check for `container` (as
    operations/volume_owner.py deploys them)."""
    return {
        DROP_IN: staging.render("files/volume_owner/owner-check.conf.j2", volume=volume,
                                container=container, unit="dovecot"),
        POLICY_RC_D: staging.render("files/volume_owner/policy-rc.d.j2", volume=volume,
                                    container=container),
    }


def final_configs(found, containers, serving, successor, lxc_path=LXC_PATH):
    """{final name: config text} of both containers after the handover. `serving`: the
    serving inventory's merged Infra02 data; `successor`: the successor's (operations/
    successor.py derive(), merged)."""
    name = serving["container_name"]
    _, next_name, previous = names(name)
    extra = [net["name"] for net in serving["container_extra_nets"]]
    configs = {}
    for current, final in found.final.items():
        text = lxc_config.renamed(containers[current].config, lxc_path, current, final)
        if final == name:
            data = serving
        elif final == next_name:
            data = {**successor, "container_autostart": False}
            text = lxc_config.without_nics(text, extra)
        else:
            data = {**serving, "container_name": previous, "container_autostart": False,
                    "data_volume_read_only": True}
        want = lxc_config.wanted({key: data.get(key) for key in lxc_config.DATA_KEYS})
        text = lxc_config.merge(text, want).text
        if final == name and current == found.target:
            # The NICs keep what the serving container's hand-written config set beyond the
            # managed keys (an mtu, a veth pair name).
            source = containers[found.source].config
            for nic in want.nics:
                text = lxc_config.with_nic_extras(text, nic.name,
                                                  lxc_config.nic_extras(source, nic.name))
        configs[final] = text
    return configs


def config_differences(found, containers):
    """The key lines of the source's config that the target's lacks, NICs and the keys the
    handover sets aside: hand-written keys (limits, id maps, mounts) the operator compares
    before a cut-over, as the plan's first step shows them."""
    return lxc_config.unmanaged_lines(containers[found.source].config,
                                      containers[found.target].config)


def _shared(path, data):
    """True when `path` in the container is on a mount both containers have (the data volume
    or a container_mounts entry): nothing to carry."""
    targets = [data["data_volume"]] + [m["target"] for m in data["container_mounts"]]
    return any(path == "/" + lxc_config.mount_target(t)
               or path.startswith("/" + lxc_config.mount_target(t) + "/") for t in targets)


def plan(command, found, facts, serving, successor, lxc_path=LXC_PATH):
    """The steps of `command` for `found` roles (check() said there is no problem)."""
    containers, marker = facts["containers"], facts["marker"]
    source, target = containers[found.source], containers[found.target]
    name = serving["container_name"]
    volume, host_volume = serving["data_volume"], serving["data_volume_host_path"]
    database = serving["mysql_database"]
    served = marker == source.name   # the source's state is the newest
    dump = f"{DUMP_DIR}/{name}-{database}.sql"
    src_root, tgt_root = _rootfs(lxc_path, source.name), _rootfs(lxc_path, target.name)
    steps = []

    differences = config_differences(found, containers) if command == "cutover" else []
    if differences:
        steps.append(Step(
            f"LXC keys of {source.name} that {target.name} lacks (not carried: compare)",
            "\n".join(f"echo {shlex.quote(line)}" for line in differences)))
    if served and command == "cutover":
        keys = ([DKIM_KEYS] if serving.get("dkim_signing") else []) + [ICINGA_CERTS]
        carry = [f"if {attach(source.name, f'test -e {k}')}; then "
                 f"{attach(source.name, f'tar -C / -cf - {k[1:]}')} | "
                 f"{attach(target.name, f'rm -rf {k} && tar -C / -xpf -')}; "
                 f"echo carried {k}; fi" for k in keys]
        carry.append(attach(target.name, "systemctl try-restart opendkim"))
        steps.append(Step(f"keys {source.name} -> {target.name} (DKIM, Icinga certificate)",
                          "\n".join(carry)))
        steps.append(Step(
            "SSH host keys equal (SSHFP records stay true)",
            f"diff <(cd {src_root}/etc/ssh && sha256sum ssh_host_*) "
            f"<(cd {tgt_root}/etc/ssh && sha256sum ssh_host_*) && echo identical"))
    repository = serving["backup_repository"].rstrip("/")
    if served and not _shared(repository, serving):
        # Packed inside the source under the job's lock; unpacked on Infra02 with the same
        # numeric owners (root's), so also into a stopped target.
        steps.append(Step(
            f"backup repository {repository} -> {target.name}",
            f"{no_symlinks(tgt_root, [repository])}\n"
            f"if [ -d {src_root}{repository} ]; then rm -rf {tgt_root}{repository} && "
            f"mkdir -p {posixpath.dirname(tgt_root + repository)} && "
            + attach(source.name, f"flock -n {BACKUP_LOCK} tar -C / -cf - {repository[1:]}")
            + f" | tar -C {tgt_root} --numeric-owner -xpf - && "
            f"du -sh {tgt_root}{repository} || {{ echo 'copy failed (the nightly backup job "
            f"holds {BACKUP_LOCK} while it runs: wait for it)' >&2; exit 1; }}\n"
            f"else echo 'none on {source.name}'; fi"))
    if target.state == "RUNNING":
        steps.append(Step(f"hold and stop {target.name}",
                          f"{attach(target.name, f'{SBIN}/mail-quiesce')}\n"
                          f"{stop_container(target.name)}"))

    if source.state == "RUNNING":
        steps.append(Step(
            f"hold delivery on {source.name}, stop Dovecot",
            attach(source.name, f"{SBIN}/mail-quiesce && if systemctl cat "
                                f"{SELFSERVICE_UNIT} >/dev/null 2>&1; then systemctl stop "
                                f"{SELFSERVICE_UNIT}; fi"), held=True))
    marker_path = f"{host_volume}/{MARKER}"
    steps.append(Step("volume marker: nobody", _write(marker_path, f"{NOBODY}\n") +
                      f" && cat {marker_path}", held=True))
    if served:
        dump_command = f"{DUMP_TOOL} --single-transaction --routines --triggers {database}"
        steps.append(Step(
            f"dump {database} of {source.name}",
            f"umask 077; mkdir -p {DUMP_DIR}; chmod 700 {DUMP_DIR}; "
            f"{attach(source.name, dump_command)} > {dump}.tmp && mv -f {dump}.tmp {dump} "
            f"&& ls -l {dump}", held=True))
    if source.state == "RUNNING":
        steps.append(Step(f"stop {source.name}", stop_container(source.name), held=True))
    steps.append(Step(f"mail queue {source.name} -> {target.name}",
                      _carry_queue(src_root, tgt_root), held=True))
    steps.append(Step("rename and configure", _rename(found, facts, serving, successor,
                                                       lxc_path), held=True))
    steps.append(Step(
        f"start {name}",
        f"lxc-start -n {name} -d && lxc-wait -n {name} -s RUNNING -t 30\n"
        f"for i in $(seq 450); do if {attach(name, f'{ADMIN} --silent ping')} "
        f">/dev/null 2>&1; then echo mariadb up; exit 0; fi; sleep 0.2; done\n"
        "echo 'mariadb did not answer in 90 s' >&2; exit 1", held=True))
    if served:
        steps.append(Step(
            f"load {database} into {name}",
            f"sed -e {shlex.quote(SANDBOX_LINE)} {dump} | "
            f"{attach(name, f'{CLIENT} {database}')} && "
            f"{attach(name, GRANTS_AGAIN)} && rm -f {dump} && echo loaded", held=True))
    steps.append(Step(f"volume marker: {name}",
                      _write(marker_path, f"{name}\n") + f" && cat {marker_path}", held=True))
    steps.append(Step(f"resume delivery on {name}",
                      attach(name, f"postsuper -s && {SBIN}/mail-resume"), held=True))
    return steps


# Run in a container about to stop, before its shutdown:
# - No new SMTP session starts and the ones in progress end on their own (at most 30 s): a
#   table of its own in the container's nftables answers every new connection to Postfix's
#   smtpd ports with a reset (senders retry, and reach the successor once it serves); the
#   table ends with the container's network namespace. Closing the listeners instead
#   (master_service_disable = inet and a reload) is no drain: Postfix's master SIGTERMs the
#   processes of a service it disables (master_delete_children), also an smtpd between the
#   client's final dot and its 250, which leaves the mail queued and the client sending it
#   again. That is only the fallback where nft fails (mail-resume opens the listeners again).
# - The Icinga agent gets 5 s to stop, then it is killed: bullseye's Icinga 2.12 ignores the
#   SIGTERM and held every shutdown for 60 s (`systemctl stop icinga2` waited 70 s and more,
#   lab, 2026-12-06); nothing of the agent's survives the container anyway.
SMTP_DRAIN_TABLE = "cacert_email_shutdown"
SMTP_DRAIN = r"""
if command -v postconf >/dev/null && systemctl -q is-active postfix; then
  ports=
  for p in $(postconf -M | awk '$2 == "inet" && $8 == "smtpd" {sub(/.*:/, "", $1); print $1}'); do
    case $p in *[!0-9]*) p=$(getent services "$p/tcp" | awk '{sub(/\/.*/, "", $2); print $2}');; esac
    if [ -n "$p" ]; then ports="$ports${ports:+, }$p"; fi
  done
  if [ -n "$ports" ]; then
    if ! printf 'table inet %s {
 chain input {
  type filter hook input priority -10; policy accept;
  tcp dport { %s } tcp flags & (syn | ack) == syn reject with tcp reset
 }
}
'         TABLE "$ports" | nft -f -; then
      echo "nft failed: closing Postfix's listeners, which ends the SMTP sessions" >&2
      postconf -e master_service_disable=inet && postfix reload >/dev/null 2>&1
    fi
    i=0
    while ss -Htn state established | awk -v ports=", $ports, " '
        {p = $3; sub(/.*:/, "", p); if (index(ports, ", " p ", ")) open = 1} END {exit !open}'; do
      if [ $i -ge 150 ]; then echo "SMTP sessions still open after 30 s" >&2; break; fi
      sleep 0.2; i=$((i + 1))
    done
  fi
fi
""".replace("TABLE", SMTP_DRAIN_TABLE)
AGENT_STOP = """
if systemctl -q is-active icinga2; then
  timeout 5 systemctl stop icinga2 || systemctl kill --signal=KILL icinga2
fi
"""
BEFORE_SHUTDOWN = SMTP_DRAIN + AGENT_STOP + "true\n"


def stop_container(name):
    """Shut container `name` down cleanly, killed after 60 s: SMTP sessions drained and the
    Icinga agent stopped first (BEFORE_SHUTDOWN), then through systemd inside: lxc-stop sends
    SIGPWR, which bullseye's systemd takes for sigpwr.target, not a shutdown."""
    return (f"{attach(name, BEFORE_SHUTDOWN)} || true\n"
            f"lxc-attach --clear-env -n {name} -- systemctl poweroff || true\n"
            f"lxc-wait -n {name} -s STOPPED -t 60 || lxc-stop -n {name} -k")


def _carry_queue(src_root, tgt_root):
    """Move the source's queue files into the target's queue (both stopped), owned by the
    target's postfix user. `postsuper -s` in the target gives them names of its own."""
    src, dst = f"{src_root}{POSTFIX_SPOOL}", f"{tgt_root}{POSTFIX_SPOOL}"
    lines = [no_symlinks(tgt_root, [f"{POSTFIX_SPOOL}/{q}" for q in ("incoming", "hold")]),
             f"ids=$(awk -F: '$1==\"postfix\" {{print $3\":\"$4}}' {tgt_root}/etc/passwd)",
             "[ -n \"$ids\" ] || { echo 'no postfix user in the target' >&2; exit 1; }",
             "moved=0"]
    for queue, into in QUEUES:
        lines.append(
            f"if [ -d {src}/{queue} ]; then while IFS= read -r f; do "
            f"b=${{f##*/}}; t={dst}/{into}/$b; "
            f"if [ -e \"$t\" ]; then echo \"$t exists\" >&2; exit 1; fi; "
            f"cp -p \"$f\" \"$t.carry\" && chown \"$ids\" \"$t.carry\" && "
            f"mv \"$t.carry\" \"$t\" && rm -f \"$f\"; moved=$((moved + 1)); "
            f"done < <(find {src}/{queue} -type f); fi")
    lines.append("echo \"moved $moved queue files\"")
    lines.append(f"left=$(find {src}/maildrop -type f 2>/dev/null | wc -l); "
                 "if [ \"$left\" != 0 ]; then echo \"$left files stay in the source's "
                 "maildrop (postdrop's format): its pickup delivers them when it runs\"; fi")
    return "\n".join(lines)


def _rename(found, facts, serving, successor, lxc_path):
    configs = final_configs(found, facts["containers"], serving, successor, lxc_path)
    lines = []
    for old, new in found.renames:
        lines.append(f"if [ -e {lxc_path}/{new} ]; then echo '{lxc_path}/{new} exists' >&2; "
                     f"exit 1; fi; mv {lxc_path}/{old} {lxc_path}/{new}")
    for final, text in configs.items():
        lines.append(_write(f"{lxc_path}/{final}/config", text, mode="640"))
        rootfs = _rootfs(lxc_path, final)
        files = owner_files(serving["data_volume"], final)
        lines.append(no_symlinks(rootfs, list(files)))
        lines += [f"mkdir -p {posixpath.dirname(rootfs + path)} && "
                  + _write(rootfs + path, text, "755" if path == POLICY_RC_D else "644")
                  for path, text in files.items()]
        if final == names(serving["container_name"])[1]:
            # A successor again after a rollback: its own hold (mail-quiesce's, before it
            # stopped) is lifted, so that `prepare` finds it as it left it; Dovecot waits
            # for the marker anyway.
            lines.append(no_symlinks(rootfs, [HELD_FILE, "/etc/postfix/main.cf"]))
            lines.append(f"rm -f {rootfs}{HELD_FILE}; "
                         f"sed -i '/^defer_transports *=/d' {rootfs}/etc/postfix/main.cf")
        lines.append(f"echo '{final}: config and Dovecot start check written'")
    return "\n".join(lines)


def bash(script):
    """The command that runs `script` with bash, stopping at the first failure."""
    return "bash -c " + shlex.quote("set -euo pipefail\n" + script)
