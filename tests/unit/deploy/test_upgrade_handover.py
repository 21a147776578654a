"""operations/handover.py and `python -m operations.upgrade cutover|rollback`: the plan is
decided from Infra02's state, refused with every problem when the state does not fit, and
its host-side scripts (the queue's move, the rename) do what they say on real directories."""
import ast
import base64
import json
import subprocess
import sys

import pytest

from tests.unit.deploy.fake_host import REPO

from operations import handover, lxc_config, successor, upgrade
from operations.defaults import defaults

NET = {"link": "br0", "hwaddr": "00:16:3e:00:00:20", "ipv4": "192.0.2.20/24",
       "ipv4_gateway": None, "ipv6": None, "ipv6_gateway": None}
OLD_NET = {"link": "br0", "hwaddr": "00:16:3e:00:00:19", "ipv4": "192.0.2.19/24",
           "ipv4_gateway": "192.0.2.1", "ipv6": None, "ipv6_gateway": None}
EXTRA = {"name": "eth1", "link": "br1", "hwaddr": "00:16:3e:00:01:19",
         "ipv4": "198.51.100.19/24", "ipv4_gateway": None, "ipv6": None, "ipv6_gateway": None}
SERVING = {**defaults(), "container_net": OLD_NET, "successor_net": NET,
           "container_extra_nets": [EXTRA], "dkim_signing": True, "mail_root": "/srv/mail"}
SUCCESSOR = {**defaults(), **successor.derive(SERVING, "trixie")}


def _config(name, data, extra=""):
    """A config as the deploy writes it for `data`, plus hand-written lines."""
    want = lxc_config.wanted({key: data.get(key) for key in lxc_config.DATA_KEYS})
    text = (f"lxc.include = /usr/share/lxc/config/debian.common.conf\n"
            f"lxc.rootfs.path = dir:/var/lib/lxc/{name}/rootfs\n{extra}")
    return lxc_config.merge(text, want).text


def _facts(marker="email", **states):
    """Facts with the containers of `states` ({name: state}); email-next as prepare left it,
    the others as the serving container's."""
    containers = {}
    for key, state in states.items():
        name = key.replace("_", "-")
        data = SUCCESSOR if name.endswith("-next") else SERVING
        containers[name] = handover.Container(
            name, state, _config(name, data, "lxc.cgroup2.memory.max = 4G\n"))
    return {"containers": containers, "marker": marker}


def _rollback_facts():
    """Infra02 after a cut-over: email is the successor, email-prev the old container."""
    found = handover.roles("cutover", "email", {"email", "email-next"})
    before = _facts(email="RUNNING", email_next="RUNNING")
    configs = handover.final_configs(found, before["containers"], SERVING, SUCCESSOR)
    return {"containers": {n: handover.Container(n, "RUNNING" if n == "email" else "STOPPED",
                                                 text) for n, text in configs.items()},
            "marker": "email"}


def _plan(command, facts):
    found, problems = handover.check(command, "email", facts)
    assert problems == []
    return handover.plan(command, found, facts, SERVING, SUCCESSOR)


def test_a_cutover_holds_delivery_only_after_the_successor_is_ready():
    steps = _plan("cutover", _facts(email="RUNNING", email_next="RUNNING"))
    assert [s.name for s in steps] == [
        "keys email -> email-next (DKIM, Icinga certificate)",
        "SSH host keys equal (SSHFP records stay true)",
        "backup repository /srv/backup/mailstore -> email-next",
        "hold and stop email-next",
        "hold delivery on email, stop Dovecot",
        "volume marker: nobody",
        "dump cacertusers of email",
        "stop email",
        "mail queue email -> email-next",
        "rename and configure",
        "start email",
        "load cacertusers into email",
        "volume marker: email",
        "resume delivery on email"]
    assert [s.held for s in steps] == [False] * 4 + [True] * 10


