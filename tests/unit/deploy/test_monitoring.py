"""operations/monitoring.py: the description, the sudoers drop-in, the push commands, and when
the registration runs — against a fake host, with real `visudo` and `sh` where they decide."""
import json
import re
import shlex
import subprocess

import pytest

from tests.unit.deploy import fake_host  # noqa: F401  (puts the repository on sys.path)
from tests.unit.deploy.conftest import write_secret
from tests.unit.deploy.fake_host import run

from operations.defaults import defaults
from operations.secrets import InventoryError
from operations import monitoring, staging

PASSWORD = "0123456789abcdef-icinga-api-secret"


@pytest.fixture
def api_secret(secrets):
    write_secret(secrets, "icinga2_api.password", PASSWORD + "\n")
    return secrets


def _data(**overrides):
    return {**defaults(), **overrides}


def _services(desc):
    return {s["name"]: s for s in desc["services"]}


# --- the description -----------------------------------------------------------------------
def test_description_declares_every_check_run_by_the_agent():
    desc = monitoring.description(_data())
    assert desc["host"] == desc["command_endpoint"] == "email.infra.cacert.org"
    assert desc["command_zone"] == "global-templates"   # so the agent gets the CheckCommands
    assert desc["service_zone"] == "master"
    svc = _services(desc)
    assert svc["mailstore-volume"]["args"] == ["/srv/mail"]
    assert svc["mailstore-maildir"]["args"][0] == "/home/mailboxes"
    assert svc["mailstore-mailq"]["check"] == "mailq"
    assert svc["mailstore-mailq"]["args"] == ["--held", "/var/lib/mailstore/delivery-held"]
    assert svc["mailstore-backup-repository"]["args"] == [
        "--repo", "/srv/backup/mailstore", "--key-file", "/etc/mailstore/backup.key"]
    for key, pair in defaults()["certificates"].items():
        cert = svc["mailstore-cert-" + key.replace("_", "-")]
        assert cert["args"] == [pair["cert"], "--key", pair["key"]]
    passive = svc["mailstore-backup"]
    assert passive["passive"] is True and passive["freshness"] == 26 * 3600
    # the format mailstore itself accepts
    from mailstore import icinga
    icinga.parse_description(json.loads(json.dumps(desc)))


def test_privileged_checks_run_through_sudo_as_the_user_that_can():
    desc = monitoring.description(_data(vmail_user="mailowner"))
    by_check = desc["mailstore_by_check"]
    assert by_check["maildir"] == ["/usr/bin/sudo", "-n", "-u", "mailowner",
                                   "/usr/local/bin/mailstore"]
    assert by_check["cert"] == by_check["backup"] == ["/usr/bin/sudo", "-n",
                                                      "/usr/local/bin/mailstore"]
    assert "volume" not in by_check and "mailq" not in by_check   # nagios itself


def test_thresholds_come_from_inventory():
    desc = monitoring.description(_data(monitoring_check_args={"mailstore-volume": ["-w", "15:"]},
                                        monitoring_check_interval=60))
    volume = _services(desc)["mailstore-volume"]
    assert volume["args"] == ["/srv/mail", "-w", "15:"]
    assert volume["check_interval"] == 60 and volume["retry_interval"] == 12


@pytest.mark.parametrize("overrides, key", [
    ({"monitoring_check_args": {"mailstore-nothing": []}}, "monitoring_check_args"),
    ({"monitoring_check_args": {"mailstore-volume": ["-w 15:"]}}, "mailstore-volume"),
    ({"monitoring_check_args": {"mailstore-volume": ["$(reboot)"]}}, "mailstore-volume"),
    ({"data_volume": "/srv/my mail"}, "data_volume"),
    ({"backup_repository": "relative/repo"}, "backup_repository"),
    ({"icinga2_node_name": "bad name"}, "icinga2_node_name"),
    ({"monitoring_check_interval": 0}, "monitoring_check_interval"),
])
def test_bad_data_names_the_key(overrides, key):
    with pytest.raises(monitoring.MonitoringDataError, match=re.escape(key)):
        monitoring.description(_data(**overrides))


def test_api_connection_defaults_to_the_parent_endpoint_and_its_node_name():
    assert monitoring.api_connection(_data()) == {
        "url": "https://monitor.infra.cacert.org:5665", "tls_name": "monitor.cacert.org"}
    assert monitoring.api_connection(_data(icinga2_api_url="https://10.1.2.3:5665/")) == {
        "url": "https://10.1.2.3:5665", "tls_name": None}
    with pytest.raises(monitoring.MonitoringDataError, match="icinga2_api_url"):
        monitoring.api_connection(_data(icinga2_api_url="http://monitor:5665"))
    with pytest.raises(monitoring.MonitoringDataError, match="icinga2_api_url"):
        monitoring.api_connection(_data(icinga2_parent_endpoints=[{"name": "m", "port": 5665}]))


# --- sudoers ------------------------------------------------------------------------------
def _sudoers(data):
    return staging.render("files/monitoring/mailstore-checks.sudoers.j2",
                          agent_user="nagios", commands=monitoring.sudoers_commands(data))


