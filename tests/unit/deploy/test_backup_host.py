"""operations/backup_host.py: the off-host copy's data are validated with every problem at
once; the texts it installs say what they must; and the whole pull chain (the copy job, its
ssh, the mail server's forced command, rrsync -ro, the repository's lock) runs here against a
real repository: incremental, read-only, pruned, verified, and watched by the check.

Only `ssh` is a stand-in (no second host here): it runs the forced command locally, as sshd
would, with the requested rsync in SSH_ORIGINAL_COMMAND. sudo is left out (the test user may
read the repository).
"""
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.unit.deploy import fake_host  # noqa: F401  (puts the repository on sys.path)
from tests.unit.deploy.conftest import write_secret
from tests.harness import make_tree

from inventories.validate import problems
from mailstore import backup as mailstore_backup
from operations import backup_host

REPO_ROOT = Path(__file__).resolve().parents[3]
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEQn+9vii7ZoNLvksPT1HnD50j+fCM89lt8x9M159MsY " \
      "mailstore-copies@backup"
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIbG5tgdi2RhF/0123456789abcdefghijklmnopqr"
HOST_DATA = {"backup_copy_source": "email.cacert.test",
             "backup_copy_source_host_keys": [HOST_KEY]}


def test_valid_backup_host_data_pass():
    assert problems("backup_host", HOST_DATA) == []
    conf = backup_host.host_settings({**_defaults(), **HOST_DATA})
    assert conf["directory"] == "/srv/mailstore-copies" and conf["keep"] == 30


def test_every_problem_of_the_backup_host_is_reported_at_once():
    found = problems("backup_host", {"backup_copy_source": "email; rm -rf /",
                                     "backup_copy_source_host_keys": [],
                                     "backup_copy_dir": "relative/dir",
                                     "backup_copy_schedule": "nightly",
                                     "backup_copy_keep": 0})
    keys = [line.split(":")[0] for line in found]
    assert keys == ["backup_copy_source", "backup_copy_source_host_keys", "backup_copy_dir",
                    "backup_copy_schedule", "backup_copy_keep"], found


def test_production_names_the_backup_hosts_own_placeholders_only():
    found = problems("backup_host", {**HOST_DATA, "ssh_hostname": "PLACEHOLDER-address"},
                     production=True)
    assert found == ["ssh_hostname: 'PLACEHOLDER-address' is a placeholder; set the real value "
                     "in the inventory before the first production run"]


BACKUP_PASSWORD = "backup-copy-Secret-7"


@pytest.fixture
def icinga_data(secrets, pki, tmp_path):
    """The backup host's data with backup_copy_icinga: a CA file and the password secret."""
    ca = tmp_path / "master-ca.pem"
    ca.write_text(pki.pem_root())
    write_secret(secrets, "icinga2_api_backup_copy.password", BACKUP_PASSWORD + "\n")
    return {**HOST_DATA, "backup_copy_icinga": {
        "host": "backup.infra.cacert.test", "url": "https://10.0.3.1:5665/",
        "tls_name": "master.cacert.test", "ca": str(ca), "user": "mailstore-backup-copy",
        "password_secret": "icinga2_api_backup_copy.password"}}


def test_valid_icinga_data_pass_and_none_means_not_monitored(icinga_data):
    assert problems("backup_host", icinga_data) == []
    conf = backup_host.host_settings({**_defaults(), **icinga_data})
    assert conf["icinga"]["url"] == "https://10.0.3.1:5665" and conf["icinga"]["zone"] == "master"
    assert (conf["age_warning"], conf["age_critical"]) == (4 * 3600, 6 * 3600)
    assert backup_host.host_settings({**_defaults(), **HOST_DATA})["icinga"] is None
    # tls_name may be left out: the URL's host is then verified
    icinga = dict(icinga_data["backup_copy_icinga"])
    del icinga["tls_name"]
    assert problems("backup_host", {**icinga_data, "backup_copy_icinga": icinga}) == []