def test_the_database_travels_in_a_root_only_file_never_on_a_command_line():
    steps = {s.name: s.script for s in _plan("cutover", _facts(email="RUNNING",
                                                                email_next="RUNNING"))}
    dump = steps["dump cacertusers of email"]
    assert dump.startswith("umask 077; mkdir -p /var/lib/cacert-handover; "
                           "chmod 700 /var/lib/cacert-handover;")
    assert "--single-transaction" in dump and "password" not in dump.lower()
    load = steps["load cacertusers into email"]
    assert "/var/lib/cacert-handover/email-cacertusers.sql |" in load
    assert load.endswith("rm -f /var/lib/cacert-handover/email-cacertusers.sql && echo loaded")
    # The dump's routines replace rehash_password and MariaDB drops its grants with it: the
    # deploy's accounts SQL gives them back after the load (found by the lab's weak-scheme
    # test after a rollback).
    assert load.index("email-cacertusers.sql |") < load.index(
        "< /var/lib/cacert-deploy/mariadb/accounts.sql") < load.index("rm -f")


def test_the_cutover_refuses_listing_every_problem():
    facts = _facts(marker="email-next", email="RUNNING", email_next="STOPPED")
    old = facts["containers"]["email"]
    facts["containers"]["email"] = handover.Container(
        "email", "RUNNING", old.config.replace("dir:/var/lib/lxc/email/rootfs",
                                               "lvm:/dev/vg0/email"), "bullseye", False)
    _, problems = handover.check("cutover", "email", facts)
    assert problems == [
        "email: lxc.rootfs.path is lvm:/dev/vg0/email, not dir:/var/lib/lxc/email/rootfs: a "
        "rename moves the container's directory and needs its rootfs inside it",
        "email lacks /usr/local/sbin/mail-quiesce or mail-resume, which hold and resume "
        "delivery: deploy it with this version first",
        "email-next is STOPPED, not RUNNING: run `prepare` again (it starts and refreshes it)",
        "the data volume's marker names email-next, not email: the serving container must "
        "own the volume"]


@pytest.mark.parametrize("existing, refusal", [
    ({"email"}, "no successor email-next on Infra02: run `prepare` first"),
    ({"email", "email-prev"}, "already cut over: email is the successor, the old container "
                              "is email-prev; `rollback` gives the service back to it"),
    ({"email-prev", "email-next"}, "an earlier handover stopped half-way; run `rollback`"),
])
def test_the_cutover_refuses_without_a_prepared_successor(existing, refusal):
    with pytest.raises(handover.Refused, match=refusal.replace("(", r"\(").replace(")", r"\)")
                       .replace("`", ".")):
        handover.roles("cutover", "email", existing)


def test_a_rollback_after_a_cutover_gives_everything_back():
    facts = _rollback_facts()
    found, problems = handover.check("rollback", "email", facts)
    assert problems == []
    assert (found.source, found.target) == ("email", "email-prev")
    assert found.renames == (("email", "email-next"), ("email-prev", "email"))
    names = [s.name for s in handover.plan("rollback", found, facts, SERVING, SUCCESSOR)]
    # The successor served: its database, queue and backup repository come back; the keys
    # are the old container's own.
    assert names == ["backup repository /srv/backup/mailstore -> email-prev",
                     "hold delivery on email, stop Dovecot", "volume marker: nobody",
                     "dump cacertusers of email", "stop email", "mail queue email -> email-prev",
                     "rename and configure", "start email", "load cacertusers into email",
                     "volume marker: email", "resume delivery on email"]


def test_a_rollback_of_a_cutover_that_stopped_early_keeps_the_old_database():
    # The old container was held and stopped, the volume's marker names nobody: the
    # successor never served, so nothing of it is carried back but its queue.
    facts = _facts(marker=handover.NOBODY, email="STOPPED", email_next="STOPPED")
    names = [s.name for s in _plan("rollback", facts)]
    assert names == ["volume marker: nobody", "mail queue email-next -> email",
                     "rename and configure", "start email", "volume marker: email",
                     "resume delivery on email"]


@pytest.mark.parametrize("facts, problem", [
    (_facts(email="RUNNING", email_next="RUNNING"),
     "email serves already (running, owns the volume): nothing to roll back"),
    ({"containers": {}, "marker": "email"},
     "nothing to roll back to: neither email-next nor email-prev exists"),
])
def test_a_rollback_with_nothing_to_give_back_is_refused(facts, problem):
    _, problems = handover.check("rollback", "email", facts)
    assert any(problem in line for line in problems), problems