def _visudo(tmp_path, text):
    path = tmp_path / "mailstore-checks"
    path.write_text(text)
    path.chmod(0o440)
    return subprocess.run(["visudo", "-cf", str(path)], capture_output=True, text=True)


def test_sudoers_allows_exactly_the_declared_command_lines(tmp_path):
    data = _data(monitoring_check_args={"mailstore-cert-email": ["-w", "30:", "-c", "@1:14"]})
    text = _sudoers(data)
    result = _visudo(tmp_path, text)
    assert result.returncode == 0, result.stdout + result.stderr
    desc = monitoring.description(data)
    # every check that runs through sudo is one sudoers command, argument for argument
    # (':' is special in sudoers and escaped), and nothing else is allowed
    declared = set()
    for svc in desc["services"]:
        prefix = desc["mailstore_by_check"].get(svc.get("check"))
        if prefix and prefix[0] == "/usr/bin/sudo":
            args = [re.sub(r"([\\,:=*?\[\]!#\"'])", r"\\\1", a) for a in svc["args"]]
            declared.add(" ".join(["/usr/local/bin/mailstore", "check", svc["check"]] + args))
    granted = {c for lines in monitoring.sudoers_commands(data).values() for c in lines}
    assert granted == declared and len(granted) == 5
    assert "-w 30\\: -c @1\\:14" in text
    assert re.search(r"^nagios ALL=\(vmail\) NOPASSWD: /usr/local/bin/mailstore check maildir ",
                     text, re.M)
    assert "ALL=(ALL)" not in text and "NOPASSWD: ALL" not in text


def test_visudo_would_refuse_an_unescaped_colon(tmp_path):
    """The escaping matters: the check that guards the install catches the mistake."""
    text = _sudoers(_data(monitoring_check_args={"mailstore-cert-email": ["-w", "30:"]}))
    broken = text.replace("30\\:", "30:")
    assert broken != text
    assert _visudo(tmp_path, broken).returncode != 0


# --- the push wrappers ------------------------------------------------------------------------
def _deployed_scripts(tmp_path, data):
    """The two scripts exactly as the deploy uploads them, runnable here: mailstore is `echo`
    and the push wrapper is the local copy."""
    ops = run(monitoring.checks, data=data)
    uploads = {dest: text for op in ops for dest, text in op.uploads.items()}
    push, backup = tmp_path / "push", tmp_path / "backup"
    push.write_text(uploads[monitoring.PUSH].replace(monitoring.MAILSTORE, "echo"))
    backup.write_text(uploads[monitoring.PUSH_BACKUP].replace(monitoring.PUSH, str(push)))
    for path in (push, backup):
        path.chmod(0o755)
    return push, backup


