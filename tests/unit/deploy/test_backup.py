"""operations/backup.py: the repository is made once, the key goes up as a file, and the job
script it installs does run, verify, prune and push, logs every step, and fails loudly."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.unit.deploy import fake_host  # noqa: F401  (puts the repository on sys.path)
from tests.unit.deploy.conftest import write_secret
from tests.unit.deploy.fake_host import run
from tests.harness import maildir_trees

from operations.defaults import defaults
from operations.secrets import InventoryError
from inventories.validate import checked
from operations import backup, dkim, icinga2_agent, secret_file, selfservice_api

KEY = "0123456789abcdef" * 4
REPO = "/srv/backup/mailstore"
SNAPSHOT = "2026-11-25T023000Z-1a2e"


@pytest.fixture
def backup_key(secrets):
    return write_secret(secrets, "backup.key", KEY + "\n")


def test_the_inventory_check_reads_the_backup_key_before_any_host(secrets, email_data):
    (secrets / "backup.key").write_text("not hex\n")
    with pytest.raises(InventoryError, match="backup.key: a backup key must be 64 hex"):
        checked("email", email_data)
    (secrets / "backup.key").unlink()
    with pytest.raises(InventoryError, match="backup.key is missing"):
        checked("email", email_data)
    assert checked("email", {**email_data, "backup_encrypt": False})


def test_the_inventory_check_names_bad_backup_data(secrets, email_data):
    with pytest.raises(InventoryError, match="backup_schedule"):
        checked("email", {**email_data, "backup_schedule": "nightly"})


def _initialised(path):
    return {"mode": 600} if path == f"{REPO}/config.json" else None


def _commands(ops):
    return [c for op in ops for c in op.commands]


def _uploads(ops):
    found = {}
    for op in ops:
        found.update(op.uploads)
    return found


def test_fresh_host_gets_key_repository_job_and_cron(backup_key):
    ops = run(backup.server)
    uploads = _uploads(ops)
    staged = secret_file.staged_path("/etc/mailstore/backup.key")
    assert uploads[staged] == KEY + "\n"
    inits = [c for c in _commands(ops) if "backup init" in c]
    assert inits == [f"/usr/local/bin/mailstore backup init {REPO} "
                     "--key-file /etc/mailstore/backup.key"]
    assert backup.JOB in uploads and backup.CRON in uploads
    # the key is uploaded, never part of a command line pyinfra prints
    assert not any(KEY in c for c in _commands(ops) if not c.startswith("FileUpload"))
    key_op = next(op for op in ops if op.name.endswith("Backup key (0600, root)"))
    assert any(f"chown root:root {staged} && chmod 600 {staged} && "
               f"mv -f {staged} /etc/mailstore/backup.key" in c for c in key_op.commands)


def test_shared_parent_directories_keep_their_mode(backup_key):
    ops = run(backup.server, data={"backup_repository": "/srv/backup",
                                   "backup_key_file": "/etc/ssl/private/backup.key"})
    assert not any(c.startswith(("chmod", "chown")) and c.split()[-1] in (
        "/srv", "/etc/ssl/private", "/usr/local/sbin", "/etc/cron.d") for c in _commands(ops))


def test_existing_repository_is_not_initialised_again_but_must_open_with_the_key(backup_key):
    ops = run(backup.server, facts={"File": _initialised})
    assert not any("backup init" in c for c in _commands(ops))
    check = [op for op in ops if "opens with the uploaded key" in op.name]
    assert len(check) == 1 and "backup find" in check[0].commands[0]


def test_unencrypted_repository_needs_no_key(secrets):
    (secrets / "backup.key").unlink()
    ops = run(backup.server, data={"backup_encrypt": False})
    assert secret_file.staged_path("/etc/mailstore/backup.key") not in _uploads(ops)
    assert not any("backup.key" in op.name.lower() or "Backup key" in op.name for op in ops)
    assert [c for c in _commands(ops) if "backup init" in c] == [
        f"/usr/local/bin/mailstore backup init {REPO}"]
    assert "--key-file" not in _uploads(ops)[backup.JOB]


@pytest.mark.parametrize("text", ["", "abc\n", KEY + "0\n", "zz" * 32 + "\n", KEY + "\n" + KEY])
def test_a_malformed_backup_key_is_refused_naming_the_file(secrets, text):
    path = secrets / "backup.key"
    path.write_text(text)
    path.chmod(0o600)
    with pytest.raises(InventoryError, match="backup.key"):
        run(backup.server)


def test_missing_backup_key_is_named(secrets):
    (secrets / "backup.key").unlink()
    with pytest.raises(InventoryError, match="backup.key is missing"):
        run(backup.server)


@pytest.mark.parametrize("change, key", [
    ({"backup_repository": "srv/backup"}, "backup_repository"),
    ({"backup_repository": "/srv/backup; rm -rf /"}, "backup_repository"),
    ({"backup_repository": "/home/mailboxes/backup"}, "backup_repository"),
    ({"backup_schedule": "30 2 * *"}, "backup_schedule"),
    ({"backup_schedule": "30 2 * * * root"}, "backup_schedule"),
    ({"backup_schedule": "@daily"}, "backup_schedule"),
    ({"backup_verify_weekday": 0}, "backup_verify_weekday"),
    ({"backup_verify_sample": 0}, "backup_verify_sample"),
    ({"backup_verify_sample": 1.5}, "backup_verify_sample"),
    ({"backup_keep": {"daily": 7}}, "backup_keep"),
    ({"backup_keep": {"daily": -1, "weekly": 1, "monthly": 1}}, "backup_keep"),
    ({"backup_keep": {"daily": 0, "weekly": 0, "monthly": 0}}, "backup_keep"),
    ({"backup_include": ["etc/postfix"]}, "backup_include"),
    ({"backup_include": "/etc/postfix"}, "backup_include"),
    ({"backup_encrypt": "yes"}, "backup_encrypt"),
    ({"mysql_database": "cacert users"}, "mysql_database"),
])
def test_bad_backup_data_is_named(change, key):
    with pytest.raises(backup.BackupDataError, match=key):
        backup.settings({**defaults(), **change})


def test_every_snapshot_holds_what_a_rebuild_cannot_make_again():
    conf = backup.settings(defaults())
    assert conf["include"][:3] == ["/etc/postfix", "/etc/dovecot", "/etc/aliases"]
    assert set(conf["include"][3:]) == {"/etc/ssh", "/var/lib/icinga2/certs",
                                        "/etc/cacert-selfservice-api", "/etc/opendkim/keys"}
    script = backup.job_script(conf)
    assert "--include /etc/ssh " in script and "--include /etc/opendkim/keys " in script
    # the paths are where the services keep them
    assert backup.DKIM_KEYS == dkim.KEY_ROOT
    assert icinga2_agent.CERTS in backup.REBUILD_MATERIAL
    assert selfservice_api.ETC in backup.REBUILD_MATERIAL
    # no DKIM key without signing; a path named twice is included once
    conf = backup.settings({**defaults(), "dkim_signing": False,
                            "backup_include": ["/etc/postfix", "/etc/ssh"]})
    assert conf["include"] == ["/etc/postfix", "/etc/ssh", "/var/lib/icinga2/certs",
                               "/etc/cacert-selfservice-api"]


@pytest.mark.parametrize("path", ["/etc", "/etc/mailstore", "/etc/mailstore/backup.key"])
def test_the_backup_key_is_never_included_in_its_own_repository(path):
    with pytest.raises(backup.BackupDataError, match="backup_include: .* holds backup_key_file"):
        backup.settings({**defaults(), "backup_include": ["/etc/postfix", path]})
    # unencrypted, there is no key to hold
    backup.settings({**defaults(), "backup_include": [path], "backup_encrypt": False})


def test_cron_line_runs_the_job_as_root_niced_at_the_schedule():
    text = backup.cron_file(backup.settings({**defaults(), "backup_schedule": "15 3 * * 1-6"}))
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert "SHELL=/bin/sh" in lines
    assert any(line.startswith("PATH=") and "/usr/local/sbin" in line for line in lines)
    (job,) = [line for line in lines if "=" not in line.split()[0]]
    assert job.split()[:6] == ["15", "3", "*", "*", "1-6", "root"]
    assert job.split()[6:] == ["nice", "-n", "10", "ionice", "-c", "2", "-n", "7", backup.JOB]


# --- the job script, run for real with stand-ins for mailstore, logger and the push ----------
# The stand-in mailstore makes any one step fail on demand (run, a run that skipped a file,
# verify, prune) and answers at once; the job with the real mailstore is tested further down
# (test_a_night_with_the_real_mailstore...). The stand-in logger writes what syslog would
# receive to a file (there is no syslog here); the push to Icinga is tested against a real
# Icinga2 in tests/integration/test_icinga.py.

def _executable(path, text):
    path.write_text(text)
    path.chmod(0o755)
    return path


def _logger_and_date(tmp_path):
    """Stand-ins for logger (into the file `syslog`: there is no syslog here) and date (`date
    +%u` answers $WEEKDAY); returns (their directory, the log file)."""
    bin_dir, log = tmp_path / "bin", tmp_path / "syslog"
    bin_dir.mkdir()
    _executable(bin_dir / "logger", f"""#!/bin/sh
