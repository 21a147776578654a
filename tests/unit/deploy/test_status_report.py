"""The status command's output, exit status and usage errors, and the checks it reads on the
host over SSH.

The host's systemctl and fail2ban-client cannot run here (no systemd as PID 1, no fail2ban):
for those, `run` is a stand-in returning what those commands print on a Debian host. The
backup check runs the real `mailstore check backup` on this machine against a real
repository made by `mailstore backup`, only reached through a local runner instead of SSH.
"""
import json
import os
import shlex
import subprocess
import sys
import time

import pytest

from operations import host_checks, status
from operations.check_result import FAIL, OK, SKIP, WARN, Result
from operations.defaults import defaults

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
RESULTS = [("email.cacert.test", Result(OK, "port smtp/25", "answers")),
           ("email.cacert.test", Result(WARN, "cert imaps/993", "10 days left")),
           ("email.cacert.test", Result(SKIP, "dns SSHFP", "not checked"))]


def test_text_is_one_line_per_check_and_a_summary():
    lines = status.render(RESULTS, as_json=False).splitlines()
    assert lines[0].split() == ["OK", "port", "smtp/25", "answers"]
    assert lines[1].startswith("WARN  cert imaps/993  ")
    assert lines[-1] == "summary: 1 OK, 1 WARN, 0 FAIL, 1 SKIP"
    assert len(lines) == len(RESULTS) + 1


def test_several_hosts_are_named_on_each_line():
    two = RESULTS[:1] + [("other.test", Result(FAIL, "service postfix", "inactive"))]
    lines = status.render(two, as_json=False).splitlines()
    assert lines[1] == "other.test: FAIL  service postfix  inactive"


def test_json_is_a_list_of_objects():
    parsed = json.loads(status.render(RESULTS, as_json=True))
    assert parsed[1] == {"host": "email.cacert.test", "status": "WARN",
                         "check": "cert imaps/993", "detail": "10 days left"}


def test_exit_status_is_1_only_when_a_check_failed():
    assert status.exit_status(RESULTS) == 0   # WARN and SKIP pass
    assert status.exit_status(RESULTS + [("h", Result(FAIL, "backup", "old"))]) == 1


def cli(*args):
    return subprocess.run([sys.executable, "-m", "operations.status", *args], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": REPO}, capture_output=True,
                          text=True, timeout=60)


def test_help_goes_to_stdout():
    result = cli("--help")
    assert result.returncode == 0 and "--backup-max-age" in result.stdout


@pytest.mark.parametrize("args,message", [
    (["--source", "10.0.3", "inventories/lab.py"], "--source: '10.0.3' is not an IP address"),
    (["--ca", "/nonexistent.pem", "inventories/lab.py"], "--ca: /nonexistent.pem is not"),
    (["inventories/nonexistent.py"], "inventories/nonexistent.py: no such inventory file"),
])
def test_bad_usage_is_one_line_and_exit_2_before_any_host_is_contacted(args, message):
    result = cli(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m operations.status: ")
    assert message in result.stderr and result.stdout == ""


def test_every_bad_option_is_listed():
    result = cli("--source", "x", "--timeout", "0", "--backup-max-age", "-1", "nowhere.py")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 4, result.stderr


def test_bad_inventory_data_stops_before_any_host_is_contacted(tmp_path):
    # 192.0.2.1 (TEST-NET-1) answers nothing: a connection attempt would take its timeout.
    inventory = tmp_path / "inventory.py"
    inventory.write_text('email = [("mail.test", {"ssh_hostname": "192.0.2.1", '
                         '"status_source": "nowhere", "status_backup_max_age": 0})]\n')
    started = time.monotonic()
    result = cli(str(inventory))
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "python -m operations.status: mail.test: --source/status_source: 'nowhere' is not "
        "an IP address",
        "python -m operations.status: mail.test: --backup-max-age/status_backup_max_age: 0 "
        "must be a positive number"]
    assert time.monotonic() - started < 20


def test_bad_inventory_data_is_listed_at_once():
    class Args:
        source = nameserver = ca = backup_max_age = None
        timeout = 1
    data = {**defaults(), "status_dns_unpublished": ["SSHFP", "CNAME"],
            "status_source": "nowhere"}
    with pytest.raises(status.UsageError) as info:
        status.settings(Args, data)
    problems = str(info.value).splitlines()
    assert len(problems) == 2
    assert any("status_dns_unpublished: CNAME" in p for p in problems)
    assert any("status_source: 'nowhere'" in p for p in problems)


# --- checks read on the host ------------------------------------------------------------------

def standin(outputs):
    """A `run` answering each command that starts with a key of `outputs`."""
    def run(command):
        for start, answer in outputs.items():
            if command.startswith(start):
                return answer
        raise AssertionError(f"unexpected command {command!r}")
    return run


def test_units_come_from_the_deploy_and_its_data():
    data = defaults()
    units = host_checks.expected_units(data)
    assert {"postfix", "dovecot", "opendkim", "cacert-selfservice-api", "nftables"} <= set(units)
    assert "opendkim" not in host_checks.expected_units({**data, "dkim_signing": False})
    assert "extra-daemon" in host_checks.expected_units({**data, "crl_consumers": ["extra-daemon"]})