def test_after_the_cutover_the_successor_has_the_old_containers_nics_and_the_volume():
    found = handover.roles("cutover", "email", {"email", "email-next"})
    facts = _facts(email="RUNNING", email_next="RUNNING")
    configs = handover.final_configs(found, facts["containers"], SERVING, SUCCESSOR)
    new, old = configs["email"], configs["email-prev"]
    assert lxc_config.values(new, "lxc.rootfs.path") == ["dir:/var/lib/lxc/email/rootfs"]
    assert lxc_config.values(new, "lxc.uts.name") == ["email"]
    assert lxc_config.values(new, "lxc.net.0.hwaddr") == ["00:16:3e:00:00:19"]
    assert lxc_config.values(new, "lxc.net.0.ipv4.address") == ["192.0.2.19/24"]
    assert lxc_config.values(new, "lxc.net.1.hwaddr") == ["00:16:3e:00:01:19"]
    assert lxc_config.values(new, "lxc.mount.entry") == [
        "/srv/email-data srv/mail none bind,create=dir 0 0"]
    assert lxc_config.values(new, "lxc.cgroup2.memory.max") == ["4G"]
    # The old container: stopped for good unless rolled back, never writing the volume.
    assert lxc_config.values(old, "lxc.rootfs.path") == ["dir:/var/lib/lxc/email-prev/rootfs"]
    assert lxc_config.values(old, "lxc.start.auto") == ["0"]
    assert lxc_config.values(old, "lxc.mount.entry") == [
        "/srv/email-data srv/mail none bind,ro,create=dir 0 0"]


def test_after_a_rollback_the_successor_has_its_own_net_again_and_no_extra_nics():
    facts = _rollback_facts()
    found, _ = handover.check("rollback", "email", facts)
    configs = handover.final_configs(found, facts["containers"], SERVING, SUCCESSOR)
    assert configs["email"] == _config("email", SERVING, "lxc.cgroup2.memory.max = 4G\n")
    successor_config = configs["email-next"]
    assert lxc_config.values(successor_config, "lxc.net.0.hwaddr") == [NET["hwaddr"]]
    assert not any(line.startswith("lxc.net.1.") for line in successor_config.splitlines())
    assert lxc_config.values(successor_config, "lxc.start.auto") == ["0"]
    assert lxc_config.values(successor_config, "lxc.rootfs.path") == [
        "dir:/var/lib/lxc/email-next/rootfs"]


def test_names_and_paths_for_the_scripts_are_plain_and_the_mail_is_on_the_volume():
    assert handover.check_data(SERVING) == []
    problems = handover.check_data({**SERVING, "container_name": "email; rm -rf /",
                                    "mail_root": "/home/mailboxes"})
    assert problems[0].startswith("container_name='email; rm -rf /': not a plain container")
    assert problems[1].startswith("mail_root='/home/mailboxes' is not on the data volume")


def test_the_facts_are_read_from_what_infra02_prints():
    config = base64.b64encode(b"lxc.uts.name = email\n").decode()
    facts = handover.parse_facts(f"container email\nstate RUNNING\nconfig {config}\n"
                                 "release bullseye\nscripts yes\ncontainer email-next\n"
                                 "state STOPPED\nconfig \nrelease trixie\nscripts no\n"
                                 "marker email\n")
    assert facts["marker"] == "email"
    assert facts["containers"]["email"] == handover.Container(
        "email", "RUNNING", "lxc.uts.name = email\n", "bullseye")
    assert facts["containers"]["email-next"].release == "trixie"
    assert not facts["containers"]["email-next"].scripts


def _bash(script):
    return subprocess.run(["sh", "-c", handover.bash(script)], capture_output=True, text=True)


def _rootfs(tmp_path, name, postfix_ids):
    rootfs = tmp_path / name / "rootfs"
    for queue in ("incoming", "active", "deferred/A", "hold", "maildrop"):
        (rootfs / "var/spool/postfix" / queue).mkdir(parents=True)
    (rootfs / "etc").mkdir()
    (rootfs / "etc/passwd").write_text(f"root:x:0:0::/root:/bin/sh\npostfix:x:{postfix_ids}:"
                                       ":/var/spool/postfix:/usr/sbin/nologin\n")
    return rootfs