def test_every_problem_of_the_icinga_data_is_reported_at_once(icinga_data):
    found = problems("backup_host", {**HOST_DATA, "backup_copy_age_warning": 0,
                                     "backup_copy_icinga": {
                                         "host": "backup; reboot", "url": "http://monitor",
                                         "tls_name": None, "ca": "", "user": "u",
                                         "password_secret": "../pw"}})
    assert found == [
        "backup_copy_age_warning: 0 must be a whole number of seconds >= 1",
        "backup_copy_icinga['host']: 'backup; reboot' is not a usable name",
        "backup_copy_icinga['password_secret']: '../pw' is not a usable name",
        "backup_copy_icinga['url']: 'http://monitor' must be https://host[:port]",
        "backup_copy_icinga['ca']: '' must name the master's CA (a PEM file, path relative "
        "to the repository root)"], found
    assert problems("backup_host", {**HOST_DATA, "backup_copy_icinga": {"host": "h"}}) == [
        "backup_copy_icinga: must be None or a dict with the keys host, url, tls_name, ca, "
        "user, password_secret (tls_name may be left out)"]
    assert problems("backup_host", {**HOST_DATA, "backup_copy_age_warning": 7200,
                                    "backup_copy_age_critical": 3600}) == [
        "backup_copy_age_warning: must not exceed backup_copy_age_critical"]


def test_the_icinga_password_and_ca_are_read_before_any_host(icinga_data, secrets, tmp_path):
    (secrets / "icinga2_api_backup_copy.password").unlink()
    assert problems("backup_host", icinga_data) == [
        f"secret {secrets.resolve()}/icinga2_api_backup_copy.password is missing"]
    write_secret(secrets, "icinga2_api_backup_copy.password", BACKUP_PASSWORD + "\n")
    (tmp_path / "master-ca.pem").write_text("not a certificate\n")
    assert problems("backup_host", icinga_data) == [
        f"backup_copy_icinga['ca']: {tmp_path}/master-ca.pem holds no PEM certificate"]


def test_the_mail_servers_pull_data_are_checked(secrets, email_data):
    assert backup_host.source_settings({**_defaults(), **email_data}) is None
    found = problems("email", {**email_data, "backup_pull_keys": ["command=\"sh\" " + KEY],
                               "backup_pull_from": []})
    assert [line for line in found if line.startswith("backup_pull")] == [
        "backup_pull_keys: 'command=\"sh\" ssh-ed25519 AAAAC3NzaC1lZDI'... is not one SSH "
        "public key line (TYPE BASE64 [COMMENT], no options: the deploy adds them)",
        "backup_pull_from: empty, but backup_pull_keys names a key: list the backup host's "
        "addresses (the key works from nowhere else)"]
    ok = {**email_data, "backup_pull_keys": [KEY], "backup_pull_from": ["10.0.3.39"]}
    assert [line for line in problems("email", ok) if "backup_pull" in line] == []


def _defaults():
    from operations.defaults import defaults
    return defaults()


def _source_conf(repository="/srv/backup/mailstore"):
    return {"keys": [KEY], "sources": ["10.0.3.39", "2001:db8::39"],
            "repository": repository}


def test_the_key_is_forced_to_the_serve_command_from_the_backup_host_only():
    lines = [line for line in backup_host.authorized_keys(_source_conf()).splitlines()
             if line and not line.startswith("#")]
    assert lines == ['restrict,from="10.0.3.39,2001:db8::39",command="/usr/bin/sudo -n '
                     '/usr/local/sbin/mailstore-backup-serve" ' + KEY]


