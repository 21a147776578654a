"""`python -m operations.rebuild`: the rebuild's inventory, its refusals, its steps and what
the command prints. Infra02 is faked (no LXC host here): its commands are recorded and
answered; the backup repository is a real one (mailstore), opened on this machine."""
import base64
import json
import os
import shlex
import subprocess
import sys

import pytest

from tests.unit.deploy.fake_host import REPO

from mailstore import backup
from operations import infra02_steps, rebuild, rebuild_inventory, rebuild_plan
from operations.defaults import defaults

NET = {"link": "br0", "hwaddr": "00:16:3e:00:00:20", "ipv4": "192.0.2.20/24",
       "ipv4_gateway": None, "ipv6": None, "ipv6_gateway": None}
KEY_HEX = "ab" * 32
PUBKEYS = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIfresh root@email\n" \
          "ecdsa-sha2-nistp256 AAAAE2VjZHNhfresh root@email\n"


def _data(**extra):
    return {**defaults(), "successor_net": dict(NET), "mail_root": "/srv/mail", **extra}


def _target(rehearse=False, snapshot="latest"):
    return rebuild_plan.target(_data(), "/srv/copy/mailstore", snapshot, rehearse)


def _facts(containers=(), entries=0, repository=True, config=b"{}",
           catalog=("catalog.sqlite",), disk_entries=0):
    return {"containers": dict(containers), "volume_entries": entries,
            "repository": repository, "config": config, "catalog": list(catalog),
            "disk_entries": disk_entries}


# --- the rebuild's inventory ---------------------------------------------------------------

def test_a_rebuild_deploys_first_with_the_hold_and_the_new_containers_keys():
    derived = rebuild_inventory.derive(_data(), False, "/tmp/x/new.known_hosts")
    assert derived["postfix_inbound_hold"] is True
    assert derived["ssh_known_hosts_file"] == "/tmp/x/new.known_hosts"
    assert derived["container_name"] == "email"
    assert derived["data_volume_host_path"] == defaults()["data_volume_host_path"]


def test_a_rehearsal_takes_no_address_mounts_nothing_and_has_its_scratch_directory():
    derived = rebuild_inventory.derive(_data(container_extra_nets=[{"name": "eth1"}],
                                             container_mounts=[{"source": "/srv/b",
                                                                "target": "srv/b"}]), True)
    assert derived["container_name"] == "email-rehearsal"
    assert derived["rehearsal_of"] == "email"
    assert derived["container_net"] == NET
    assert derived["container_extra_nets"] == [] and derived["container_mounts"] == []
    assert derived["container_autostart"] is False
    assert derived["data_volume_host_path"] == "/var/lib/cacert-rehearsal/email-rehearsal"
    assert derived["postfix_inbound_hold"] is True


@pytest.mark.parametrize("data, problem", [
    ({"successor_net": None}, "successor_net: not set"),
    ({"successor_of": "email"}, "successor_of='email': this inventory describes a derived"),
    ({"successor_net": {**NET, "ipv4": "213.154.225.228/24"}}, "is the serving container's"),
])
def test_unusable_rehearsal_data_is_named(data, problem):
    assert any(problem in line for line in rebuild_inventory.check(_data(**data), True))


def test_the_rebuilds_inventory_file_derives_both_groups(tmp_path):
    inventory = tmp_path / "inv.py"
    inventory.write_text(f"infra02 = [('infra02', {{'successor_net': {NET!r}}})]\n"
                         f"email = [('email.cacert.org', {{'successor_net': {NET!r}, "
                         "'ssh_hostname': '213.154.225.228'})]\n")
    (infra02_name, infra02), = rebuild_inventory.load(str(inventory), False)[0]
    assert infra02_name == "infra02" and infra02["postfix_inbound_hold"] is True
    (name, email), = rebuild_inventory.load(str(inventory), True, "/k")[1]
    assert (name, email["ssh_hostname"], email["ssh_known_hosts_file"]) == \
        ("email-rehearsal", "192.0.2.20", "/k")
    (name, email), = rebuild_inventory.load(str(inventory), False, "/k")[1]
    assert (name, email["ssh_hostname"]) == ("email.cacert.org", "213.154.225.228")


