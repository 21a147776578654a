"""The nightly backup as the deploy installs it: the cron line, run as cron runs it, makes a
snapshot from which alice's mailbox comes back bit-exact; a failing night exits non-zero and
says why in syslog; a second deploy changes nothing.

The cron command is read from /etc/cron.d/mailstore-backup in the container and run with
`/bin/sh -c` in cron's environment: HOME, LOGNAME, SHELL and the file's own variables, nothing
else, no terminal.
"""
import json
import re
import shlex
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).parent))

from mailclients import imaps, message, smtp_25, wait_for_delivery  # noqa: E402

from operations.defaults import defaults  # noqa: E402
from operations import backup  # noqa: E402

DATA = defaults()
REPOSITORY = DATA["backup_repository"]
KEY_FILE = DATA["backup_key_file"]
RESTORE_TARGET = "/root/backup-lab-test-restore"
OUTSIDE = "someone@example.net"

# Run in the container: every entry of a Maildir with what a restore must bring back. Index
# files and tmp/ are Dovecot's caches and scratch space, rebuilt at will and not backed up.
INVENTORY = r"""
import hashlib, json, os, stat, sys
root = sys.argv[1]
found = {}
for dirpath, dirnames, filenames in os.walk(root):
    rel_dir = os.path.relpath(dirpath, root)
    if rel_dir.split(os.sep)[-1] == "tmp":
        dirnames[:] = []
        filenames = []
    for name in [""] + dirnames + filenames:
        if name.startswith("dovecot.index") or name.startswith("dovecot.list.index"):
            continue
        path = os.path.join(dirpath, name) if name else dirpath
        st = os.lstat(path)
        rel = os.path.normpath(os.path.join(rel_dir, name))
        entry = {"mode": oct(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}
        if stat.S_ISLNK(st.st_mode):
            entry["target"] = os.readlink(path)
        else:
            entry["mtime_ns"] = st.st_mtime_ns  # files and directories alike
        if stat.S_ISREG(st.st_mode):
            with open(path, "rb") as f:
                entry["sha256"] = hashlib.sha256(f.read()).hexdigest()
        if name or rel != ".":
            found[rel] = entry
print(json.dumps(found, sort_keys=True))
"""


DEPLOY = ("email",)   # `deployed` (conftest): the container only


def cron_job(ssh):
    """(variables, user, command) of the one job line of the installed cron.d file."""
    variables, jobs = {}, []
    for line in ssh(f"cat {backup.CRON}").stdout.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        assignment = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$", line)
        if assignment:
            variables[assignment.group(1)] = assignment.group(2)
            continue
        fields = line.split(None, 6)
        jobs.append((fields[5], fields[6]))
    assert len(jobs) == 1, jobs
    return variables, jobs[0][0], jobs[0][1]


def as_cron(ssh, command, variables):
    """Run `command` as cron does: /bin/sh -c, cron's few variables, no terminal."""
    env = {"HOME": "/root", "LOGNAME": "root", "SHELL": "/bin/sh", "PATH": "/usr/bin:/bin",
           **variables}
    assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    return ssh(f"env -i {assignments} /bin/sh -c {shlex.quote(command)} </dev/null",
               check=False, timeout=900)


def syslog(ssh, since):
    return ssh(f"journalctl -q --no-pager -t {backup.TAG} --since @{since} "
               "-o json --output-fields=MESSAGE,PRIORITY").stdout


def log_lines(ssh, since):
    """[(syslog priority, message)] the job logged since `since` (container epoch)."""
    return [(int(e["PRIORITY"]), e["MESSAGE"])
            for e in map(json.loads, syslog(ssh, since).splitlines())]


def snapshots(ssh):
    return json.loads(ssh(f"mailstore backup list {REPOSITORY} --json").stdout)


def inventory(ssh, path):
    return json.loads(ssh(f"python3 -c {shlex.quote(INVENTORY)} {shlex.quote(path)}").stdout)