def test_the_sudoers_rule_allows_the_serve_command_without_arguments(tmp_path):
    text = backup_host.sudoers(_source_conf())
    assert 'mailstore-pull ALL=(root) NOPASSWD: /usr/local/sbin/mailstore-backup-serve ""' \
        in text
    path = tmp_path / "sudoers"
    path.write_text(text)
    if shutil.which("visudo"):
        checked = subprocess.run(["visudo", "-cf", str(path)], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_known_hosts_name_the_source_with_its_keys_only():
    conf = backup_host.host_settings({**_defaults(), **HOST_DATA})
    assert backup_host.known_hosts(conf) == f"email.cacert.test {HOST_KEY}\n"


def test_the_cron_line_runs_the_job_as_the_copies_user():
    conf = backup_host.host_settings({**_defaults(), **HOST_DATA})
    jobs = [line for line in backup_host.cron_file(conf).splitlines()
            if line and not line.startswith("#") and "=" not in line]
    assert jobs == ["30 5 * * * mailstore-copies nice -n 10 ionice -c 2 -n 7 "
                    "/usr/local/sbin/mailstore-copy-job"]


# --- the whole chain, here ------------------------------------------------------------------
FAKE_SSH = """#!/bin/sh
# sshd's part: skip ssh's options and the destination, run the forced command with the
# requested command in SSH_ORIGINAL_COMMAND.
while [ $# -gt 0 ]; do
    case "$1" in
        -i|-o|-p|-l) shift 2 ;;
        -*) shift ;;
        *) shift; break ;;
    esac
done
SSH_ORIGINAL_COMMAND="$*" SSH_CLIENT="127.0.0.1 40000 22" exec sh {serve}
"""


@pytest.fixture(params=["encrypted", "unencrypted"])
def chain(tmp_path, request):
    """A repository with one snapshot (encrypted: its catalog travels sealed; unencrypted:
    whole), the mail server's serve script for it, the copy job for a copies directory, and
    `run()` / `check()` / `snapshot()` to drive them."""
    if not (shutil.which("rrsync") and shutil.which("rsync") and shutil.which("flock")):
        pytest.fail("rsync (with rrsync) and flock are needed: see tests/packages")
    src, repo, copies, bin_dir = (tmp_path / n for n in ("src", "repo", "copies", "bin"))
    key = str(tmp_path / "key") if request.param == "encrypted" else None
    make_tree(str(src))
    mailstore_backup.init(str(repo), key_file=key)
    mailstore_backup.run(str(repo), str(src), key_file=key)
    copies.mkdir()
    bin_dir.mkdir()
    mailstore = bin_dir / "mailstore"
    mailstore.write_text(f"#!/bin/sh\nPYTHONPATH={REPO_ROOT} exec {sys.executable} "
                         "-m mailstore \"$@\"\n")
    serve = tmp_path / "serve"
    serve.write_text(backup_host.serve_script(_source_conf(str(repo))).replace(
        backup_host.RRSYNC, shutil.which("rrsync")).replace(
        f"MAILSTORE={mailstore_backup_path()}", f"MAILSTORE={mailstore}"))
    (bin_dir / "ssh").write_text(FAKE_SSH.format(serve=serve))
    for script in (bin_dir / "ssh", mailstore):
        script.chmod(0o755)
    conf = {"source": "email.cacert.test", "host_keys": [HOST_KEY], "directory": str(copies),
            "schedule": "30 5 * * *", "keep": 2, "age_warning": 14400, "age_critical": 21600,
            "icinga": None}
    job = tmp_path / "job"
    job.write_text(backup_host.job_script(conf).replace(
        f"MAILSTORE={mailstore_backup_path()}", f"MAILSTORE={mailstore}"))
    job.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}

    class Chain:
        def run(self):
            ran = subprocess.run([str(job)], env=env, capture_output=True, text=True,
                                 stdin=subprocess.DEVNULL, timeout=120)
            state = json.loads((copies / "state.json").read_text()) \
                if (copies / "state.json").exists() else None
            return ran, state

        def check(self, *args):
            return subprocess.run([str(mailstore), "check", "backup-copy", str(copies), *args],
                                  capture_output=True, text=True, timeout=60)

        def snapshot(self):
            # a night later: rsync's quick check (size and mtime, in seconds) would take a
            # sealed catalog manifest of the same size written in the same second as the
            # last copy's for that one, and link it; nights are hours apart
            time.sleep(1.1)
            (src / "alice" / "Maildir" / "new").mkdir(parents=True, exist_ok=True)
            (src / "alice" / "Maildir" / "new" / f"{len(os.listdir(repo / 'packs'))}.x") \
                .write_bytes(os.urandom(100000))
            return mailstore_backup.run(str(repo), str(src), key_file=key)

    chain = Chain()
    chain.repo, chain.copies, chain.src, chain.key = repo, copies, src, key
    chain.serve, chain.env = serve, env
    return chain