# priority and message of every call; lines from stdin when there is no message
tag= prio=user.notice
while [ $# -gt 0 ]; do
    case "$1" in -t) tag=$2; shift 2 ;; -p) prio=$2; shift 2 ;; --) shift; break ;;
                 --stderr) shift ;; *) break ;; esac
done
if [ $# -gt 0 ]; then echo "$tag $prio $*" >> {log}
else while IFS= read -r line; do echo "$tag $prio $line" >> {log}; done; fi
""")
    _executable(bin_dir / "date", """#!/bin/sh
# the day of the week is the test's; anything else is the real date's
case "$*" in "+%u") echo "$WEEKDAY" ;; *) PATH=/usr/bin:/bin exec date "$@" ;; esac
""")
    return bin_dir, log


@pytest.fixture
def job(tmp_path):
    """`job(*args, fail=(), push=True, weekday=3)`: run the rendered job with a fake mailstore
    that fails the subcommands in `fail`, on ISO weekday `weekday` (a stand-in `date` answers
    `date +%u`: the job asks it which day it is); returns (exit code, mailstore calls, syslog
    lines)."""
    calls = tmp_path / "calls"
    bin_dir, log = _logger_and_date(tmp_path)
    mailstore = _executable(tmp_path / "mailstore", f"""#!/bin/sh
