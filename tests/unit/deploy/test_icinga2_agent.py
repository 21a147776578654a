"""operations/icinga2_agent.py: templates from inventory data, validation, the ticket's path."""
import re
import shutil
import subprocess

import pytest

from tests.unit.deploy import fake_host  # noqa: F401  (puts the repository on sys.path)
from tests.unit.deploy.conftest import REPO, write_secret
from tests.unit.deploy.fake_host import run

from operations.defaults import defaults
from operations.secrets import InventoryError
from operations import icinga2_agent, secret_file, staging

TICKET = "0123456789abcdef0123456789abcdef01234567"
LAB = {
    "icinga2_node_name": "email.infra.cacert.test",
    "icinga2_parent_endpoints": [{"name": "master.cacert.test", "host": "10.0.3.1",
                                  "port": 5665}],
}


def render(data):
    """Each template rendered the way files.template renders it, by file name."""
    values = icinga2_agent.settings({**defaults(), **data})
    return {name: staging.render(f"files/icinga2_agent/{name}.j2", **values)
            for name in icinga2_agent.TEMPLATES}


def test_zones_name_parent_endpoints_own_zone_and_global_zones():
    zones = render({**LAB, "icinga2_global_zones": ["global-templates", "director-global"]})[
        "zones.conf"]
    assert 'object Endpoint "master.cacert.test" {\n  host = "10.0.3.1"\n  port = "5665"\n}' \
        in zones
    assert 'object Zone "master" {\n  endpoints = [ "master.cacert.test" ]\n}' in zones
    assert 'object Zone ZoneName {\n  endpoints = [ NodeName ]\n  parent = "master"\n}' in zones
    for zone in ("global-templates", "director-global"):
        assert f'object Zone "{zone}" {{\n  global = true\n}}' in zones


def test_two_parent_endpoints_one_without_host():
    zones = render({"icinga2_parent_endpoints": [
        {"name": "m1.example.org", "host": "m1.example.org", "port": 5665},
        {"name": "m2.example.org", "host": None, "port": 5665}]})["zones.conf"]
    assert 'endpoints = [ "m1.example.org", "m2.example.org" ]' in zones
    assert 'object Endpoint "m2.example.org" {\n}' in zones


def test_constants_and_api_listener():
    rendered = render({**LAB, "icinga2_accept_config": False})
    assert 'const NodeName = "email.infra.cacert.test"' in rendered["constants.conf"]
    assert 'const TicketSalt = ""' in rendered["constants.conf"]
    api = rendered["api.conf"]
    assert "bind_port = 5665" in api
    assert "accept_commands = true" in api
    assert "accept_config = false" in api
    assert "accept_config = true" in render(LAB)["api.conf"]
    assert 'include_recursive "conf.d"' not in rendered["icinga2.conf"]


@pytest.mark.parametrize("data, key", [
    ({"icinga2_node_name": 'evil"; object Foo "x'}, "icinga2_node_name"),
    ({"icinga2_parent_zone": ""}, "icinga2_parent_zone"),
    ({"icinga2_parent_endpoints": []}, "icinga2_parent_endpoints"),
    ({"icinga2_parent_endpoints": [{"name": "m", "host": "a b", "port": 5665}]},
     "icinga2_parent_endpoints[0] host"),
    ({"icinga2_parent_endpoints": [{"name": "m", "host": "m", "port": 70000}]},
     "icinga2_parent_endpoints[0] port"),
    ({"icinga2_parent_endpoints": [{"host": "m"}]}, "icinga2_parent_endpoints[0]"),
    ({"icinga2_global_zones": ["ok", "no/slash"]}, "icinga2_global_zones"),
])
def test_bad_data_names_the_key(data, key):
    with pytest.raises(icinga2_agent.Icinga2DataError, match="^" + re.escape(key)):
        icinga2_agent.settings({**defaults(), **data})