def mailstore_backup_path():
    from operations import backup
    return backup.MAILSTORE


def _packs(root):
    return sorted(str(p.relative_to(root)) for p in root.glob("packs/*/*.pack"))


def _chunks(root):
    """The sealed catalog's chunk files (an encrypted repository's)."""
    return sorted(str(p.relative_to(root)) for p in root.glob("sealed/*"))


def test_the_job_copies_incrementally_read_only_and_prunes(chain):
    ran, first = chain.run()
    assert ran.returncode == 0, ran.stderr
    copy1 = chain.copies / first["copy"]
    assert _packs(copy1) == _packs(chain.repo) and first["verify_ok"]
    assert os.readlink(chain.copies / "latest") == first["copy"]

    chain.snapshot()
    new = set(_packs(chain.repo)) - set(_packs(copy1))
    assert new
    ran, second = chain.run()
    assert ran.returncode == 0, ran.stderr
    copy2 = chain.copies / second["copy"]
    # only the new packs (and the catalog, index and config that changed; of a sealed
    # catalog its manifest and new chunks) travelled
    new_chunks = set(_chunks(copy2)) - set(_chunks(copy1))
    assert second["files_transferred"] <= len(new) + len(new_chunks) + 3, second
    for path in _packs(copy1) + sorted(set(_chunks(copy1)) & set(_chunks(copy2))):
        assert os.stat(copy1 / path).st_ino == os.stat(copy2 / path).st_ino
    # (`lock`: made by the verify step, which runs as root here; the copies' user cannot)
    for path in [copy2, *(p for p in copy2.rglob("*") if p.name != "lock")]:
        assert not os.lstat(path).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH), path
    # a copy is a repository: restore reads it
    listed = mailstore_backup.list_snapshots(str(copy2), key_file=chain.key)
    assert len(listed) == len(mailstore_backup.list_snapshots(str(chain.repo),
                                                              key_file=chain.key))

    chain.snapshot()
    ran, third = chain.run()
    assert ran.returncode == 0, ran.stderr
    names = sorted(p.name for p in chain.copies.iterdir() if p.name[:1].isdigit())
    assert names == sorted([second["copy"], third["copy"]])  # keep 2: the first is pruned
    assert third["copies"] == 2
    # pruning left the files the newer copies share read-only
    copy3 = chain.copies / third["copy"]
    for path in (p for p in copy3.rglob("*") if p.is_file() and p.name != "lock"):
        assert not os.lstat(path).st_mode & stat.S_IWUSR, path


def test_an_encrypted_repositorys_copy_holds_no_name_header_or_owner(chain):
    """Every byte the pull brought, through the serve script and rrsync as installed."""
    ran, state = chain.run()
    assert ran.returncode == 0, ran.stderr
    copy = chain.copies / state["copy"]
    served = sorted(str(p.relative_to(copy)) for p in copy.rglob("*") if p.is_file())
    if chain.key is None:
        # nothing to hide: served whole, as before (but tmp/; `lock`: the verify's, as root)
        assert "catalog.sqlite" in served and "config.json" in served
        assert not [p for p in served if p.startswith("tmp/")]
        return
    assert _chunks(copy) and _chunks(copy) == _chunks(chain.repo)
    assert served == ["catalog.sealed", "config.json", *_packs(copy), *_chunks(copy)]
    assert not (chain.repo / "offhost-view").exists()     # the serve script's view is gone
    needles = {b"alice", b"bob", b"Archive.2024", b"Trash", b"mail.cacert.test",
               b"example.org", b"Sender 1", b"R=C3=A9union", b"Nov 2026",
               str(chain.src).encode(), b"dovecot-uidlist"}
    for path in (p for p in chain.src.rglob("*") if p.is_file() and p.parent.name in
                 ("cur", "new")):
        digest = hashlib.sha256(path.read_bytes())
        needles |= {digest.hexdigest().encode(), digest.digest()}
    for rel in served:
        data = (copy / rel).read_bytes()
        for needle in needles:
            assert needle not in data and needle not in rel.encode(), (rel, needle)