def test_the_queue_is_moved_into_the_target_owned_by_its_postfix(tmp_path):
    # Run here on plain directories: the script only moves files between two rootfs.
    src = _rootfs(tmp_path, "email", "0:0")
    dst = _rootfs(tmp_path, "email-next", "0:0")
    spool = src / "var/spool/postfix"
    for name in ("incoming/4AB1", "active/4AB2", "deferred/A/4AB3", "hold/4AB4"):
        (spool / name).write_text(name)
        (spool / name).chmod(0o700)
    result = _bash(handover._carry_queue(str(src), str(dst)))
    assert result.returncode == 0, result.stderr
    assert "moved 4 queue files" in result.stdout
    into = dst / "var/spool/postfix"
    assert sorted(p.name for p in (into / "incoming").iterdir()) == ["4AB1", "4AB2", "4AB3"]
    assert (into / "hold/4AB4").read_text() == "hold/4AB4"
    assert (into / "incoming/4AB3").stat().st_mode & 0o777 == 0o700
    assert not [p for p in spool.rglob("*") if p.is_file()]


def test_a_queue_file_of_the_same_name_in_the_target_stops_the_move(tmp_path):
    src = _rootfs(tmp_path, "email", "0:0")
    dst = _rootfs(tmp_path, "email-next", "0:0")
    (src / "var/spool/postfix/deferred/A/4AB3").write_text("old")
    (dst / "var/spool/postfix/incoming/4AB3").write_text("new")
    result = _bash(handover._carry_queue(str(src), str(dst)))
    assert result.returncode != 0 and "4AB3 exists" in result.stderr
    assert (src / "var/spool/postfix/deferred/A/4AB3").read_text() == "old"
    assert (dst / "var/spool/postfix/incoming/4AB3").read_text() == "new"


def test_the_rename_moves_the_directories_and_rewrites_configs_and_start_checks(tmp_path):
    facts = _facts(email="STOPPED", email_next="STOPPED")
    for name in ("email", "email-next"):
        (tmp_path / name / "rootfs/usr/sbin").mkdir(parents=True)
        (tmp_path / name / "rootfs/owner").write_text(name)
    containers = {n: handover.Container(n, c.state, lxc_config.renamed(
        c.config, "/var/lib/lxc", n, n).replace("/var/lib/lxc", str(tmp_path)))
        for n, c in facts["containers"].items()}
    found = handover.roles("cutover", "email", containers)
    script = handover._rename(found, {"containers": containers, "marker": "email"},
                              SERVING, SUCCESSOR, str(tmp_path))
    result = _bash(script)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "email/rootfs/owner").read_text() == "email-next"
    assert (tmp_path / "email-prev/rootfs/owner").read_text() == "email"
    assert not (tmp_path / "email-next").exists()
    config = (tmp_path / "email/config").read_text()
    assert f"lxc.rootfs.path = dir:{tmp_path}/email/rootfs" in config
    drop_in = (tmp_path / "email/rootfs" / handover.DROP_IN.lstrip("/")).read_text()
    assert "ExecStartPre=/usr/local/sbin/data-volume-owner /srv/mail email\n" in drop_in
    old = (tmp_path / "email-prev/rootfs" / handover.DROP_IN.lstrip("/")).read_text()
    assert "ExecStartPre=/usr/local/sbin/data-volume-owner /srv/mail email-prev\n" in old
    policy = tmp_path / "email-prev/rootfs/usr/sbin/policy-rc.d"
    assert "data-volume-owner /srv/mail email-prev" in policy.read_text()
    assert policy.stat().st_mode & 0o777 == 0o755
    # Run again, it refuses rather than move a container into another's directory.
    (tmp_path / "email-next").mkdir()
    (tmp_path / "email-prev").rename(tmp_path / "email-prev.kept")
    (tmp_path / "email").rename(tmp_path / "email-prev")
    (tmp_path / "email").mkdir()
    assert _bash(script).returncode != 0


def test_renamed_and_without_nics():
    text = ("lxc.rootfs.path = dir:/var/lib/lxc/email/rootfs\n"
            "lxc.log.file = /var/lib/lxc/email/email.log\n"
            "lxc.hook.pre-start = /var/lib/lxc/email-other/hook\n# /var/lib/lxc/email/\n"
            "lxc.net.0.name = eth0\nlxc.net.0.link = br0\n"
            "lxc.net.1.name = eth1\nlxc.net.1.link = br1\nlxc.net.1.mtu = 9000\n")
    renamed = lxc_config.renamed(text, "/var/lib/lxc", "email", "email-prev")
    assert renamed.splitlines()[:4] == [
        "lxc.rootfs.path = dir:/var/lib/lxc/email-prev/rootfs",
        "lxc.log.file = /var/lib/lxc/email-prev/email.log",
        "lxc.hook.pre-start = /var/lib/lxc/email-other/hook", "# /var/lib/lxc/email/"]
    assert lxc_config.without_nics(text, ["eth1"]).splitlines()[-2:] == [
        "lxc.net.0.name = eth0", "lxc.net.0.link = br0"]