def test_a_rebuild_needs_no_successor_net():
    assert rebuild_inventory.check(_data(successor_net=None), False) == []


# --- refusals -------------------------------------------------------------------------------

def test_a_living_container_a_full_volume_and_a_missing_repository_are_refused_at_once():
    problems = rebuild_plan.check(_target(), _facts({"email": "RUNNING"}, entries=3,
                                                    repository=False, config=None), _data())
    assert len(problems) == 3
    assert problems[0].startswith("container email exists (RUNNING): a rebuild never "
                                  "overwrites a container")
    assert "lxc-destroy -n email" in problems[0] and "--rehearse" in problems[0]
    assert "data volume /srv/email-data on Infra02 is not empty (3 entries)" in problems[1]
    assert problems[2] == "--from /srv/copy/mailstore: no such directory on Infra02"


def test_a_stopped_container_is_refused_too():
    assert rebuild_plan.check(_target(), _facts({"email": "STOPPED"}), _data())


@pytest.mark.parametrize("facts, problem", [
    (_facts(config=None), "not a mailstore backup repository"),
    (_facts(catalog=()), "holds no catalog"),
])
def test_a_directory_that_is_no_repository_is_refused(facts, problem):
    assert problem in rebuild_plan.check(_target(), facts, _data())[0]


def test_a_rehearsal_leaves_the_serving_container_and_its_volume_alone():
    facts = _facts({"email": "RUNNING", "email-rehearsal": "STOPPED"}, entries=7)
    assert rebuild_plan.check(_target(True), facts, _data()) == []
    running = rebuild_plan.check(_target(True), _facts({"email-rehearsal": "RUNNING",
                                                        "email-next": "RUNNING"}), _data())
    assert running[0].startswith("container email-rehearsal is RUNNING")
    assert "email-next runs with successor_net's address" in running[1]


def test_the_facts_command_output_is_parsed():
    config = base64.b64encode(b'{"format": "mailstore"}').decode()
    facts = rebuild_plan.parse_facts(
        f"container email-rehearsal STOPPED\nvolume_entries 0\nrepository yes\n"
        f"config {config}\ncatalog catalog.sealed\n")
    assert facts == {"containers": {"email-rehearsal": "STOPPED"}, "volume_entries": 0,
                     "repository": True, "config": b'{"format": "mailstore"}',
                     "catalog": ["catalog.sealed"], "disk_entries": 0}


@pytest.mark.parametrize("repository, snapshot, problem", [
    ("srv/copy", "latest", "--from srv/copy: must be an absolute path"),
    ("/srv/../etc", "latest", "--from /srv/../etc: must be an absolute path"),
    ("/srv/copy", "x;rm", "--snapshot x;rm: not a snapshot id"),
])
def test_bad_arguments_are_named(repository, snapshot, problem):
    assert [line[:len(problem)] for line in rebuild_plan.check_arguments(
        repository, snapshot)] == [problem]


@pytest.fixture
def repository(tmp_path):
    """A real encrypted repository with one snapshot of alice's Maildir, its key file."""
    key = tmp_path / "backup.key"
    key.write_text(KEY_HEX + "\n")
    key.chmod(0o600)
    source = tmp_path / "mail"
    for sub in ("cur", "new", "tmp"):
        (source / "alice" / "Maildir" / sub).mkdir(parents=True)
    (source / "alice" / "Maildir" / "cur" / "1.M1P1.email:2,S").write_text(
        "From: bob@cacert.test\nSubject: hi\n\nhello\n")
    repo = tmp_path / "repo"
    backup.init(str(repo), key_file=str(key))
    snapshot = backup.run(str(repo), str(source), key_file=str(key))["id"]
    return repo, key, snapshot


def _files(repo):
    return {name: (repo / name).read_bytes() for name in ("config.json",) +
            rebuild_plan.CATALOG_FILES if (repo / name).is_file()}


def test_the_repository_opens_with_the_key_and_holds_the_snapshot(repository, tmp_path):
    repo, key, snapshot = repository
    for name in ("latest", snapshot):
        work = tmp_path / f"w-{name}"
        work.mkdir(mode=0o700)
        assert rebuild_plan.repository_problems(_target(snapshot=name), _files(repo),
                                                str(key), str(work)) == []


