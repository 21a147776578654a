"""The off-host copy (operations/backup_host.py): the backup host pulls the email container's
backup repository every night; root on the mail server cannot destroy the copies.

The `backup` container (lab/topology.py CONTAINERS) is brought up by the `backup_host`
fixture (`python -m lab container up backup`, quick when it is up) and deployed with
inventories/lab_backup.py; its pull key is copied to `.lab/backup/pull_key.pub`, which the
lab's normal deploy of the email container (`run_deploy`) turns into the forced,
read-only login. Runs on the lab's trixie iteration only (LAB_RELEASES).

The copy's Icinga service (`mailstore-backup-copy` on the container's Host object on the lab
master, pushed by the job) is read from the master's API as tests/lab/test_monitoring.py
reads the mail server's services.
"""
import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).parent))

from conftest import LAB_JSON, _shell, ssh_command  # noqa: E402
from mailclients import deploy_failure, message, smtp_25, wait_for_delivery  # noqa: E402
from test_backup import INVENTORY  # noqa: E402
from test_monitoring import _get  # noqa: E402

from lab import lock  # noqa: E402
from operations import backup, backup_host as offhost  # noqa: E402
from operations.defaults import defaults  # noqa: E402
from lab import topology  # noqa: E402

LAB_RELEASES = ("trixie",)
DATA = defaults()
REPOSITORY = DATA["backup_repository"]
KEY_FILE = DATA["backup_key_file"]
COPIES = "/srv/mailstore-copies"
PULL_KEY = REPO / ".lab" / "backup" / "pull_key.pub"
RESTORE = "/root/offhost-restore"