@pytest.mark.skipif(not shutil.which("icinga2"), reason="icinga2 is not installed here")
def test_rendered_config_passes_icinga2_validation(tmp_path):
    """The real `icinga2 daemon -C` accepts what the templates make (catches DSL slips)."""
    etc = tmp_path / "etc"
    (etc / "features-available").mkdir(parents=True)
    (etc / "features-enabled").mkdir()
    for name, text in render(LAB).items():
        dest = etc / icinga2_agent.TEMPLATES[name].replace(icinga2_agent.ETC + "/", "")
        dest.write_text(text)
    (etc / "features-enabled" / "api.conf").symlink_to("../features-available/api.conf")
    dirs = {d: tmp_path / d.lower() for d in ("DataDir", "LogDir", "CacheDir", "SpoolDir",
                                                "InitRunDir")}
    for d in dirs.values():
        d.mkdir(exist_ok=True)
    # The ApiListener refuses to load without the agent's certificate: a self-signed stand-in.
    certs = dirs["DataDir"] / "certs"
    certs.mkdir()
    cn = LAB["icinga2_node_name"]
    subprocess.run(["icinga2", "pki", "new-cert", "-DRunAsUser=root", "-DRunAsGroup=root",
                    "--cn", cn, "--key", str(certs / f"{cn}.key"),
                    "--cert", str(certs / f"{cn}.crt")], check=True, capture_output=True)
    shutil.copy(certs / f"{cn}.crt", certs / "ca.crt")
    result = subprocess.run(
        ["icinga2", "daemon", "-C", "-c", str(etc / "icinga2.conf"),
         "-DRunAsUser=root", "-DRunAsGroup=root",
         *(f"-D{k}={v}" for k, v in dirs.items())],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def _ops(facts, data=None):
    return run(icinga2_agent.agent, facts=facts, data={**LAB, **(data or {})})


def test_new_agent_gets_ticket_uploaded_not_on_a_command_line(secrets):
    write_secret(secrets, "icinga2-agent.ticket", TICKET + "\n")
    ops = _ops({"File": lambda path: None})
    names = [op.name.split(" | ")[-1] for op in ops]
    assert "Icinga2 ticket (from the secrets directory)" in names
    commands = [c for op in ops for c in op.commands]
    assert not any(TICKET in c for c in commands)
    request = [c for c in commands if c.startswith(icinga2_agent.PKI_SCRIPT)]
    assert request == [f"{icinga2_agent.PKI_SCRIPT} email.infra.cacert.test 10.0.3.1 5665 "
                       f"{icinga2_agent.TICKET_FILE}"]
    upload = next(op for op in ops
                  if op.name.endswith("Icinga2 ticket (from the secrets directory)"))
    assert upload.uploads == {secret_file.staged_path(icinga2_agent.TICKET_FILE): TICKET}
    # The certificate is there before the staged config is checked (the ApiListener needs it),
    # the check runs on the staged copy before anything is moved into place, then the reload.
    staged = names.index("Icinga2 configuration (checked before it is used)")
    assert names.index("Icinga2 certificate signed by master.cacert.test (ticket)") < staged
    assert staged < names.index("Reload Icinga2")
    config = ops[staged].commands
    check = next(i for i, c in enumerate(config) if "icinga2 daemon -C" in c)
    assert "-c /var/lib/cacert-deploy/staging/icinga2/icinga2.conf" in config[check]
    installs = [i for i, c in enumerate(config) if c.startswith("install -D")]
    assert len(installs) == 4 and check < min(installs)


def test_signed_agent_reads_no_ticket(secrets):
    # No ticket in the secrets directory: fine once the agent holds its certificate.
    ops = _ops({"File": lambda path: {"size": 1}})
    assert not any("ticket" in op.name.lower() for op in ops)


def test_missing_or_malformed_ticket_stops_the_run(secrets):
    with pytest.raises(InventoryError, match="icinga2-agent.ticket is missing"):
        _ops({"File": lambda path: None})
    write_secret(secrets, "icinga2-agent.ticket", "not a ticket\n")
    with pytest.raises(InventoryError, match="not an Icinga2 ticket"):
        _ops({"File": lambda path: None})


@pytest.mark.parametrize("derived", [{"successor_of": "email"}, {"rehearsal_of": "email"}])
def test_a_successor_or_a_rehearsal_leaves_the_agent_stopped(secrets, derived):
    # The same endpoint name as the serving container's agent: one connection per endpoint.
    names = [op.name for op in _ops({"File": lambda path: {"size": 1}}, derived)]
    assert any("Icinga2 stopped until the cut-over" in n for n in names)
    assert not any("Icinga2 running" in n for n in names)