def test_a_wrong_key_and_a_missing_snapshot_are_refused(repository, tmp_path):
    repo, key, _ = repository
    wrong = tmp_path / "wrong.key"
    wrong.write_text("cd" * 32 + "\n")
    wrong.chmod(0o600)
    (tmp_path / "w1").mkdir(mode=0o700)
    problems = rebuild_plan.repository_problems(_target(), _files(repo), str(wrong),
                                                str(tmp_path / "w1"))
    assert problems == [f"--from /srv/copy/mailstore: key file {wrong} does not fit "
                        "repository /srv/copy/mailstore (wrong key)"]
    (tmp_path / "w2").mkdir(mode=0o700)
    missing = rebuild_plan.repository_problems(_target(snapshot="nope"), _files(repo),
                                               str(key), str(tmp_path / "w2"))
    assert missing[0].startswith("--snapshot nope: not in /srv/copy/mailstore")


def test_an_off_host_copy_is_read_through_its_sealed_catalog(repository, tmp_path):
    """The backup host's copy holds no catalog.sqlite: the manifest and its chunk files are
    fetched (the chunks as one tar, by the commands Infra02 runs, run here on the copy)."""
    repo, key, snapshot = repository
    copy = tmp_path / "copy"
    os.rename(backup.export(str(repo)), copy)
    facts = rebuild_plan.parse_facts(subprocess.run(
        ["sh", "-c", rebuild_plan.facts_command(
            rebuild_plan.target(_data(), str(copy), "latest", True), None)],
        capture_output=True, text=True, check=True).stdout)
    assert facts["catalog"] == ["catalog.sealed", rebuild_plan.SEALED_CHUNKS]
    files = {"config.json": (copy / "config.json").read_bytes()}
    for name in facts["catalog"]:
        printed = subprocess.run(["sh", "-c", rebuild_plan.catalog_command(str(copy), name)],
                                 capture_output=True, text=True, check=True).stdout
        files[name] = base64.b64decode("".join(printed.split()))
    (tmp_path / "w").mkdir(mode=0o700)
    assert rebuild_plan.repository_problems(_target(snapshot=snapshot), files, str(key),
                                            str(tmp_path / "w")) == []
    # without its chunks the copy's catalog does not open: said in one line
    (tmp_path / "w2").mkdir(mode=0o700)
    del files[rebuild_plan.SEALED_CHUNKS]
    missing = rebuild_plan.repository_problems(_target(), files, str(key), str(tmp_path / "w2"))
    assert len(missing) == 1 and "sealed catalog /srv/copy/mailstore/catalog.sealed is " \
        "damaged or was tampered with: chunk sealed/" in missing[0], missing


# --- the steps ------------------------------------------------------------------------------

def test_a_rebuild_restores_under_the_hold_and_ends_it_only_after_the_mail():
    steps = rebuild_plan.plan(_target(), _data(postfix_inbound_hold=True,
                                               mail_root="/srv/mail"))
    assert [(s.name, s.kind) for s in steps] == [
        ("container email (Infra02)", "pyinfra"),
        ("Postfix held before its package is installed", "script"),
        ("backup repository /srv/copy/mailstore -> email", "script"),
        ("SSH host keys of the new email (for the first deploy)", "known_hosts"),
        ("deploy with the inbound hold (RCPT 450)", "pyinfra"),
        ("restore database, keys and configs", "script"),
        ("restore mail into /srv/mail", "script"),
        ("deploy without hold", "pyinfra"),
        ("flush the queue", "script"),
        ("status (gate)", "gate")]
    assert [s.derived for s in steps if s.kind == "pyinfra"] == [True, True, False]
    # From the first deploy until the hold ends, mail is held (450).
    assert [s.held for s in steps] == [False, False, False, False, True, True, True, True,
                                       False, False]
    extras, mail = steps[5].script, steps[6].script
    assert extras.startswith("lxc-attach -n email ")
    for part in ("systemctl stop dovecot", "--extras --key-file /etc/mailstore/backup.key",
                 "mysql/cacertusers.sql", "/etc/opendkim/keys", "systemctl restart ssh",
                 "/var/lib/icinga2/certs", "/etc/cacert-selfservice-api",
                 "mktemp -d /root/rebuild."):
        assert part in extras, part
    assert "mailstore backup restore /srv/backup/mailstore latest /srv/mail --key-file " \
           "/etc/mailstore/backup.key --json" in mail