def _deliver_to_alice(lab, ssh, count=3):
    alice = next(a for a in lab["accounts"] if a["user"] == "alice")
    markers = []
    with smtp_25(lab) as smtp:
        for i in range(count):
            marker, msg = message(OUTSIDE, alice["email"], subject=f"backup lab test {i}",
                                  body="line\n" * (50 * (i + 1)))
            smtp.send_message(msg)
            markers.append(marker)
    for marker in markers:
        wait_for_delivery(ssh, lab, "alice", marker)
    # a flag change: Dovecot moves the message to cur/ with :2,S and writes its control files
    imap = imaps(lab, alice)
    try:
        imap.select("INBOX")
        typ, data = imap.search(None, "SUBJECT", markers[0])
        assert typ == "OK" and data[0].split()
        imap.store(data[0].split()[-1], "+FLAGS", "\\Seen \\Flagged")
    finally:
        imap.logout()
    return markers


def test_the_installed_cron_job_makes_a_snapshot_that_restores_alice_bit_exact(
        deployed, lab, ssh):
    _deliver_to_alice(lab, ssh)
    variables, user, command = cron_job(ssh)
    assert user == "root" and backup.JOB in command
    maildir = f"{lab['mail_root']}/alice/Maildir"
    # Other lab tests may deliver to alice meanwhile: take a run during which she got nothing.
    changed = []
    for _ in range(5):
        time.sleep(2)
        before = inventory(ssh, maildir)
        known = {s["id"] for s in snapshots(ssh)}
        since = int(ssh("date +%s").stdout) - 1
        started = time.monotonic()
        ran = as_cron(ssh, command, variables)
        elapsed = time.monotonic() - started
        after = inventory(ssh, maildir)
        if after == before:
            break
        changed.append(sorted(k for k in set(before) | set(after)
                              if before.get(k) != after.get(k)))
    else:
        pytest.fail(f"alice's Maildir kept changing during every backup run: {changed}")
    logged = log_lines(ssh, since)
    assert ran.returncode == 0, (ran.stdout, ran.stderr, logged)
    print(f"cron job (run, verify, prune, push) took {elapsed:.1f}s")

    new = [s for s in snapshots(ssh) if s["id"] not in known]
    assert len(new) == 1 and new[0]["id"] == snapshots(ssh)[-1]["id"]
    messages = [m for _, m in logged]
    assert any(m.startswith("run: ") and m.endswith(new[0]["id"]) for m in messages), messages
    assert messages[-1] == f"done: snapshot {new[0]['id']}", messages
    assert all(p >= 5 for p, _ in logged), logged  # no warning, no error
    assert ran.stdout == ran.stderr == ""  # nothing for cron to mail on a good night
    assert any(m.startswith("push: ") for m in messages)

    ssh(f"rm -rf {RESTORE_TARGET}")
    ssh(f"mailstore backup restore {REPOSITORY} latest {RESTORE_TARGET} --user alice "
        f"--key-file {KEY_FILE}")
    restored = inventory(ssh, f"{RESTORE_TARGET}/alice/Maildir")
    assert sum(1 for k in before if "/cur/" in f"/{k}" or "/new/" in f"/{k}") >= 3
    assert any(k.startswith("cur/") and ":2,FS" in k for k in before)
    assert "dovecot-uidlist" in before
    assert restored == before
    ssh(f"rm -rf {RESTORE_TARGET}")