def test_push_wrapper_passes_the_check_and_its_arguments_through(api_secret, email_data,
                                                                tmp_path):
    push, _ = _deployed_scripts(tmp_path, email_data)
    out = subprocess.run([str(push), "mailstore-backup", "backup", "--repo", "/srv/b", "-c", "1"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["icinga", "push", "--url", "https://monitor.infra.cacert.org:5665",
                   "--tls-name", "monitor.cacert.org", "--ca", "/var/lib/icinga2/certs/ca.crt",
                   "--credentials", "/etc/mailstore/icinga/api.credentials", "--host",
                   "email.infra.cacert.org", "--service", "mailstore-backup", "--",
                   "backup", "--repo", "/srv/b", "-c", "1"]
    usage = subprocess.run([str(push), "mailstore-backup"], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage:" in usage.stderr


def test_backup_result_wrapper_pushes_the_repository_check(api_secret, email_data, tmp_path):
    data = dict(email_data, icinga2_api_url="https://10.0.0.5:5665")   # no --tls-name then
    _, backup = _deployed_scripts(tmp_path, data)
    out = subprocess.run([str(backup)], capture_output=True, text=True, check=True).stdout
    assert out.split()[:4] == ["icinga", "push", "--url", "https://10.0.0.5:5665"]
    assert "--tls-name" not in out
    assert out.split("--service ")[1].split() == [
        "mailstore-backup", "--", "backup", "--repo", "/srv/backup/mailstore", "--key-file",
        "/etc/mailstore/backup.key", "-w", "14400", "-c", "21600"]


# --- the deploy ------------------------------------------------------------------------------
def _register_ops(ops):
    return [op for op in ops if "Register the mailstore checks" in op.name]


def test_fresh_host_validates_then_registers_and_never_shows_the_password(api_secret, email_data):
    ops = run(monitoring.checks, data=email_data)
    commands = [c for op in ops for c in op.commands]
    assert not any(PASSWORD in c for c in commands)
    uploads = {dest: text for op in ops for dest, text in op.uploads.items()}
    staged = {dest.rsplit("/", 1)[1]: text for dest, text in uploads.items()}
    assert json.loads(staged["api.credentials"]) == {"username": "mailstore",
                                                     "password": PASSWORD}
    assert json.loads(staged["checks.json"]) == monitoring.description(
        {**defaults(), **email_data})
    # the credentials are installed root-only; sudoers only after visudo accepted it
    assert any("-m 600" in c and c.endswith("/etc/mailstore/icinga/api.credentials")
               for c in commands)
    sudoers = next(op for op in ops if "| sudoers" in op.name)
    check = next(i for i, c in enumerate(sudoers.commands) if c.startswith("visudo -cf "))
    install = next(i for i, c in enumerate(sudoers.commands) if "/etc/sudoers.d/" in c
                   and c.startswith("install"))
    assert check < install and "-m 440" in sudoers.commands[install]
    # the staged Icinga set is checked by a dry run against the master before it is installed
    icinga = next(op for op in ops if "Icinga registration" in op.name)
    assert any("icinga register --dry-run" in c for c in icinga.commands)

    [register] = _register_ops(ops)
    argv = shlex.split(register.commands[0].split(" && ")[0])
    assert argv[:4] == ["/usr/local/bin/mailstore", "icinga", "register", "--prune"]
    opts = dict(zip(argv[4::2], argv[5::2]))
    assert opts == {"--url": "https://monitor.infra.cacert.org:5665",
                    "--tls-name": "monitor.cacert.org",
                    "--ca": "/var/lib/icinga2/certs/ca.crt",
                    "--credentials": "/etc/mailstore/icinga/api.credentials",
                    "--description": "/etc/mailstore/icinga/checks.json"}


def _recorded_digest(ops):
    [register] = _register_ops(ops)
    return re.search(r"echo ([0-9a-f]{64}) > ", register.commands[0]).group(1)


def test_registration_runs_only_when_what_it_registers_changed(api_secret, email_data):
    digest = _recorded_digest(run(monitoring.checks, data=email_data))
    assert _register_ops(run(monitoring.checks, data=email_data,
                             facts={"FileContents": [digest]})) == []
    # a changed description, password or CA registers again
    changed = dict(email_data, monitoring_check_interval=120)
    assert _recorded_digest(run(monitoring.checks, data=changed,
                                facts={"FileContents": [digest]})) != digest
    write_secret(api_secret, "icinga2_api.password", "another-password\n")
    assert _recorded_digest(run(monitoring.checks, data=email_data,
                                facts={"FileContents": [digest]})) != digest


def test_lab_ca_from_inventory_is_uploaded_and_used(api_secret, email_data, pki, tmp_path):
    ca = tmp_path / "master-ca.pem"
    ca.write_text(pki.pem_root())
    ops = run(monitoring.checks, data=dict(email_data, icinga2_api_ca=str(ca)))
    uploads = {dest.rsplit("/", 1)[1]: text for op in ops for dest, text in op.uploads.items()}
    assert uploads["ca.pem"] == pki.pem_root()
    [register] = _register_ops(ops)
    assert "--ca /etc/mailstore/icinga/ca.pem" in register.commands[0]


def test_missing_secret_or_ca_is_named(secrets, email_data, tmp_path):
    (secrets / "icinga2_api.password").unlink()
    with pytest.raises(InventoryError, match="icinga2_api.password"):
        run(monitoring.checks, data=email_data)
    write_secret(secrets, "icinga2_api.password", PASSWORD + "\n")
    with pytest.raises(InventoryError, match="icinga2_api_ca"):
        run(monitoring.checks, data=dict(email_data, icinga2_api_ca=str(tmp_path / "none.pem")))


def test_registration_runs_again_when_the_master_drifted(api_secret, email_data):
    digest = _recorded_digest(run(monitoring.checks, data=email_data))
    asked = []

    def pending(register):
        asked.append(register)
        return ["created Service email.infra.cacert.org!mailstore-volume"]
    ops = run(monitoring.checks, data=email_data,
              facts={"FileContents": [digest], "RegistrationPending": pending})
    assert _recorded_digest(ops) == digest
    # the dry run asks exactly what the registration would do
    [register] = _register_ops(ops)
    assert register.commands[0].startswith(asked[0] + " && ")
    # in step, or the master cannot be asked: nothing to do
    for answer in ([], None):
        assert _register_ops(run(monitoring.checks, data=email_data, facts={
            "FileContents": [digest], "RegistrationPending": answer})) == []


def test_pending_fact_reads_the_dry_run_summary():
    fact = monitoring.RegistrationPending()
    summary = {"created": [{"type": "Service", "name": "h!a"}], "updated": [],
               "recreated": [], "deleted": [{"type": "CheckCommand", "name": "mailstore-x"}],
               "unchanged": [{"type": "Service", "name": "h!b"}], "stale": [], "dry_run": True}
    assert fact.process(json.dumps(summary, indent=2).split("\n")) == [
        "created Service h!a", "deleted CheckCommand mailstore-x"]
    assert fact.process([]) is None                     # not installed yet: no output
    assert fact.process(["mailstore icinga: error"]) is None
    command = fact.command("/usr/local/bin/mailstore icinga register --prune --url u")
    assert "register --prune --url u --dry-run --json" in command
    assert command.endswith("; true")    # a failing dry run never fails the fact