def _fake_infra02(monkeypatch, run, checks=False):
    """Infra02 faked (no LXC host here): every command goes to `run(command) -> (code,
    output)`; the inventory's data is SERVING and SUCCESSOR; with `checks`, the successor's
    pre-cut-over checks pass without a network."""
    monkeypatch.setattr(upgrade, "_data", lambda inventory: (SERVING, SUCCESSOR))
    monkeypatch.setattr(upgrade, "_on_infra02", lambda inventory, work: work(run))
    if checks:
        monkeypatch.setattr(upgrade, "checks_before_cutover", lambda inventory, release: [])
    monkeypatch.setattr(successor, "load", lambda inventory, release: None)


def _upgrade(*args):
    return subprocess.run([sys.executable, "-m", "operations.upgrade", *args], cwd=REPO,
                          capture_output=True, text=True, env={"PYTHONPATH": str(REPO),
                                                               "PATH": "/usr/bin:/bin"})


def test_the_commands_have_help_and_stop_on_bad_data_before_any_host(tmp_path):
    assert "cutover" in _upgrade("--help").stdout and "rollback" in _upgrade("--help").stdout
    inventory = tmp_path / "inv.py"
    inventory.write_text(
        "infra02 = [('infra02', {'successor_net': {'link': 'br0', 'hwaddr': 'PLACEHOLDER-mac',"
        " 'ipv4': '192.0.2.20/24'}, 'data_volume_host_path': '/srv/a b'})]\n"
        "email = [('email', {})]\n")
    for command in ("cutover", "rollback"):
        result = _upgrade(str(inventory), command)
        assert result.returncode == 2, result.stderr
        assert "infra02: successor_net: hwaddr still PLACEHOLDER" in result.stderr
        assert "Traceback" not in result.stderr