def test_an_inactive_service_fails_naming_it():
    results = host_checks.service_checks(
        standin({"systemctl is-active": (3, "active\ninactive\nactive")}),
        ["dovecot", "postfix", "ssh"])
    assert [(r.status, r.check, r.detail) for r in results] == [
        (OK, "service dovecot", "active"), (FAIL, "service postfix", "inactive"),
        (OK, "service ssh", "active")]


def test_fail2ban_must_run_every_jail_of_the_deploy():
    jails = host_checks.expected_jails()
    assert jails == ["dovecot", "postfix", "postfix-sasl", "sshd"]
    listing = "Status\n|- Number of jail:\t3\n`- Jail list:\tdovecot, postfix, sshd"
    [result] = host_checks.fail2ban_checks(standin({"fail2ban-client": (0, listing)}), jails)
    assert result.status == FAIL and "jails not running: postfix-sasl" in result.detail
    [down] = host_checks.fail2ban_checks(standin({"fail2ban-client": (
        255, "ERROR   Failed to access socket path: /var/run/fail2ban/fail2ban.sock")}), jails)
    assert down.status == FAIL and "not running" in down.detail


def test_a_command_that_does_not_finish_fails_its_check():
    [result] = host_checks.service_checks(standin({"systemctl": (None, "Timeout: 60s")}),
                                          ["postfix"])
    assert (result.status, result.check) == (FAIL, "services")


def test_the_exit_status_is_read_from_the_wrapped_output():
    # what pyinfra_runner's wrapper prints: the command's output, then the mark
    assert host_checks._split_exit("active\ninactive\n__status_exit 3") == (3, "active\ninactive")
    assert host_checks._split_exit("no newline__status_exit 0") == (0, "no newline")
    assert host_checks._split_exit("cut short") == (None, "cut short")


class _Host:
    """Records what pyinfra's host.run_shell_command was asked (no host is connected)."""

    def __init__(self, data):
        self.data, self.calls = data, []

    def run_shell_command(self, command, **arguments):
        self.calls.append(arguments)

        class Output:
            stdout_lines, stderr_lines = [f"done\n{host_checks._EXIT_MARK}0"], []
        return True, Output()


def test_commands_on_a_host_use_its_sudo_settings():
    # e.g. production's Infra02, reached as an operator with `_sudo` in the inventory.
    plain, with_sudo = _Host({}), _Host({"_sudo": True, "_sudo_user": "root"})
    assert host_checks.pyinfra_runner(plain, 30)("true") == (0, "done")
    assert host_checks.pyinfra_runner(with_sudo, 30)("true") == (0, "done")
    assert plain.calls == [{"_timeout": 30}]
    assert with_sudo.calls == [{"_timeout": 30, "_sudo": True, "_sudo_user": "root"}]


def test_mail_queue_verdict_is_the_plugins():
    result = host_checks.mailq_check(standin({"/usr/local/bin/mailstore check mailq": (
        1, "MAILQ WARNING - 120 queued | queue=120;100;500;0")}))
    assert (result.status, result.check, result.detail) == (WARN, "mail queue",
                                                            "MAILQ WARNING - 120 queued")


@pytest.fixture(scope="module")
def backup_repo(tmp_path_factory):
    """A real, unencrypted repository with one snapshot made just now."""
    base = tmp_path_factory.mktemp("backup")
    source = base / "mail" / "alice" / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (source / sub).mkdir(parents=True)
    (source / "cur" / "1.host:2,S").write_text("Subject: hi\n\nhello\n")
    repo = base / "repo"
    for args in (["backup", "init", str(repo)], ["backup", "run", str(repo), str(base / "mail")]):
        subprocess.run([sys.executable, "-m", "mailstore", *args], check=True, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": REPO}, capture_output=True, timeout=120)
    subprocess.run([sys.executable, "-m", "mailstore", "backup", "verify", str(repo)],
                   check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": REPO},
                   capture_output=True, timeout=120)
    return {"backup_repository": str(repo), "backup_key_file": str(base / "no.key")}


def local_runner(command):
    """Runs the host's mailstore command line here (the repository's mailstore)."""
    argv = shlex.split(command)
    assert argv[0] == "/usr/local/bin/mailstore"
    done = subprocess.run([sys.executable, "-m", "mailstore", *argv[1:]], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": REPO}, capture_output=True,
                          text=True, timeout=120)
    return done.returncode, done.stdout + done.stderr


def test_a_fresh_backup_passes_and_a_stale_one_fails(backup_repo):
    fresh = host_checks.backup_check(local_runner, backup_repo, 26 * 3600)
    assert fresh.status == OK, fresh
    assert fresh.check == "backup" and "|" not in fresh.detail
    # Older than the threshold: one second, and the snapshot is two seconds old by now.
    time.sleep(2.1)
    stale = host_checks.backup_check(local_runner, backup_repo, 1)
    assert (stale.status, stale.check) == (FAIL, "backup")
    assert "BACKUP CRITICAL" in stale.detail


def test_a_missing_repository_fails_the_backup_check(tmp_path):
    result = host_checks.backup_check(local_runner, {
        "backup_repository": str(tmp_path / "none"), "backup_key_file": str(tmp_path / "k")},
        3600)
    assert result.status == FAIL and "UNKNOWN" in result.detail
