"""lab/icinga_agents.py: a further lab container's agent gets the ticket Icinga2 itself would
make, and the lab master accepts its objects; a second `container up` changes nothing."""
import re
import shutil
import subprocess

import pytest

from tests.unit.deploy.conftest import REPO
from tests.unit.deploy.test_icinga2_lab_master import render

from lab import icinga_agents

CN = "legacy.infra.cacert.test"


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("icinga2"), reason="icinga2 is not installed here")
def test_the_ticket_is_icinga2s_and_the_master_accepts_the_agent(tmp_path):
    (tmp_path / "etc").mkdir()
    for name, text in render(tmp_path).items():
        (tmp_path / "etc" / name).write_text(text)
    control = str(REPO / "files/lab_icinga_master/master.sh")
    made = tmp_path / "ticket"
    subprocess.run(["sh", control, str(tmp_path), "setup", "master.cacert.test", CN, str(made)],
                   check=True, capture_output=True, timeout=120)
    salt = (tmp_path / "secrets" / "ticket-salt").read_text().strip()
    assert icinga_agents.ticket(CN, salt) == made.read_text().strip()
    (tmp_path / "etc" / "agents.d" / "legacy.conf").write_text(
        icinga_agents.objects(CN, "10.0.3.29"))
    # a container without an agent: its Host object alone
    (tmp_path / "etc" / "agents.d" / "backup.conf").write_text(
        icinga_agents.host_object("backup.infra.cacert.test", "10.0.3.39"))
    result = subprocess.run(["sh", control, str(tmp_path), "validate"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def _master(lab_dir, main_conf):
    """A lab master directory whose master.sh records its arguments instead of running."""
    master = lab_dir / icinga_agents.MASTER
    (master / "secrets").mkdir(parents=True)
    (master / "etc").mkdir()
    (master / "secrets" / "ticket-salt").write_text("salt\n")
    (master / "etc" / "icinga2.conf").write_text(main_conf)
    script = master / "master.sh"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {master / 'calls'}\n")
    script.chmod(0o755)
    return master


def test_an_agent_is_made_known_once_and_an_old_master_gains_the_include(tmp_path):
    master = _master(tmp_path, "include \"zones.conf\"\n")
    said = []
    assert icinga_agents.ensure_agent(tmp_path, "legacy", CN, "10.0.3.29", said.append)
    ticket = (tmp_path / "secrets" / "icinga2-agent-legacy.ticket")
    assert ticket.read_text().strip() == icinga_agents.ticket(CN, "salt")
    assert ticket.stat().st_mode & 0o077 == 0
    assert f'object Host "{CN}"' in (master / "etc" / "agents.d" / "legacy.conf").read_text()
    conf = (master / "etc" / "icinga2.conf").read_text()
    assert conf.count(icinga_agents.INCLUDE) == 1
    assert (master / "calls").read_text() == f"{master} reload\n"
    # Again: nothing to reload.
    assert icinga_agents.ensure_agent(tmp_path, "legacy", CN, "10.0.3.29", said.append)
    assert (master / "calls").read_text() == f"{master} reload\n"
    assert (master / "etc" / "icinga2.conf").read_text() == conf


def test_the_templates_master_already_includes_the_agents(tmp_path):
    conf = render(tmp_path)["icinga2.conf"]
    assert re.search(r"^" + re.escape(icinga_agents.INCLUDE) + "$", conf, re.M)


def test_without_a_master_there_is_no_ticket_and_a_line_says_so(tmp_path):
    said = []
    assert not icinga_agents.ensure_agent(tmp_path, "legacy", CN, "10.0.3.29", said.append)
    assert not (tmp_path / "secrets").exists()
    assert said and "no lab Icinga2 master" in said[0]


def test_a_container_without_an_agent_gets_its_host_object_only(tmp_path):
    master = _master(tmp_path, icinga_agents.INCLUDE + "\n")
    said = []
    assert icinga_agents.ensure_host(tmp_path, "backup", "backup.infra.cacert.test",
                                     "10.0.3.39", said.append)
    conf = (master / "etc" / "agents.d" / "backup.conf").read_text()
    assert 'object Host "backup.infra.cacert.test"' in conf and "Endpoint" not in conf
    assert not (tmp_path / "secrets" / "icinga2-agent-backup.ticket").exists()
    assert (master / "calls").read_text() == f"{master} reload\n"
    assert icinga_agents.ensure_host(tmp_path, "backup", "backup.infra.cacert.test",
                                     "10.0.3.39", said.append)
    assert (master / "calls").read_text() == f"{master} reload\n"    # unchanged: no reload
    assert not icinga_agents.ensure_host(tmp_path / "none", "backup", "b", "10.0.3.39",
                                         said.append)
    assert "no lab Icinga2 master" in said[-1]