def test_a_failed_step_stops_the_cutover_and_names_the_rollback(monkeypatch, capsys):
    # Infra02 is faked (no LXC host here): its state as prepare leaves it, and a runner
    # that fails the step that stops the old container.
    facts = _facts(email="RUNNING", email_next="RUNNING")
    config = {n: base64.b64encode(c.config.encode()).decode()
              for n, c in facts["containers"].items()}
    state = "".join(f"container {n}\nstate RUNNING\nconfig {config[n]}\nrelease trixie\n"
                    for n in config) + "marker email\n"
    ran = []

    def run(command):
        ran.append(command)
        if command.startswith("if [ -f"):
            return 0, state
        return (1, "lxc-stop: timed out") if "lxc-stop -n email -k" in command else (0, "ok")
    _fake_infra02(monkeypatch, run, checks=True)
    assert upgrade.main(["inventories/prod.py", "cutover"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-3].startswith("total ")
    assert out[-2].startswith("delivery held and Dovecot stopped ")
    assert out[-1].startswith("next: the cutover stopped at `stop email`: run `python -m "
                              "operations.upgrade inventories/prod.py rollback`")
    assert [line[:4] for line in out if line[:4] in ("OK  ", "FAIL")][-1] == "FAIL"
    assert not any("mail queue" in c for c in ran)


def test_the_facts_command_reads_configs_releases_scripts_and_the_marker(tmp_path):
    # On plain directories; lxc-info is a stand-in (no LXC here) that says RUNNING.
    lxc = tmp_path / "lxc"
    for name, release in (("email", "bullseye"), ("email-next", "trixie")):
        rootfs = lxc / name / "rootfs"
        (rootfs / "etc").mkdir(parents=True)
        (rootfs / "etc/os-release").write_text(f"VERSION_CODENAME={release}\n")
        (lxc / name / "config").write_text(f"lxc.uts.name = {name}\n\n")
    sbin = lxc / "email/rootfs/usr/local/sbin"
    sbin.mkdir(parents=True)
    for script in ("mail-quiesce", "mail-resume"):
        (sbin / script).write_text("#!/bin/sh\n")
        (sbin / script).chmod(0o755)
    (tmp_path / "volume").mkdir()
    (tmp_path / "volume/.cacert-owner").write_text("email\n")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/lxc-info").write_text("#!/bin/sh\necho RUNNING\n")
    (tmp_path / "bin/lxc-info").chmod(0o755)
    output = subprocess.run(
        ["sh", "-c", handover.facts_command("email", str(tmp_path / "volume"), str(lxc))],
        capture_output=True, text=True, env={"PATH": f"{tmp_path}/bin:/usr/bin:/bin"}).stdout
    facts = handover.parse_facts(output)
    assert facts["marker"] == "email"
    assert facts["containers"] == {
        "email": handover.Container("email", "RUNNING", "lxc.uts.name = email\n\n",
                                    "bullseye", True),
        "email-next": handover.Container("email-next", "RUNNING",
                                         "lxc.uts.name = email-next\n\n", "trixie", False)}


def test_the_successor_takes_the_nics_hand_written_keys_and_is_told_of_the_rest():
    facts = _facts(email="RUNNING", email_next="RUNNING")
    old = facts["containers"]["email"]
    hand_written = old.config.replace(
        "lxc.net.1.name = eth1\n", "lxc.net.1.name = eth1\nlxc.net.1.mtu = 9000\n") + \
        "lxc.idmap = u 0 100000 65536\n"
    facts["containers"]["email"] = handover.Container("email", "RUNNING", hand_written)
    found = handover.roles("cutover", "email", facts["containers"])
    configs = handover.final_configs(found, facts["containers"], SERVING, SUCCESSOR)
    assert lxc_config.values(configs["email"], "lxc.net.1.mtu") == ["9000"]
    steps = handover.plan("cutover", found, facts, SERVING, SUCCESSOR)
    assert steps[0].name == "LXC keys of email that email-next lacks (not carried: compare)"
    assert steps[0].script == "echo 'lxc.idmap = u 0 100000 65536'"


def test_a_newer_dumps_sandbox_line_is_left_out_for_an_older_client():
    # as trixie's mariadb-dump 11.8 writes it: a blank after the comment
    for first in ("/*M!999999\\- enable the sandbox mode */ ",
                  "/*M!999999\\- enable the sandbox mode */"):
        dump = first + "\n-- MariaDB dump 10.19\nINSERT 1;\n"
        result = subprocess.run(["sed", "-e", handover.SANDBOX_LINE], input=dump,
                                capture_output=True, text=True)
        assert result.stdout == "-- MariaDB dump 10.19\nINSERT 1;\n"
    older = "-- MariaDB dump 10.19\n/*M!999999\\- enable the sandbox mode */\n"
    assert subprocess.run(["sed", "-e", handover.SANDBOX_LINE], input=older,
                          capture_output=True, text=True).stdout == older


def test_a_rollback_returns_the_successor_to_its_prepared_state(tmp_path):
    facts = _rollback_facts()
    for name in ("email", "email-prev"):
        rootfs = tmp_path / name / "rootfs"
        (rootfs / "var/lib/mailstore").mkdir(parents=True)
        (rootfs / "var/lib/mailstore/delivery-held").write_text("held\n")
        (rootfs / "etc/postfix").mkdir(parents=True)
        (rootfs / "etc/postfix/main.cf").write_text(
            "myhostname = email\ndefer_transports = local lmtp\nrelayhost =\n")
    containers = {n: handover.Container(n, c.state, c.config.replace("/var/lib/lxc",
                                                                     str(tmp_path)))
                  for n, c in facts["containers"].items()}
    found = handover.roles("rollback", "email", containers)
    result = _bash(handover._rename(found, {**facts, "containers": containers}, SERVING,
                                    SUCCESSOR, str(tmp_path)))
    assert result.returncode == 0, result.stderr
    successor_root = tmp_path / "email-next/rootfs"
    assert not (successor_root / "var/lib/mailstore/delivery-held").exists()
    assert (successor_root / "etc/postfix/main.cf").read_text() == \
        "myhostname = email\nrelayhost =\n"
    # The old container keeps its hold until the rollback's last step resumes it there.
    assert (tmp_path / "email/rootfs/var/lib/mailstore/delivery-held").exists()
    assert "ExecStartPre=/usr/local/sbin/data-volume-owner /srv/mail email-next\n" in (
        successor_root / handover.DROP_IN.lstrip("/")).read_text()


def test_a_refusal_names_every_problem_and_changes_nothing(monkeypatch, capsys):
    # Infra02 is faked (no LXC host here): only the serving container exists.
    config = base64.b64encode(_config("email", SERVING).encode()).decode()
    ran = []

    def run(command):
        ran.append(command)
        return 0, f"container email\nstate RUNNING\nconfig {config}\nmarker email\n"
    _fake_infra02(monkeypatch, run)
    assert upgrade.main(["--json", "inventories/prod.py", "cutover"]) == 2
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        "python -m operations.upgrade: cutover refused, nothing was changed:",
        "  no successor email-next on Infra02: run `prepare` first"]
    assert json.loads(out) == {"ok": False, "refused": [
        "no successor email-next on Infra02: run `prepare` first"]}
    assert len(ran) == 1   # the state was read, nothing run