def _pyinfra(inventory):
    env = dict(os.environ)
    env.setdefault("CACERT_EMAIL_SECRETS", str(REPO / ".lab" / "secrets"))
    return subprocess.run([str(REPO / ".venv" / "bin" / "pyinfra"), "-y", inventory,
                           "deploy.py"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=1800)


@pytest.fixture(scope="module")
def backup_host(lab, run_deploy):
    """The backup container, deployed; the email container deployed with its pull key."""
    up = subprocess.run([sys.executable, "-m", "lab", "container", "up", "backup"], cwd=REPO,
                        capture_output=True, text=True, timeout=1800)
    assert up.returncode == 0, (up.stdout + up.stderr)[-4000:]
    record = json.loads(LAB_JSON.read_text())["containers"]["backup"]
    record = {**record, "ssh": {**record["ssh"], "key": str(REPO / record["ssh"]["key"]),
                                "known_hosts": str(REPO / record["ssh"]["known_hosts"])}}
    with lock.held():
        deployed = _pyinfra("inventories/lab_backup.py")
    assert deployed.returncode == 0, deploy_failure(deployed)
    run = _shell(lambda cmd: ssh_command(record, cmd, record["ssh"]["known_hosts"], "yes"),
                 "the backup container")
    key = run(f"cat {offhost.SSH_KEY}.pub").stdout.strip()
    PULL_KEY.parent.mkdir(exist_ok=True)
    PULL_KEY.write_text(key + "\n")
    result = run_deploy()
    assert result.returncode == 0, deploy_failure(result)
    return {"record": record, "ssh": run, "key": key}


def copy_job(backup_ssh):
    """The installed job, run as the copies' user like cron does; its state afterwards."""
    ran = backup_ssh(f"su -s /bin/sh {offhost.COPY_USER} -c {offhost.JOB} </dev/null",
                     check=False, timeout=900)
    assert ran.returncode == 0, (ran.stdout, ran.stderr, backup_ssh(
        f"journalctl -q --no-pager -t {offhost.TAG} -n 40", check=False).stdout)
    return json.loads(backup_ssh(f"cat {COPIES}/state.json").stdout)


def nightly_backup(ssh):
    ssh(backup.JOB, timeout=900)
    return json.loads(ssh(f"mailstore backup list {REPOSITORY} --json").stdout)[-1]["id"]


def inventory(run, path):
    return json.loads(run(f"python3 -c {shlex.quote(INVENTORY)} {shlex.quote(path)}").stdout)


def chunk_sizes(backup_ssh, copy):
    """{name: bytes} of the sealed catalog's chunk files in the copy at `copy`."""
    listed = backup_ssh(f"cd {copy}/sealed && stat -c '%n %s' *").stdout.split()
    return {name: int(size) for name, size in zip(listed[::2], listed[1::2])}


def check(backup_ssh, *args):
    return backup_ssh(f"mailstore check backup-copy {COPIES} {' '.join(args)}", check=False)


def mail_both_accounts(lab, ssh, subject):
    """Mail for the first two lab accounts, whatever ran before: a fresh lab has none for bob,
    and a restore of every user is checked for both."""
    for account in lab["accounts"][:2]:
        marker, msg = message("someone@example.net", account["email"], subject=subject)
        with smtp_25(lab) as smtp:
            smtp.send_message(msg)
        wait_for_delivery(ssh, lab, account["user"], marker)


def test_nightly_copies_are_incremental_and_restore_alice_bit_exact(lab, ssh, backup_host):
    bssh = backup_host["ssh"]
    mail_both_accounts(lab, ssh, "off-host copy, first night")
    nightly_backup(ssh)
    started = time.monotonic()
    first = copy_job(bssh)
    first_seconds = time.monotonic() - started
    repo_bytes = int(ssh(f"du -sb --exclude=lock {REPOSITORY}").stdout.split()[0])

    # The copy of the (encrypted) repository holds config.json, the packs and the sealed
    # catalog (its manifest and chunk files) only: no catalog.sqlite, no index cache, and no
    # user name in any byte.
    copy = f"{COPIES}/{first['copy']}"
    held = bssh(f"cd {copy} && find . -type f | sort").stdout.split()
    assert held[:2] == ["./catalog.sealed", "./config.json"], held
    packs = [p for p in held[2:] if p.startswith("./packs/")]
    first_chunks = chunk_sizes(bssh, copy)
    assert packs and first_chunks, held
    assert held[2:] == packs + sorted(f"./sealed/{name}" for name in first_chunks), held
    assert all(re.match(r"^\./packs/[0-9a-f]{2}/[0-9a-f]{32}\.pack$", p) for p in packs)
    assert all(re.match(r"^[0-9a-f]{32}$", name) for name in first_chunks)
    # (needles of 5 bytes and more: a shorter one may turn up in random ciphertext)
    for needle in ("alice", "dovecot-uidlist", lab["mail_root"]):
        found = bssh(f"grep -rlF {shlex.quote(needle)} {copy}", check=False)
        assert found.returncode == 1 and not found.stdout, (needle, found.stdout)
    assert ssh(f"test -e {REPOSITORY}/offhost-view", check=False).returncode != 0

    # A second night: new mail, a new snapshot; only the new packs, the sealed catalog's
    # manifest and the chunks of it that changed travel.
    alice = next(a for a in lab["accounts"] if a["user"] == "alice")
    marker, msg = message("someone@example.net", alice["email"], subject="off-host copy",
                          body="x" * 200000)
    with smtp_25(lab) as smtp:
        smtp.send_message(msg)
    wait_for_delivery(ssh, lab, "alice", marker)
    packs_before = set(ssh(f"cd {REPOSITORY} && find packs -name '*.pack'").stdout.split())
    snapshot = nightly_backup(ssh)
    packs_after = set(ssh(f"cd {REPOSITORY} && find packs -name '*.pack'").stdout.split())
    new_packs = packs_after - packs_before
    assert new_packs
    started = time.monotonic()
    second = copy_job(bssh)
    second_seconds = time.monotonic() - started
    print(f"repository {repo_bytes} B; first copy {first_seconds:.1f}s "
          f"({first['files_transferred']} files, {first['bytes_received']} B received); "
          f"second night {second_seconds:.1f}s ({second['files_transferred']} files, "
          f"{second['bytes_received']} B received, {len(new_packs)} new packs)")
    new_bytes = sum(int(x) for x in ssh(
        f"cd {REPOSITORY} && stat -c %s {' '.join(sorted(new_packs))}").stdout.split())
    manifest = int(ssh(f"stat -c %s {REPOSITORY}/catalog.sealed").stdout)
    second_chunks = chunk_sizes(bssh, f"{COPIES}/{second['copy']}")
    new_chunks = {n: size for n, size in second_chunks.items() if n not in first_chunks}
    kept_chunks = sorted(set(second_chunks) & set(first_chunks))
    print(f"sealed catalog: manifest {manifest} B, {len(second_chunks)} chunks "
          f"({sum(second_chunks.values())} B), {len(new_chunks)} new "
          f"({sum(new_chunks.values())} B)")
    # new packs + the manifest + the new chunks: no old pack or chunk travelled again
    assert second["files_transferred"] <= len(new_packs) + len(new_chunks) + 2, second
    assert second["bytes_received"] < new_bytes + manifest + sum(new_chunks.values()) + \
        1024 * 1024, second
    # the old packs are hard links of the previous copy, not copies
    # (the nightly prune may have rewritten some: one both nights' repositories hold)
    # (a young repository's only pack may be rewritten by that prune: then none is shared)
    for old_pack in sorted(packs_before & packs_after)[:1]:
        links = bssh(f"stat -c %h {COPIES}/{second['copy']}/{old_pack}").stdout.strip()
        assert int(links) >= 2
    # so are the chunks of the sealed catalog that did not change (a young repository's
    # catalog is a few chunks; the first, with the generation, changes every night)
    for name in kept_chunks[:1]:
        links = bssh(f"stat -c %h {COPIES}/{second['copy']}/sealed/{name}").stdout.strip()
        assert int(links) >= 2
    assert bssh(f"readlink {COPIES}/latest").stdout.strip() == second["copy"]

    # Without the key the copy says what it needs, in one line.
    listed = bssh(f"mailstore backup list {COPIES}/latest", check=False)
    assert listed.returncode == 1 and "--key-file" in listed.stderr, listed

    # Restore alice from the copy, with the key alone (brought in for the restore only).
    key = (REPO / ".lab" / "secrets" / DATA["backup_key_secret"]).read_text()
    live = inventory(ssh, f"{lab['mail_root']}/alice/Maildir")
    bssh("install -d -m 700 /root/k && cat > /root/k/backup.key && chmod 600 /root/k/backup.key",
         input=key)
    try:
        bssh(f"rm -rf {RESTORE} && mailstore backup restore {COPIES}/latest {snapshot} "
             f"{RESTORE} --user alice --key-file /root/k/backup.key")
        restored = inventory(bssh, f"{RESTORE}/alice/Maildir")
        # Other lab tests may deliver to alice meanwhile: everything restored is live and
        # identical (owner uid/gid, mode, mtime, content), and the new message is there.
        assert restored and all(live.get(k) == v for k, v in restored.items()), \
            sorted(k for k, v in restored.items() if live.get(k) != v)
        assert bssh(f"grep -rl {marker} {RESTORE}/alice/Maildir/new {RESTORE}/alice/Maildir/cur",
                    check=False).stdout.strip()
        # A full rebuild reads the same copy: every user and the rebuild material.
        bssh(f"rm -rf {RESTORE} && mailstore backup restore {COPIES}/latest {snapshot} "
             f"{RESTORE} --key-file /root/k/backup.key && mailstore backup restore "
             f"{COPIES}/latest {snapshot} {RESTORE}-extras --extras "
             f"--key-file /root/k/backup.key")
        assert bssh(f"test -d {RESTORE}/bob/Maildir && test -s "
                    f"{RESTORE}-extras/etc/ssh/ssh_host_ed25519_key", check=False).returncode == 0
    finally:
        bssh(f"rm -rf /root/k {RESTORE} {RESTORE}-extras")


def test_root_on_the_mail_server_cannot_destroy_a_copy(lab, ssh, backup_host):
    bssh = backup_host["ssh"]
    nightly_backup(ssh)
    state = copy_job(bssh)
    copy = f"{COPIES}/{state['copy']}"
    before = bssh(f"cd {copy} && find . -type f -exec sha256sum {{}} + | sort").stdout
    address = backup_host["record"]["address"]
    # 1. The mail server has no credential for the backup host: no key logs in anywhere.
    for user in ("root", offhost.COPY_USER):
        tried = ssh(f"ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o ConnectTimeout=10 "
                    f"{user}@{address} true", check=False)
        assert tried.returncode == 255, (user, tried.stdout, tried.stderr)
    # 2. The only path between them is the backup host's pull login into the mail server,
    # forced to a read-only rsync: root on the mail server could replace that command, but it
    # runs on the mail server; it never gets a shell or a write on the backup host. And the
    # forced command itself refuses writes (as if the backup host's key were used for one).
    rsh = (f"ssh -i {offhost.SSH_KEY} -o BatchMode=yes -o IdentitiesOnly=yes "
           f"-o UserKnownHostsFile={offhost.KNOWN_HOSTS} -o StrictHostKeyChecking=yes")
    login = f"{offhost.PULL_USER}@{lab['address']}"

    def as_copies(command):
        return bssh(f"su -s /bin/sh {offhost.COPY_USER} -c {shlex.quote(command)}",
                    check=False)

    shell = as_copies(f"{rsh} {login} 'rm -rf {REPOSITORY}; id'")
    assert shell.returncode != 0 and "uid=" not in shell.stdout, shell
    bssh("rm -rf /tmp/w && mkdir -p /tmp/w && echo x > /tmp/w/packs-evil && chmod -R a+rX /tmp/w")
    upload = as_copies(f"rsync -a -e '{rsh}' /tmp/w/packs-evil {login}:./offhost-test/")
    assert upload.returncode != 0, upload
    assert ssh(f"test -e {REPOSITORY}/offhost-test", check=False).returncode != 0
    delete = as_copies(f"rsync -a --delete -e '{rsh}' /tmp/w/ {login}:./offhost-test/")
    assert delete.returncode != 0, delete
    assert ssh(f"test -f {REPOSITORY}/config.json").returncode == 0
    assert bssh(f"cd {copy} && find . -type f -exec sha256sum {{}} + | sort").stdout == before
    # 3. Root on the mail server controls what the next pull receives: it serves a tree of
    # its own (a pack truncated, the sealed catalog rewritten, a link to the copies) in place
    # of the repository. That arrives as a new copy only; the earlier copies stay as they
    # were, and the trusted side's verify (without the key) notices.
    evil = "/root/offhost-evil"
    victim = sorted(ssh(f"cd {REPOSITORY} && find packs -name '*.pack'").stdout.split())[0]
    ssh(f"rm -rf {evil} && cp -a {REPOSITORY} {evil} && rm -f {evil}/lock && "
        f"truncate -s 0 {evil}/{victim} && printf rewritten > {evil}/catalog.sealed && "
        f"ln -s {copy} {evil}/escape && "
        f"sed -i 's|^REPO=.*|REPO={evil}|' {offhost.SERVE}")
    try:
        hostile = bssh(f"su -s /bin/sh {offhost.COPY_USER} -c {offhost.JOB} </dev/null",
                       check=False, timeout=900)
        assert hostile.returncode != 0   # the verify of what arrived failed
        assert check(bssh).returncode == 2
    finally:
        ssh(f"sed -i 's|^REPO=.*|REPO={REPOSITORY}|' {offhost.SERVE} && rm -rf {evil}")
    after = bssh(f"cd {copy} && find . -type f -exec sha256sum {{}} + | sort").stdout
    assert after == before
    copy_job(bssh)   # the next good night


def test_the_copy_check_is_critical_when_stale_and_ok_when_fresh(ssh, backup_host):
    bssh = backup_host["ssh"]
    nightly_backup(ssh)
    state = copy_job(bssh)
    # inventories/lab_backup.py keeps 3 (this module's runs made more; a restore run as root
    # left a lock file in one of them, and that one went too)
    assert state["copies"] == 3
    assert len(bssh(f"ls -d {COPIES}/2*").stdout.split()) == 3
    fresh = check(bssh)
    assert fresh.returncode == 0, fresh.stdout
    assert re.match(r"^BACKUP COPY OK - copy \d{8}T\d{6}Z \d+m ago, verified", fresh.stdout)
    assert "| age=" in fresh.stdout and "verify_age=" in fresh.stdout
    time.sleep(3)
    stale = check(bssh, "--warning 1", "--critical 2")
    assert stale.returncode == 2, stale.stdout
    assert stale.stdout.startswith("BACKUP COPY CRITICAL - last copy is ")
    assert len(stale.stdout.strip().splitlines()) == 1
    # as Icinga's nagios user would run it
    assert bssh(f"su -s /bin/sh nobody -c 'mailstore check backup-copy {COPIES}'",
                check=False).returncode == 0


COPY_SERVICE = f"{topology.CONTAINERS['backup']['icinga2_host']}!{offhost.COPY_SERVICE}"


def copy_result(since, timeout=60):
    """The first result of the master's copy service pushed after `since` (unix time)."""
    query = urllib.parse.urlencode([("attrs", a) for a in ("state", "last_check_result")])
    deadline = time.time() + timeout
    attrs = None
    while time.time() < deadline:
        found = _get(f"/v1/objects/services/{urllib.parse.quote(COPY_SERVICE)}?{query}")
        attrs = found["results"][0]["attrs"]
        if (attrs["last_check_result"] or {}).get("execution_end", 0) > since:
            return attrs
        time.sleep(2)
    pytest.fail(f"{COPY_SERVICE}: no result pushed after {since} within {timeout}s; last: "
                f"{json.dumps((attrs or {}).get('last_check_result'), indent=1)[:1500]}")


def test_the_masters_copy_service_is_ok_then_critical_when_stale_or_unverified(
        ssh, backup_host):
    bssh = backup_host["ssh"]
    nightly_backup(ssh)
    started = time.time() - 1
    state = copy_job(bssh)          # the job pushes its result at its end
    fresh = copy_result(started)
    assert fresh["state"] == 0, fresh["last_check_result"]["output"]
    assert fresh["last_check_result"]["output"].startswith(
        f"BACKUP COPY OK - copy {state['copy']} ")

    # Stale: the last copy ended 7 h ago (past the lab's backup_copy_age_critical, the
    # default 6 h); the push, run by hand as the job's user, says so.
    bssh(f"python3 -c {shlex.quote(STALE)} {COPIES}/state.json {7 * 3600}")
    started = time.time() - 1
    bssh(f"su -s /bin/sh {offhost.COPY_USER} -c {offhost.PUSH} </dev/null")
    stale = copy_result(started)
    assert stale["state"] == 2, stale["last_check_result"]["output"]
    assert stale["last_check_result"]["output"].startswith(
        "BACKUP COPY CRITICAL - last copy is ")

    # A failed verify: the mail server serves a repository with a truncated pack; the
    # night's job fails and pushes CRITICAL at once.
    evil = "/root/offhost-evil"
    victim = sorted(ssh(f"cd {REPOSITORY} && find packs -name '*.pack'").stdout.split())[0]
    ssh(f"rm -rf {evil} && cp -a {REPOSITORY} {evil} && rm -f {evil}/lock && "
        f"truncate -s 0 {evil}/{victim} && sed -i 's|^REPO=.*|REPO={evil}|' {offhost.SERVE}")
    try:
        started = time.time() - 1
        failed = bssh(f"su -s /bin/sh {offhost.COPY_USER} -c {offhost.JOB} </dev/null",
                      check=False, timeout=900)
        assert failed.returncode == 1, (failed.stdout, failed.stderr)
    finally:
        ssh(f"sed -i 's|^REPO=.*|REPO={REPOSITORY}|' {offhost.SERVE} && rm -rf {evil}")
    unverified = copy_result(started)
    assert unverified["state"] == 2, unverified["last_check_result"]["output"]
    assert "FAILED" in unverified["last_check_result"]["output"]

    # The next good night is OK again.
    started = time.time() - 1
    copy_job(bssh)
    assert copy_result(started)["state"] == 0


# Ages the copy job's state file by argv[2] seconds (its "copied" time; the check reads that,
# not the file's mtime), keeping the file's owner.
STALE = """import json, sys
path, seconds = sys.argv[1], int(sys.argv[2])
with open(path) as f:
    state = json.load(f)
state["copied"] -= seconds
with open(path, "w") as f:
    json.dump(state, f)
"""


def test_a_rehearsal_from_the_copy_restores_every_message_with_the_key_alone(lab, ssh,
                                                                            backup_host):
    # README "Rebuilding from backups": the backup host's copy made available on Infra02 (in
    # the lab: the backup container's rootfs, read on the lab host), restored into a scratch
    # container beside the serving one. The copy holds the sealed catalog only: the rebuild
    # unseals it with the repository key, the one secret it needs.
    mail_both_accounts(lab, ssh, "off-host rehearsal")
    snapshot = nightly_backup(ssh)
    expected = json.loads(ssh(f"mailstore backup list {REPOSITORY} --json").stdout)[-1]
    assert expected["id"] == snapshot
    state = copy_job(backup_host["ssh"])
    copy = f"/var/lib/lxc/backup/rootfs{COPIES}/{state['copy']}"
    env = dict(os.environ)
    env.setdefault("CACERT_EMAIL_SECRETS", str(REPO / ".lab" / "secrets"))
    with lock.held():
        result = subprocess.run(
            [sys.executable, "-m", "operations.rebuild", "--json", "inventories/lab.py",
             "--from", copy, "--snapshot", snapshot, "--rehearse", "--cleanup"], cwd=REPO,
            env=env, capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["restored"]["messages"] == expected["messages"], report["restored"]
    assert report["restored"]["users"] >= 2 and report["restored"]["database_users"] >= 2
    # --cleanup: the scratch container is gone; the serving one was never touched.
    assert not Path(f"/var/lib/lxc/{topology.CONTAINER}-rehearsal").exists()
    assert ssh("systemctl is-active dovecot postfix").stdout.split() == ["active", "active"]