@pytest.mark.parametrize("chain", ["encrypted"], indirect=True)
def test_an_older_sealed_catalog_served_again_fails_the_nights_verify(chain, tmp_path):
    ran, _ = chain.run()
    assert ran.returncode == 0, ran.stderr
    old = (chain.repo / "catalog.sealed").read_bytes()
    chain.snapshot()
    ran, good = chain.run()
    assert ran.returncode == 0 and good["verify_ok"], ran.stderr
    # root on the mail server (or a damaged disk) serves the first night's catalog again
    time.sleep(1.1)     # (not in the second of the last seal: see Chain.snapshot)
    (chain.repo / "catalog.sealed").write_bytes(old)
    ran, bad = chain.run()
    assert ran.returncode == 1 and "FAILED: verify" in ran.stderr, ran.stderr
    assert bad["verify_ok"] is False
    verify = subprocess.run([str(tmp_path / "bin" / "mailstore"), "backup", "verify",
                             str(chain.copies / bad["copy"]), "--previous",
                             str(chain.copies / good["copy"])],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "MAILSTORE_KEY_FILE": ""})
    assert verify.returncode == 1 and "older than the previous copy's" in verify.stderr
    assert chain.check().returncode == 2


def test_the_forced_command_refuses_writes(chain, tmp_path):
    ran, state = chain.run()
    assert ran.returncode == 0, ran.stderr
    (tmp_path / "evil").write_text("x")
    for args in (["rsync", "-a", str(tmp_path / "evil"), "h:./"],
                 ["rsync", "-a", "--delete", str(tmp_path / "copies") + "/", "h:./"]):
        pushed = subprocess.run(args, env={**os.environ, "PATH": f"{tmp_path / 'bin'}:"
                                           f"{os.environ['PATH']}"},
                                capture_output=True, text=True, timeout=60)
        assert pushed.returncode != 0, pushed
    assert not (chain.repo / "evil").exists() and (chain.repo / "config.json").exists()
    shell = subprocess.run([str(tmp_path / "bin" / "ssh"), "h", "rm", "-rf", str(chain.repo)],
                           capture_output=True, text=True, timeout=60)
    assert shell.returncode != 0 and (chain.repo / "config.json").exists()


def test_the_check_follows_the_copies(chain):
    missing = chain.check()
    assert missing.returncode == 2
    assert missing.stdout.startswith("BACKUP COPY CRITICAL - no copy in ")
    ran, _ = chain.run()
    assert ran.returncode == 0, ran.stderr
    fresh = chain.check()
    assert fresh.returncode == 0 and " | age=" in fresh.stdout, fresh.stdout
    state = json.loads((chain.copies / "state.json").read_text())
    state["copied"] -= 3 * 86400
    (chain.copies / "state.json").write_text(json.dumps(state))
    stale = chain.check()
    assert stale.returncode == 2 and "last copy is" in stale.stdout, stale.stdout
    assert chain.check("-w", "400000", "-c", "500000").returncode == 0
    state["verify_ok"] = False
    (chain.copies / "state.json").write_text(json.dumps(state))
    failed = chain.check("-w", "400000", "-c", "500000")
    assert failed.returncode == 2 and "FAILED" in failed.stdout, failed.stdout
    (chain.copies / "state.json").write_text("{")
    assert chain.check().returncode == 3


# --- the deploys, on a fake host ------------------------------------------------------------
LINUX = {"Os": "Linux", "LinuxName": "Debian", "Groups": [], "Users": {},
         "Which": "/usr/sbin/useradd"}