def test_a_step_failing_before_the_hold_says_the_service_never_left(monkeypatch, capsys):
    # Infra02 faked as above; the DKIM/Icinga key copy fails.
    facts = _facts(email="RUNNING", email_next="RUNNING")
    state = "".join(f"container {n}\nstate RUNNING\nconfig "
                    f"{base64.b64encode(c.config.encode()).decode()}\n"
                    for n, c in facts["containers"].items()) + "marker email\n"

    def run(command):
        if command.startswith("if [ -f"):
            return 0, state
        return (1, "tar: short read\nexit") if "opendkim/keys" in command else (0, "ok")
    _fake_infra02(monkeypatch, run, checks=True)
    assert upgrade.main(["inventories/prod.py", "cutover"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-5:-2] == ["FAIL keys email -> email-next (DKIM, Icinga certificate) (0 s)",
                          "       tar: short read", "       exit"]
    assert out[-1].startswith("next: the cutover stopped at `keys email -> email-next (DKIM, "
                              "Icinga certificate)`, before delivery was held: the service "
                              "never left")
    assert not any(line.startswith("delivery held") for line in out)


def test_a_steps_script_runs_on_infra02_through_pyinfra_and_a_failing_pipe_fails_it(tmp_path):
    # Infra02 is this machine here (pyinfra's @local connector, as in the lab); in a process
    # of its own, as the command runs it (pyinfra's connection changes the process).
    inventory = tmp_path / "inv.py"
    inventory.write_text("infra02 = [('@local', {})]\nemail = [('email', {})]\n")
    script = (f"from operations import handover, upgrade\n"
              f"print(repr(upgrade._on_infra02({str(inventory)!r}, lambda run: ("
              f"run(handover.bash('echo one line\\necho two')), "
              f"run(handover.bash('false | cat\\necho not reached'))))))\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                            text=True, timeout=120, env={"PYTHONPATH": str(REPO),
                                                         "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    ok, piped = ast.literal_eval(result.stdout.strip().splitlines()[-1])
    assert ok == (0, "one line\ntwo")
    assert piped[0] != 0 and "not reached" not in piped[1]


def test_dry_lists_the_steps_and_runs_none(monkeypatch, capsys):
    # Infra02 faked as above: the state as prepare leaves it.
    facts = _facts(email="RUNNING", email_next="RUNNING")
    state = "".join(f"container {n}\nstate RUNNING\nconfig "
                    f"{base64.b64encode(c.config.encode()).decode()}\n"
                    for n, c in facts["containers"].items()) + "marker email\n"
    ran = []

    def run(command):
        ran.append(command)
        return 0, state
    _fake_infra02(monkeypatch, run)
    assert upgrade.main(["inventories/prod.py", "cutover", "--dry"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["OK   keys email -> email-next (DKIM, Icinga certificate) (0 s)",
                       "       (before the hold)"]
    assert "OK   resume delivery on email (0 s)" in out
    assert out[-1].startswith("next: --dry: nothing was changed")
    assert not any(line.startswith("delivery held") for line in out)
    assert len(ran) == 1
    assert upgrade.main(["--json", "inventories/prod.py", "rollback", "--dry"]) == 2


def test_pyinfra_off_a_terminal_prints_only_the_end_of_a_failed_run(capfd, tmp_path):
    # cron, a monthly rehearsal: stderr is not a terminal here (pytest captures it). The real
    # pyinfra, on an inventory that fails as it loads: no host is touched.
    from operations import infra02_steps
    broken = tmp_path / "broken.py"
    broken.write_text("raise ValueError('this inventory is broken on purpose')\n")
    code = infra02_steps.pyinfra(str(broken), {}, "email")
    out, err = capfd.readouterr()
    assert code != 0 and out == ""
    assert "broken on purpose" in err
