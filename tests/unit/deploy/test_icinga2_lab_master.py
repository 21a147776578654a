"""operations/lab_icinga_master.py: the lab master's config is what Icinga2 itself accepts,
and its API users get only the permissions they need."""
import re
import shutil
import subprocess

import jinja2
import pytest

from tests.unit.deploy import fake_host  # noqa: F401  (puts the repository on sys.path)
from tests.unit.deploy.conftest import REPO

from operations.defaults import defaults
from operations import lab_icinga_master

LAB = {
    "icinga2_node_name": "email.infra.cacert.test",
    "icinga2_parent_endpoints": [{"name": "master.cacert.test", "host": "10.0.3.1",
                                  "port": 5665}],
    "container_net": {**defaults()["container_net"], "ipv4": "10.0.3.19/24"},
}


def render(master_dir):
    values = {**lab_icinga_master.settings({**defaults(), **LAB}), "master_dir": str(master_dir)}
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             **lab_icinga_master.JINJA)
    return {name: env.from_string((REPO / f"files/lab_icinga_master/{name}.j2").read_text())
            .render(**values) for name in lab_icinga_master.TEMPLATES}


def test_settings_come_from_the_agents_data():
    values = lab_icinga_master.settings({**defaults(), **LAB})
    assert values["bind_host"] == "10.0.3.1" and values["port"] == 5665
    assert values["master_name"] == "master.cacert.test"
    assert values["agent_name"] == "email.infra.cacert.test"
    assert values["agent_address"] == "10.0.3.19"


def test_api_users_have_least_privilege(tmp_path):
    users = render(tmp_path)["api-users.conf"]
    blocks = dict(re.findall(r'object ApiUser "([^"]+)" \{(.*?)\n\}', users, re.S))
    assert set(blocks) == {"lab-reader", "mailstore"}
    for block in blocks.values():
        assert '"*"' not in block and "console" not in block and "config/" not in block
    assert "objects/query/Service" in blocks["lab-reader"]
    assert "create" not in blocks["lab-reader"] and "actions/" not in blocks["lab-reader"]
    assert "actions/process-check-result" in blocks["mailstore"]
    assert "objects/delete/Host" not in blocks["mailstore"]


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("icinga2"), reason="icinga2 is not installed here")
def test_master_config_passes_icinga2_validation(tmp_path):
    """Generate secrets, CA and certificate with master.sh, then `icinga2 daemon -C`."""
    (tmp_path / "etc").mkdir()
    for name, text in render(tmp_path).items():
        (tmp_path / "etc" / name).write_text(text)
    control = str(REPO / "files/lab_icinga_master/master.sh")
    ticket = tmp_path / "ticket"
    subprocess.run(["sh", control, str(tmp_path), "setup", "master.cacert.test",
                    "email.infra.cacert.test", str(ticket)],
                   check=True, capture_output=True, timeout=120)
    assert re.match(r"^[0-9a-f]{40}$", ticket.read_text().strip())
    assert (tmp_path / "secrets").stat().st_mode & 0o077 == 0
    result = subprocess.run(["sh", control, str(tmp_path), "validate"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