echo "$*" >> {calls}
case " $FAIL " in *" $2 "*) echo "mailstore backup: error: $2 went wrong" >&2; exit 1 ;; esac
if [ "$2" = run ]; then
    case " $FAIL " in *" run-warns "*) echo "mailstore backup: warning: a/b: skipped" >&2 ;; esac
    echo "mailstore backup: 3 messages (1 KiB), 0 new objects; snapshot {SNAPSHOT}"
    case " $FAIL " in *" run-warns "*) exit 1 ;; esac
    exit 0
fi
echo "mailstore backup: $2 fine"
""")
    push = tmp_path / "push"

    def call(*args, fail=(), push_present=True, lock=None, weekday=3):
        if push_present:
            _executable(push, f"#!/bin/sh\necho push >> {calls}\necho submitted OK\n")
        elif push.exists():
            push.unlink()
        script = backup.job_script(backup.settings(defaults()))
        script = script.replace(backup.MAILSTORE, str(mailstore)) \
            .replace(backup.PUSH, str(push)).replace(backup.LOCK, str(tmp_path / "lock"))
        path = _executable(tmp_path / "job", script)
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "FAIL": " ".join(fail),
               "WEEKDAY": str(weekday)}
        code = subprocess.run([str(path), *args], env=env, stdin=subprocess.DEVNULL,
                              capture_output=True).returncode
        read = (lambda p: p.read_text().splitlines() if p.exists() else [])
        return code, read(calls), read(log)
    return call


@pytest.mark.parametrize("weekday", range(1, 8))
def test_a_good_night_runs_every_step_and_exits_0(job, weekday):
    """Every night; on Sundays (the default backup_verify_weekday, 7) the data is re-read too."""
    code, calls, log = job(weekday=weekday)
    assert code == 0
    key = "--wait 900 --key-file /etc/mailstore/backup.key"
    assert calls[0] == (f"backup run {REPO} /home/mailboxes --include /etc/postfix --include "
                        f"/etc/dovecot --include /etc/aliases --include /etc/ssh --include "
                        f"/var/lib/icinga2/certs --include /etc/cacert-selfservice-api "
                        f"--include /etc/opendkim/keys --mysql-dump cacertusers {key}")
    assert calls[1] == f"backup verify {REPO} --snapshot latest {key}"
    weekly = [f"backup verify {REPO} --read-data --sample 0.1 {key}"] if weekday == 7 else []
    assert calls[2:] == weekly + [
        f"backup prune {REPO} --keep-daily 7 --keep-weekly 5 --keep-monthly 12 {key}", "push"]
    assert f"mailstore-backup user.info run: mailstore backup: 3 messages (1 KiB), 0 new " \
           f"objects; snapshot {SNAPSHOT}" in log
    assert log[-1] == f"mailstore-backup user.info done: snapshot {SNAPSHOT}"


def test_read_data_re_reads_a_sample(job):
    code, calls, _ = job("--read-data")
    assert code == 0
    assert f"backup verify {REPO} --read-data --sample 0.1 --wait 900 " \
           "--key-file /etc/mailstore/backup.key" in calls


def test_a_failed_run_exits_1_logs_errors_skips_prune_and_still_pushes(job):
    code, calls, log = job(fail=("run",))
    assert code == 1
    assert not any(c.startswith("backup prune") for c in calls)
    assert calls[-1] == "push"
    assert "mailstore-backup user.err run: mailstore backup: error: run went wrong" in log
    assert "mailstore-backup user.err run failed (exit 1)" in log
    assert log[-1] == "mailstore-backup user.err FAILED: run"


def test_a_run_that_skipped_a_file_fails_the_night_but_its_snapshot_is_pruned_around(job):
    code, calls, log = job(fail=("run-warns",))
    assert code == 1
    assert any(c.startswith("backup prune") for c in calls) and calls[-1] == "push"
    assert "mailstore-backup user.err run: mailstore backup: warning: a/b: skipped" in log
    assert log[-1] == "mailstore-backup user.err FAILED: run"


@pytest.mark.parametrize("step", ["verify", "prune"])
def test_any_failed_step_fails_the_night(job, step):
    code, calls, log = job(fail=(step,))
    assert code == 1 and calls[-1] == "push"
    assert log[-1] == f"mailstore-backup user.err FAILED: {step}"


def test_without_the_push_wrapper_the_night_says_so(job):
    code, calls, log = job(push_present=False)
    assert code == 0 and "push" not in calls
    assert any("user.warning" in line and "not pushed" in line for line in log)


def test_a_second_job_while_one_runs_does_nothing(job, tmp_path):
    lock = tmp_path / "lock"
    holder = subprocess.Popen(["flock", str(lock), "sleep", "30"])
    try:
        for _ in range(100):
            if lock.exists():
                break
            subprocess.run(["sleep", "0.05"])
        code, calls, log = job()
    finally:
        holder.kill()
        holder.wait()
    assert code == 75 and calls == []
    assert any("another run holds" in line and "user.err" in line for line in log)


def test_the_job_is_valid_posix_sh():
    script = backup.job_script(backup.settings(defaults()))
    for shell in ("sh", "bash"):
        checked = subprocess.run([shell, "-n"], input=script, text=True, capture_output=True)
        assert checked.returncode == 0, checked.stderr


# --- the job script with the real mailstore -------------------------------------------------

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def real_job(tmp_path, monkeypatch):
    """`real_job(*args, weekday=3)` -> (exit code, syslog lines, base): the rendered job run
    with the real mailstore (this checkout, this Python) on a Maildir tree and an included
    config directory below `base`, into an encrypted repository there. Only logger, date and
    the push are the stand-ins of `job`. No database dump: there is no MariaDB in this tier
    (tests/integration/test_backup_mysql.py dumps from a real one)."""
    # the job's paths must be plain (letters, digits, ._/+-): not pytest's tmp_path
    base = Path(tempfile.gettempdir()) / ("mailstore-nightly-" + os.urandom(6).hex())
    base.mkdir()
    maildir_trees.make_tree(str(base / "mail"))
    (base / "etc/postfix").mkdir(parents=True)
    (base / "etc/postfix/main.cf").write_text("myhostname = mail.cacert.test\n")
    mailstore = _executable(tmp_path / "real-mailstore", f"""#!/bin/sh
