"""operations/puppet.py against fake hosts: purge when present, nothing otherwise."""
from tests.unit.deploy import fake_host  # noqa: F401  (puts the repository on sys.path)
from tests.unit.deploy.fake_host import run

from operations import puppet


def _enabled(units):
    return lambda *a, **kw: {u: True for u in units}


def test_host_without_puppet_gets_no_operation():
    assert run(puppet.removed, facts={"DebPackages": {"openssh-server": ["1:9.2"]}}) == []


def test_running_agent_is_stopped_disabled_then_purged():
    ops = run(puppet.removed, facts={
        "DebPackages": {"puppet": ["7.23.0-1"], "ruby": ["1:3.1"]},
        "SystemdStatus": {"puppet.service": True, "ssh.service": True},
        "SystemdEnabled": _enabled(["puppet.service", "ssh.service"]),
    })
    commands = [c for op in ops for c in op.commands]
    assert commands.index("systemctl stop puppet.service") < \
        commands.index("systemctl disable puppet.service")
    purge = [c for c in commands if "apt-get" in c]
    assert len(purge) == 1 and "--purge" in purge[0] and purge[0].endswith("remove --purge puppet")
    assert not any("ssh" in c for c in commands)


def test_puppet_agent_package_of_trixie_is_purged_too():
    ops = run(puppet.removed, facts={
        "DebPackages": {"puppet-agent": ["8.10.0-2"]},
        "SystemdStatus": {"puppet.service": False},
        "SystemdEnabled": lambda *a, **kw: {"puppet.service": False},
    })
    commands = [c for op in ops for c in op.commands]
    # Already stopped and disabled: only the purge is left to do.
    assert len(commands) == 1
    assert "--purge" in commands[0] and commands[0].endswith("remove --purge puppet-agent")
