"""operations/successor.py and `python -m operations.upgrade`: the successor's inventory is
derived from the serving one, and bad data stops the command before any host is touched."""
import subprocess
import sys

import pytest

from tests.unit.deploy.fake_host import REPO, run

from operations import infra02, lxc_config, successor, upgrade
from operations.defaults import defaults

NET = {"link": "br0", "hwaddr": "00:16:3e:00:00:20", "ipv4": "192.0.2.20/24",
       "ipv4_gateway": None, "ipv6": None, "ipv6_gateway": None}


def _serving(**data):
    return {**defaults(), "successor_net": dict(NET), **data}


def test_the_successor_gets_its_own_name_net_release_and_a_read_only_volume():
    derived = successor.derive(_serving(container_extra_nets=[{"name": "eth1"}]), "trixie")
    assert derived["container_name"] == "email-next"
    assert derived["successor_of"] == "email"
    assert derived["debian_release"] == "trixie"
    assert derived["container_net"] == NET
    assert derived["container_extra_nets"] == []
    mounts = lxc_config.wanted({key: derived[key] for key in lxc_config.DATA_KEYS}).mounts
    assert mounts[0] == ("srv/mail", "/srv/email-data srv/mail none bind,ro,create=dir 0 0")


def test_a_bullseye_lab_without_security_suite_gets_it_on_trixie():
    derived = successor.derive(_serving(debian_security_mirror=None), "trixie")
    assert derived["debian_security_mirror"] == defaults()["debian_security_mirror"]


@pytest.mark.parametrize("data, problem", [
    ({"successor_net": None}, "successor_net: not set"),
    ({"successor_net": {**NET, "hwaddr": "PLACEHOLDER-successor-mac"}}, "hwaddr still PLACEHOLDER"),
    ({"successor_net": {**NET, "ipv4": "213.154.225.228/24"}}, "is the serving container's own"),
    ({"successor_net": {**NET, "hwaddr": "00:FF:8F:E0:4A:90"}}, "hwaddr: 00:FF:8F:E0:4A:90 is the"),
    ({"successor_of": "email-old"}, "describes a successor already"),
])
def test_unusable_data_is_named(data, problem):
    assert any(problem in line for line in successor.check(_serving(**data), "trixie"))


def test_known_hosts_lines_of_the_old_address_are_written_for_the_new_one():
    text = ("10.0.3.19 ssh-ed25519 AAAAkey\nother ssh-rsa BBBB\n"
            "email,10.0.3.19 ecdsa-sha2-nistp256 CCCC\n")
    assert successor.known_hosts(text, "10.0.3.19", "10.0.3.39") == (
        "10.0.3.39 ssh-ed25519 AAAAkey\n10.0.3.39 ecdsa-sha2-nistp256 CCCC\n")


def test_a_new_successor_boots_with_the_old_containers_host_keys_and_hostname():
    data = {**successor.derive(_serving(), "trixie"), "root_authorized_keys": ["ssh-ed25519 K"]}
    ops = run(infra02.container, data=data, groups=("infra02",),
              facts={"Mounts": {"/srv/email-data": {}}})
    names = [op.name.split(" | ", 1)[-1] for op in ops]
    keys = names.index("SSH host keys and hostname of email for its successor")
    assert names.index("Create container email-next (Debian trixie)") < keys
    assert keys < names.index("Start container email-next")
    copy = ops[keys].commands[1]
    assert copy.startswith("cp -p /var/lib/lxc/email/rootfs/etc/ssh/ssh_host_*_key ")
    assert copy.endswith(" /var/lib/lxc/email-next/rootfs/etc/ssh/")
    assert ops[keys].commands[2] == ("cp -p /var/lib/lxc/email/rootfs/etc/hostname "
                                     "/var/lib/lxc/email-next/rootfs/etc/hostname")


def _upgrade(*args):
    return subprocess.run([sys.executable, "-m", "operations.upgrade", *args], cwd=REPO,
                          capture_output=True, text=True, env={"PYTHONPATH": str(REPO),
                                                               "PATH": "/usr/bin:/bin"})


def test_the_command_stops_on_a_placeholder_before_any_host(tmp_path):
    inventory = tmp_path / "inv.py"
    inventory.write_text(
        "infra02 = [('infra02', {'successor_net': {'link': 'br0', 'hwaddr': 'PLACEHOLDER-mac',"
        " 'ipv4': '192.0.2.20/24'}})]\nemail = [('email', {})]\n")
    result = _upgrade(str(inventory), "prepare")
    assert result.returncode == 2
    assert "python -m operations.upgrade: infra02: successor_net: hwaddr still PLACEHOLDER" \
        in result.stderr
    assert "email: successor_net: not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_command_has_help_and_refuses_an_unknown_release():
    assert "prepare" in _upgrade("--help").stdout
    result = _upgrade("inventories/lab.py", "prepare", "--release", "buster")
    assert result.returncode == 2 and "invalid choice: 'buster'" in result.stderr


def test_dovecot_waits_only_while_stopped_and_the_marker_names_the_old_container():
    data = successor.derive(_serving(), "trixie")
    waits = upgrade._dovecot_waits(lambda cmd: (0, "inactive\nemail\n"), data)
    assert waits.status == "OK"
    running = upgrade._dovecot_waits(lambda cmd: (0, "active\nemail\n"), data)
    assert running.status == "FAIL" and "dovecot active" in running.detail
    taken = upgrade._dovecot_waits(lambda cmd: (0, "inactive\nemail-next\n"), data)
    assert taken.status == "FAIL" and "names email-next" in taken.detail


def test_each_step_is_shown_with_its_duration():
    steps = [{"step": "container (Infra02)", "ok": True, "seconds": 9.8, "detail": "pyinfra"},
             {"step": "deploy (successor)", "ok": False, "seconds": 151.1, "detail": "pyinfra"}]
    text = upgrade.render(steps, as_json=False).splitlines()
    assert text[0] == "OK   container (Infra02) (9.8 s)"
    assert text[2] == "FAIL deploy (successor) (151.1 s)"
    assert text[-1] == "total 160.9 s"