def test_no_pull_key_installs_nothing_on_the_mail_server(secrets):
    assert fake_host.run(backup_host.pull_access) == []


def test_the_mail_servers_side_is_the_forced_key_the_serve_script_and_sudoers(secrets):
    from tests.unit.deploy.fake_host import run
    ops = run(backup_host.pull_access, data={"backup_pull_keys": [KEY],
                                             "backup_pull_from": ["10.0.3.39"],
                                             "debian_release": "bookworm"}, facts=LINUX)
    uploads = {}
    for op in ops:
        uploads.update(op.uploads)
    assert uploads[backup_host.AUTHORIZED_KEYS].rstrip().endswith(KEY)
    serve = uploads[backup_host.SERVE]
    # rrsync -ro serves the view `mailstore backup export` made, under the repository's lock
    assert 'view=$("$MAILSTORE" backup export "$REPO")' in serve
    assert '"$RRSYNC" -ro "$view"' in serve and 'flock -x' in serve
    assert "MAILSTORE=/usr/local/bin/mailstore" in serve
    # Debian's rsync ships /usr/bin/rrsync on every release (bullseye's too): nothing else
    assert backup_host.RRSYNC == "/usr/bin/rrsync"


def test_the_backup_hosts_key_is_made_once(secrets):
    from tests.unit.deploy.fake_host import run
    fresh = run(backup_host.copies, data=HOST_DATA, groups=("backup_host",), facts=LINUX)
    assert [op for op in fresh if "ssh-keygen" in " ".join(op.commands)]
    again = run(backup_host.copies, data=HOST_DATA, groups=("backup_host",),
                facts={**LINUX, "File": lambda path: {"mode": 600}
                       if path == backup_host.SSH_KEY else None})
    assert not [op for op in again if "ssh-keygen" in " ".join(op.commands)]


# --- the backup host in Icinga --------------------------------------------------------------
def _deployed(data, facts=None):
    from tests.unit.deploy.fake_host import run
    return run(backup_host.copies, data=data, groups=("backup_host",),
               facts={**LINUX, **(facts or {})})


def _register_ops(ops):
    return [op for op in ops if any("icinga register" in c for c in op.commands)]


def test_the_copys_service_is_registered_from_the_backup_host(icinga_data):
    ops = _deployed(icinga_data)
    uploads = {}
    for op in ops:
        uploads.update(op.uploads)
    desc = json.loads(uploads[backup_host.ICINGA_DESCRIPTION])
    # what the master gets: one passive service on the backup host's Host object, CRITICAL
    # when no result came for 26 h (the format and planner mailstore itself uses)
    from mailstore import icinga
    [service] = icinga.desired_objects(icinga.parse_description(desc))
    assert service.type == "Service"
    assert service.name == "backup.infra.cacert.test!mailstore-backup-copy"
    assert service.attrs["check_command"] == "dummy" and service.attrs["zone"] == "master"
    assert service.attrs["check_interval"] == 26 * 3600
    assert service.attrs["vars"]["dummy_state"] == 2
    [register] = _register_ops(ops)
    command = register.commands[0]
    assert command.startswith(
        "/usr/local/bin/mailstore icinga register --url https://10.0.3.1:5665 --tls-name "
        "master.cacert.test --ca /etc/mailstore/icinga/backup-copy-ca.pem --credentials "
        "/etc/mailstore/icinga/backup-copy.credentials --description "
        "/etc/mailstore/icinga/backup-copy.json && echo ")
    # nothing else on the master is this host's to prune (the mail server's commands are not)
    assert "--prune" not in command
    # recorded: no second registration, unless the master drifted
    digest = command.rsplit("echo ", 1)[1].split()[0]
    assert _register_ops(_deployed(icinga_data, {"FileContents": [digest],
                                                 "RegistrationPending": []})) == []
    assert _register_ops(_deployed(icinga_data, {
        "FileContents": [digest], "RegistrationPending": [
            "created Service backup.infra.cacert.test!mailstore-backup-copy"]}))