def test_postfix_answers_nothing_but_4xx_from_its_installation_on(tmp_path):
    # The early main.cf, read by Postfix's own postconf: every RCPT deferred, no 5xx.
    (tmp_path / "main.cf").write_text(rebuild_plan.EARLY_MAIN_CF)
    shown = subprocess.run(["postconf", "-c", str(tmp_path), "-n"], capture_output=True,
                           text=True)
    assert shown.returncode == 0, shown.stderr
    values = dict(line.split(" = ", 1) for line in shown.stdout.splitlines())
    assert values["soft_bounce"] == "yes"
    assert values["smtpd_recipient_restrictions"] == "defer"
    assert values["smtpd_relay_restrictions"] == "defer"
    script = rebuild_plan.plan(_target(), _data())[1].script
    assert "if [ -e /var/lib/lxc/email/rootfs/etc/postfix/main.cf ]; then" in script


def test_a_rehearsal_replaces_a_stopped_one_never_installs_the_icinga_certificate():
    steps = rebuild_plan.plan(_target(True), {**_data(), **rebuild_inventory.derive(
        _data(), True)}, previous_rehearsal=True)
    names = [s.name for s in steps]
    assert names[0] == "remove the previous rehearsal email-rehearsal"
    assert "lxc-destroy -n email-rehearsal" in steps[0].script
    assert "deploy without hold" not in names and "flush the queue" not in names
    assert names[-3:] == ["SSH host keys of email-rehearsal as restored (for the checks)",
                          "Dovecot reads the restored mail", "checks (rehearsal)"]
    assert "icinga2" not in steps[names.index("restore database, keys and configs")].script
    copy = steps[names.index("backup repository /srv/copy/mailstore -> email-rehearsal")]
    assert "/var/lib/lxc/email-rehearsal/rootfs/srv/backup/mailstore" in copy.script
    stop = rebuild_plan.finish_rehearsal(_target(True), cleanup=True).script
    assert "lxc-destroy -n email-rehearsal" in stop
    assert "rm -rf /var/lib/cacert-rehearsal/email-rehearsal" in stop


@pytest.mark.parametrize("rehearse", [False, True])
def test_every_script_is_valid_shell(rehearse):
    # Each runs with bash on Infra02 (handover.bash); what lxc-attach runs, with sh inside.
    steps = rebuild_plan.plan(_target(rehearse), {**_data(), **rebuild_inventory.derive(
        _data(), rehearse)}, previous_rehearsal=True)
    scripts = [s.script for s in steps if s.kind in ("script", "known_hosts")]
    scripts.append(rebuild_plan.finish_rehearsal(_target(rehearse), True).script)
    for script in scripts:
        checked = subprocess.run(["bash", "-n", "-c", script], capture_output=True,
                                 text=True)
        assert checked.returncode == 0, (script, checked.stderr)
        # every `sh -c '...'` in it, wherever it stands (the rehearsal's stop runs the
        # handover's multi-line drain in the container)
        words = shlex.split(script)
        for i, word in enumerate(words[:-2]):
            if word == "sh" and words[i + 1] == "-c":
                inner = words[i + 2]
                checked = subprocess.run(["sh", "-n", "-c", inner], capture_output=True,
                                         text=True)
                assert checked.returncode == 0, (inner, checked.stderr)


def test_a_repository_on_a_separate_disk_goes_to_that_disk():
    data = _data(container_mounts=[{"source": "/srv/backup-disk", "target": "srv/backup",
                                    "type": "none", "options": "bind,create=dir"}])
    assert rebuild_plan.repository_in_container(data) == "/srv/backup-disk/mailstore"
    assert rebuild_plan.repository_in_container(_data()) is None
    assert "/srv/backup-disk/mailstore (backup_repository's disk) is not empty" in \
        rebuild_plan.check(_target(), _facts(disk_entries=4), data)[0]
    command = rebuild_plan.facts_command(_target(), "/srv/backup-disk/mailstore")
    assert "[ ! /srv/backup-disk/mailstore -ef /srv/copy/mailstore ]" in command