PYTHONPATH={ROOT} exec {sys.executable} -m mailstore "$@"
""")
    data = dict(defaults(), backup_repository=str(base / "repo"), mail_root=str(base / "mail"),
                backup_key_file=str(base / "backup.key"), backup_include=[str(base / "etc")],
                backup_mysql_dump=False, dkim_signing=False)
    # This machine is no deployed server: its /etc/ssh and Icinga certificates are not the
    # job's business here (the lab's backup test restores the real ones).
    monkeypatch.setattr(backup, "REBUILD_MATERIAL", [])
    subprocess.run([str(mailstore), "backup", "init", data["backup_repository"],
                    "--key-file", data["backup_key_file"], "--new-key"], check=True,
                   capture_output=True)
    bin_dir, log = _logger_and_date(tmp_path)
    push = tmp_path / "push"

    def call(*args, weekday=3):
        _executable(push, "#!/bin/sh\necho submitted OK\n")
        script = backup.job_script(backup.settings(data))
        script = script.replace(backup.MAILSTORE, str(mailstore)) \
            .replace(backup.PUSH, str(push)).replace(backup.LOCK, str(tmp_path / "lock"))
        path = _executable(tmp_path / "job", script)
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "WEEKDAY": str(weekday)}
        code = subprocess.run([str(path), *args], env=env, stdin=subprocess.DEVNULL,
                              capture_output=True).returncode
        return code, (log.read_text().splitlines() if log.exists() else []), base, mailstore
    try:
        yield call
    finally:
        shutil.rmtree(str(base))


def test_a_night_with_the_real_mailstore_snapshots_verifies_prunes_and_restores(real_job):
    code, log, base, mailstore = real_job(weekday=7)
    assert code == 0, log
    snapshot = log[-1].split("done: snapshot ")[-1]
    assert log[-1] == f"mailstore-backup user.info done: snapshot {snapshot}"
    assert any(line.startswith("mailstore-backup user.info verify-data: mailstore backup: "
                               "verify ok") for line in log), log
    assert not [line for line in log if "user.err" in line]
    key = ["--key-file", str(base / "backup.key")]
    # a second night the same day: the daily prune keeps its snapshot only
    code, log, base, mailstore = real_job(weekday=1)
    assert code == 0, log
    second = log[-1].split("done: snapshot ")[-1]
    listed = subprocess.run([str(mailstore), "backup", "list", str(base / "repo"), "--json",
                             *key], check=True, capture_output=True, text=True).stdout
    assert [s["id"] for s in json.loads(listed)] == [second] and second != snapshot
    restored = subprocess.run([str(mailstore), "backup", "restore", str(base / "repo"),
                               "latest", str(base / "restored"), *key],
                              capture_output=True, text=True)
    assert restored.returncode == 0, restored.stderr
    tree = maildir_trees.snapshot_tree
    assert tree(str(base / "restored")) == tree(str(base / "mail"))


def test_a_night_with_the_real_mailstore_and_no_repository_fails_loudly(real_job):
    code, log, base, mailstore = real_job()
    assert code == 0
    shutil.rmtree(str(base / "repo"))
    code, log, base, mailstore = real_job()
    assert code == 1
    assert any(line.startswith("mailstore-backup user.err run: mailstore backup: error: ")
               for line in log), log
    assert "mailstore-backup user.err prune skipped: no new snapshot" in log
    assert log[-1] == "mailstore-backup user.err FAILED: run verify"