def test_the_api_password_travels_only_in_the_credentials_upload(icinga_data):
    ops = _deployed(icinga_data)
    carrying = [(op.name, dest) for op in ops for dest, text in op.uploads.items()
                if BACKUP_PASSWORD in text]
    # no command line holds it (the registration names the credentials file)
    assert not [op.name for op in ops for c in op.commands if BACKUP_PASSWORD in c]
    staged = "/etc/mailstore/icinga/.backup-copy.credentials.upload/backup-copy.credentials"
    assert [(name.split(" | ")[-1], dest) for name, dest in carrying] == [
        ("This host's Icinga API credentials", staged)]
    [secret] = [op for op in ops if op.name.endswith("This host's Icinga API credentials")]
    # root's, and the copies user's group's: the job runs as that user and pushes
    assert f"chown root:mailstore-copies {staged} && chmod 640 {staged}" in \
        " ".join(secret.commands)
    assert json.loads(next(iter(secret.uploads.values()))) == {
        "username": "mailstore-backup-copy", "password": BACKUP_PASSWORD}


def test_without_icinga_the_push_command_goes_and_the_job_pushes_nothing(secrets):
    ops = _deployed(HOST_DATA, {"File": lambda path: {"mode": 755}
                                if path == backup_host.PUSH else None})
    assert not _register_ops(ops)
    [removed] = [op for op in ops if "No Icinga push" in op.name]
    assert removed.commands == [f"rm -f {backup_host.PUSH}"]
    conf = backup_host.host_settings({**_defaults(), **HOST_DATA})
    assert backup_host.PUSH not in backup_host.job_script(conf)