# --- the command ----------------------------------------------------------------------------

class FakeInfra02:
    """Infra02's answers: its state, the repository's files, the steps' output."""

    def __init__(self, repo, containers=""):
        self.repo, self.containers, self.commands = repo, containers, []

    def __call__(self, command):
        self.commands.append(command)
        if command.startswith("if [ -e /var/lib/lxc/"):
            config = base64.b64encode((self.repo / "config.json").read_bytes()).decode()
            return 0, (f"{self.containers}volume_entries 0\nrepository yes\nconfig {config}\n"
                       "catalog catalog.sqlite\n")
        if command.startswith("base64 < "):
            name = command.rsplit("/", 1)[1].strip("'")
            return 0, base64.encodebytes((self.repo / name).read_bytes()).decode()
        if "ssh_host_*_key.pub" in command:
            return 0, PUBKEYS
        if "--extras" in command:
            return 0, "restored extras_files 23\nrestored database_users 2\n" \
                      "restored dkim_keys 2\nrestored ssh_host_keys 3"
        if "--json" in command:
            return 0, ('restored-json {"messages": 5, "bytes": 1234, "files": 9, '
                       '"snapshot": "s1"}\nrestored users 2')
        return 0, "ok"


@pytest.fixture
def command(monkeypatch, repository, tmp_path):
    """The command with Infra02 faked, pyinfra's runs and the gate recorded; the secret
    backup.key in a secrets directory."""
    repo, _, _ = repository
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "backup.key").write_text(KEY_HEX + "\n")
    (secrets / "backup.key").chmod(0o640)
    monkeypatch.setenv("CACERT_EMAIL_SECRETS", str(secrets))
    infra02 = FakeInfra02(repo)
    runs = []

    def pyinfra(inventory, env, limit, dry=False):
        known = env.get(rebuild_inventory.ENV_KNOWN_HOSTS)
        runs.append((inventory, limit, dict(env),
                     open(known).read() if known else None))
        return 0
    monkeypatch.setattr(rebuild_inventory, "load", lambda inventory, rehearse: None)
    monkeypatch.setattr(rebuild, "_hosts", lambda inventory, rehearse: (
        _data(), {**_data(), **rebuild_inventory.derive(_data(), rehearse)},
        "192.0.2.20" if rehearse else "213.154.225.228"))
    monkeypatch.setattr(infra02_steps, "on_infra02",
                        lambda inventory, work, timeout: work(infra02))
    monkeypatch.setattr(infra02_steps, "pyinfra", pyinfra)
    monkeypatch.setattr(rebuild, "_gate", lambda args, env: (True, []))
    return infra02, runs