def test_a_snapshot_holds_the_keys_a_rebuild_needs_and_never_the_backup_key(deployed, ssh):
    """A rebuild from the backup must give the new container the SSH host keys (SSHFP), the
    DKIM key (the published TXT record), the Icinga agent's certificate and the self-service
    API's config: `restore --extras` brings them back bit-exact, with owner and mode."""
    ssh(backup.JOB)
    target = RESTORE_TARGET + "-extras"
    ssh(f"rm -rf {target}")
    try:
        ssh(f"mailstore backup restore {REPOSITORY} latest {target} --extras "
            f"--key-file {KEY_FILE}")
        material = backup.settings(DATA)["include"]
        assert {"/etc/ssh", backup.DKIM_KEYS, "/var/lib/icinga2/certs"} <= set(material)
        for path in material:
            if ssh(f"test -d {path}", check=False).returncode == 0:
                live = inventory(ssh, path)
                assert live, f"{path} is empty in the container"
                assert inventory(ssh, target + path) == live, path
            else:  # a file such as /etc/aliases
                same = "stat -c '%a %u %g %Y' {0} && sha256sum < {0}"
                assert ssh(same.format(target + path)).stdout == ssh(same.format(path)).stdout
        private = ssh(f"find {target}/etc/ssh {target}{backup.DKIM_KEYS} -name '*.private' "
                      "-o -name 'ssh_host_*_key'").stdout.split()
        assert len(private) >= 2, private
        assert ssh(f"test -e {target}{KEY_FILE}", check=False).returncode != 0
    finally:
        ssh(f"rm -rf {target}")


def test_a_failing_night_exits_non_zero_and_logs_why(deployed, ssh):
    """The installed job with its key file gone (a copy of the job, so that the checks that
    run meanwhile keep their key): the snapshot fails, nothing is pruned, the job says so."""
    variables, _, command = cron_job(ssh)
    copy = "/root/mailstore-backup-job-keyless"
    ssh(f"sed -e 's|^KEY_FILE=.*|KEY_FILE=/nonexistent/backup.key|' "
        f"-e 's|^PUSH=.*|PUSH=/nonexistent/push|' {backup.JOB} > {copy} && chmod 755 {copy}")
    since = int(ssh("date +%s").stdout) - 1
    count = len(snapshots(ssh))
    # verify is given the key file too (it authenticates the catalog with it), so it fails
    # beside run; on Sundays (date +%u = 7) so does the weekly `verify --read-data`.
    failed = "FAILED: run verify verify-data" if ssh("date +%u").stdout.strip() == "7" \
        else "FAILED: run verify"
    ran = as_cron(ssh, command.replace(backup.JOB, copy), variables)
    ssh(f"rm -f {copy}")
    assert ran.returncode == 1, (ran.stdout, ran.stderr)
    assert "FAILED: run" in ran.stderr  # cron mails this to root
    assert len(snapshots(ssh)) == count
    logged = log_lines(ssh, since)
    errors = [m for p, m in logged if p == 3]
    assert any("/nonexistent/backup.key" in m and m.startswith("run: ") for m in errors), logged
    assert "prune skipped: no new snapshot" in errors
    assert errors[-1] == failed, errors
    # and the file-based syslog an operator greps has it too
    assert ssh(f"grep -c 'mailstore-backup.*{failed}$' /var/log/syslog",
               check=False).stdout.strip() not in ("", "0")


def test_a_second_run_while_one_holds_the_lock_does_nothing(deployed, ssh):
    variables, _, command = cron_job(ssh)
    since = int(ssh("date +%s").stdout) - 1
    count = len(snapshots(ssh))
    ran = as_cron(ssh, f"flock {backup.LOCK} sleep 20 & sleep 1; {command}; echo rc=$?; "
                       "kill $!; wait", variables)
    assert "rc=75" in ran.stdout, (ran.stdout, ran.stderr)
    assert len(snapshots(ssh)) == count
    assert any(p == 3 and "another run holds" in m for p, m in log_lines(ssh, since))


def test_the_key_is_the_secret_and_readable_by_root_only(deployed, ssh):
    secret = (REPO / ".lab" / "secrets" / DATA["backup_key_secret"]).read_text()
    assert ssh(f"cat {KEY_FILE}").stdout == secret
    assert ssh(f"stat -c '%a %U %G' {KEY_FILE} {backup.JOB} {backup.CRON} "
               f"{REPOSITORY}").stdout.split("\n")[:4] == [
        "600 root root", "755 root root", "644 root root", "700 root root"]
    # the repository's config names its encryption, never the key
    config = ssh(f"cat {REPOSITORY}/config.json").stdout
    assert json.loads(config)["encryption"] != "none" and secret.strip() not in config