def test_the_push_script_submits_the_check_with_the_inventorys_thresholds(icinga_data):
    conf = backup_host.host_settings({**_defaults(), **icinga_data,
                                      "backup_copy_age_warning": 600,
                                      "backup_copy_age_critical": 900})
    script = backup_host.push_script(conf)
    words = " ".join(line.rstrip("\\").strip() for line in script.splitlines()
                     if not line.startswith("#")).split()
    assert words == [
        "exec", "/usr/local/bin/mailstore", "icinga", "push", "--url", "https://10.0.3.1:5665",
        "--tls-name", "master.cacert.test", "--ca", backup_host.ICINGA_CA, "--credentials",
        backup_host.ICINGA_CREDENTIALS, "--host", "backup.infra.cacert.test", "--service",
        "mailstore-backup-copy", "--", "backup-copy", "/srv/mailstore-copies", "-w", "600",
        "-c", "900"]
    checked = subprocess.run(["sh", "-n"], input=script, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


# The push, in the whole chain: no Icinga here (the integration tier has one), so `mailstore
# icinga push` is a stand-in that runs what the real one runs (`mailstore check` with the
# arguments after --) and records the state it would submit; the push script and the job
# are the rendered ones.
FAKE_PUSH = """#!/bin/sh
[ ! -e {down} ] || {{ echo "mailstore icinga: error: cannot connect to the master" >&2; exit 1; }}
while [ "$1" != "--" ]; do shift; done
shift
out=$({mailstore} check "$@")
rc=$?
printf '%s\\t%s\\n' "$rc" "$(echo "$out" | head -n 1)" >> {results}
echo "submitted $rc"
"""


@pytest.fixture
def pushing(chain, icinga_data, tmp_path):
    conf = backup_host.host_settings({**_defaults(), **icinga_data,
                                      "backup_copy_dir": str(chain.copies)})
    conf["keep"] = 2
    mailstore = tmp_path / "bin" / "mailstore"
    fake = tmp_path / "bin" / "icinga-push"
    fake.write_text(FAKE_PUSH.format(down=tmp_path / "down", mailstore=mailstore,
                                     results=tmp_path / "pushed"))
    push = tmp_path / "push"
    push.write_text(backup_host.push_script(conf).replace(
        f"{mailstore_backup_path()} icinga push", str(fake)))
    job = tmp_path / "job"
    job.write_text(backup_host.job_script(conf).replace(
        f"MAILSTORE={mailstore_backup_path()}", f"MAILSTORE={mailstore}").replace(
        backup_host.PUSH, str(push)))
    for script in (fake, push, job):
        script.chmod(0o755)

    def pushed():
        path = tmp_path / "pushed"
        lines = path.read_text().splitlines() if path.exists() else []
        return [(int(line.split("\t")[0]), line.split("\t")[1]) for line in lines]
    chain.pushed, chain.push, chain.down = pushed, push, tmp_path / "down"
    return chain


def _age_state(chain, seconds):
    state = json.loads((chain.copies / "state.json").read_text())
    state["copied"] -= seconds
    (chain.copies / "state.json").write_text(json.dumps(state))


@pytest.mark.parametrize("chain", ["encrypted"], indirect=True)
def test_every_night_pushes_its_result_and_a_failed_one_is_critical(pushing):
    chain = pushing
    ran, _ = chain.run()
    assert ran.returncode == 0, ran.stderr
    [(status, line)] = chain.pushed()
    assert status == 0 and line.startswith("BACKUP COPY OK - copy "), line
    # a night whose copy fails (the source unreachable) still pushes: yesterday's copy is
    # older than backup_copy_age_critical, so CRITICAL at once
    _age_state(chain, 86400)
    serve = chain.serve.read_text()
    chain.serve.write_text("#!/bin/sh\nexit 12\n")
    ran, _ = chain.run()
    chain.serve.write_text(serve)
    assert ran.returncode == 1 and "FAILED: copy" in ran.stderr, ran.stderr
    status, line = chain.pushed()[-1]
    assert status == 2 and line.startswith("BACKUP COPY CRITICAL - last copy is "), line
    # the next good night is OK again
    ran, _ = chain.run()
    assert ran.returncode == 0 and chain.pushed()[-1][0] == 0, ran.stderr


@pytest.mark.parametrize("chain", ["encrypted"], indirect=True)
def test_a_failed_verify_pushes_critical(pushing):
    chain = pushing
    ran, _ = chain.run()
    assert ran.returncode == 0, ran.stderr
    old = (chain.repo / "catalog.sealed").read_bytes()
    chain.snapshot()
    ran, _ = chain.run()
    assert ran.returncode == 0 and chain.pushed()[-1][0] == 0, ran.stderr
    time.sleep(1.1)     # (not in the second of the last seal: see Chain.snapshot)
    (chain.repo / "catalog.sealed").write_bytes(old)   # an older night's catalog served again
    ran, state = chain.run()
    assert ran.returncode == 1 and not state["verify_ok"], ran.stderr
    status, line = chain.pushed()[-1]
    assert status == 2 and "FAILED" in line, line


@pytest.mark.parametrize("chain", ["unencrypted"], indirect=True)
def test_a_failed_push_fails_the_job_and_a_stale_copy_pushed_by_hand_is_critical(pushing):
    chain = pushing
    chain.down.write_text("")
    ran, state = chain.run()
    assert state["verify_ok"] and chain.pushed() == []
    assert ran.returncode == 1, ran.stderr
    assert "icinga: push of mailstore-backup-copy FAILED: mailstore icinga: error: cannot " \
        "connect to the master" in ran.stderr
    chain.down.unlink()
    _age_state(chain, 5 * 3600)      # between backup_copy_age_warning and _critical
    by_hand = subprocess.run([str(chain.push)], env=chain.env, capture_output=True, text=True,
                             timeout=60)
    assert by_hand.returncode == 0, by_hand.stderr
    assert chain.pushed()[-1][0] == 1
    _age_state(chain, 2 * 3600)
    subprocess.run([str(chain.push)], env=chain.env, check=True, timeout=60)
    status, line = chain.pushed()[-1]
    assert status == 2 and line.startswith("BACKUP COPY CRITICAL - last copy is "), line