def test_the_rebuild_runs_every_step_and_prints_what_it_restored(command, capsys):
    infra02, runs = command
    assert rebuild.main(["inventories/prod.py", "--from", "/srv/copy/mailstore"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("OK   container email (Infra02) (")
    assert any(line.startswith("OK   restore mail into /srv/mail (") for line in out)
    assert out[-2].startswith("inbound hold (port 25 answers 450) ")
    assert out[-1].startswith("restored: ")
    assert "messages 5" in out[-1] and "users 2" in out[-1] and "database_users 2" in out[-1]
    assert [(inventory, limit) for inventory, limit, _, _ in runs] == [
        ("inventories/rebuild.py", "infra02"), ("inventories/rebuild.py", "email"),
        ("inventories/prod.py", "email")]
    # The first deploy trusts the new container's fresh keys, read on Infra02.
    assert runs[1][3] == ("213.154.225.228 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIfresh\n"
                          "213.154.225.228 ecdsa-sha2-nistp256 AAAAE2VjZHNhfresh\n")
    assert runs[2][2] == {}    # the given inventory: no hold, its own known_hosts


def test_the_secret_key_never_reaches_a_command_line(command, capsys):
    infra02, runs = command
    assert rebuild.main(["inventories/prod.py", "--from",
                         "/srv/copy/mailstore", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"steps", "ok", "held_seconds", "restored"}
    assert result["restored"]["messages"] == 5 and result["restored"]["bytes"] == 1234
    everything = "\n".join(infra02.commands) + repr(runs) + json.dumps(result)
    assert KEY_HEX not in everything and KEY_HEX.upper() not in everything


def test_dry_reads_and_lists_and_changes_nothing(command, capsys):
    infra02, runs = command
    assert rebuild.main(["inventories/prod.py", "--from", "/srv/copy/mailstore", "--dry",
                         "--rehearse"]) == 0
    out = capsys.readouterr().out
    assert "OK   deploy with the inbound hold (RCPT 450) (0 s)" in out
    assert "next: --dry: nothing was changed" in out
    assert runs == []
    assert all(c.startswith(("if [ -e /var/lib/lxc/", "base64 < ")) for c in infra02.commands)


def test_a_refused_rebuild_lists_every_problem_and_runs_nothing(command, capsys):
    infra02, runs = command
    infra02.containers = "container email RUNNING\n"
    assert rebuild.main(["inventories/prod.py", "--from", "/srv/copy/mailstore",
                         "--snapshot", "nope"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "python -m operations.rebuild: rebuild refused, nothing was changed:"
    assert err[1].startswith("  container email exists (RUNNING)")
    assert err[2].startswith("  --snapshot nope: not in /srv/copy/mailstore")
    assert runs == []
    assert all(c.startswith(("if [ -e /var/lib/lxc/", "base64 < ")) for c in infra02.commands)


def _fail_commands_with(infra02, monkeypatch, needle, output):
    """The fake Infra02, except that a command holding `needle` fails (exit 1, `output`)."""
    real = infra02.__call__

    def failing(cmd):
        if needle in cmd:
            infra02.commands.append(cmd)
            return 1, output
        return real(cmd)
    monkeypatch.setattr(infra02_steps, "on_infra02",
                        lambda inventory, work, timeout: work(failing))


def test_a_failed_step_stops_the_rebuild_and_says_what_next(command, capsys, monkeypatch):
    infra02, runs = command
    _fail_commands_with(infra02, monkeypatch, "--json",
                        "mailstore backup: restore refused: /srv/mail/alice/Maildir not empty")
    assert rebuild.main(["inventories/prod.py", "--from", "/srv/copy/mailstore"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith("FAIL restore mail into /srv/mail") for line in out)
    assert len(runs) == 2     # the hold was never ended
    assert out[-2].startswith("next: the rebuild stopped at `restore mail into /srv/mail`: "
                              "port 25 answers 450")


def test_a_rehearsal_stops_its_scratch_container_even_after_a_failure(command, capsys,
                                                                     monkeypatch):
    infra02, runs = command
    _fail_commands_with(infra02, monkeypatch, "doveadm",
                        "Dovecot counts 4 messages, the Maildirs hold 5")
    assert rebuild.main(["inventories/prod.py", "--from", "/srv/copy/mailstore",
                         "--rehearse", "--cleanup"]) == 1
    out = capsys.readouterr().out
    assert "OK   remove email-rehearsal (" in out
    assert "lxc-destroy -n email-rehearsal" in infra02.commands[-1]
    assert "the backups did NOT restore" in out
    assert all(limit != "email" or inventory == "inventories/rebuild.py"
               for inventory, limit, _, _ in runs)


def _rebuild(*args):
    return subprocess.run([sys.executable, "-m", "operations.rebuild", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_the_command_has_help_and_names_bad_arguments_without_a_traceback():
    assert "--rehearse" in _rebuild("--help").stdout
    result = _rebuild("inventories/nonexistent.py", "--from", "rel", "--cleanup")
    assert result.returncode == 2
    assert "--from rel: must be an absolute path" in result.stderr
    assert "--cleanup: only with --rehearse" in result.stderr
    assert "inventories/nonexistent.py: no such inventory file" in result.stderr
    assert "Traceback" not in result.stderr


def test_pyinfra_on_the_rebuilds_inventory_by_hand_is_refused():
    result = subprocess.run([sys.executable, "-c", "import runpy; runpy.run_path("
                             "'inventories/rebuild.py')"], cwd=REPO, capture_output=True,
                            text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert result.returncode != 0
    assert "$CACERT_REBUILD_INVENTORY is not set: run `python -m operations.rebuild " \
           "INVENTORY --from REPO`" in result.stderr
