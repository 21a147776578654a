"""The lab's Icinga2 master runs checks on the container's agent (command_endpoint) and gets OK.

Asks the master's REST API (https://<bridge>:5665, verified against the master's own CA, as
the read-only API user `lab-reader`) for the services of the container's host, and waits for a
check result that is recent, OK, and was produced by the agent (`check_source`).
"""
import base64
import http.client
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from lab import lock  # noqa: E402
from operations import lab_icinga_master  # noqa: E402

AGENT = "email.infra.cacert.test"
MASTER = "master.cacert.test"
BRIDGE = "10.0.3.1"


def _auth(user="lab-reader"):
    password = lab_icinga_master.api_password_file(user).read_text().strip()
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def request(method, path, body=None, user="lab-reader"):
    """(status, JSON) of a master API call as `user`. TLS is verified against the master's
    CA, and the certificate must be the master's (its CN; Icinga's certificates carry no
    subjectAltName for an address, so the name is checked here rather than by ssl)."""
    context = ssl.create_default_context(cafile=str(lab_icinga_master.CA_CERT))
    context.check_hostname = False
    connection = http.client.HTTPSConnection(BRIDGE, 5665, context=context, timeout=10)
    try:
        connection.request(method, path, body=json.dumps(body) if body is not None else None,
                           headers={"Accept": "application/json", "Authorization": _auth(user)})
        peer = connection.sock.getpeercert()
        subject = dict(item for rdn in peer["subject"] for item in rdn)
        assert subject["commonName"] == MASTER
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def api(path):
    status, answer = request("GET", path)
    assert status == 200, answer
    return answer


def service(name):
    query = urllib.parse.urlencode(
        [("attrs", a) for a in ("state", "last_check", "last_check_result")])
    path = urllib.parse.quote(f"{AGENT}!{name}")
    results = api(f"/v1/objects/services/{path}?{query}")["results"]
    assert len(results) == 1, results
    return results[0]["attrs"]


def test_agent_is_connected_and_its_checks_are_ok(deployed, ssh):
    assert ssh("systemctl is-active icinga2").stdout.strip() == "active"
    ssh("icinga2 daemon -C >/dev/null")
    started = time.time()
    deadline = started + 120
    while True:
        disk = service("disk")
        result = disk["last_check_result"] or {}
        fresh = disk["last_check"] > started - 60
        if fresh and disk["state"] == 0 and result.get("check_source") == AGENT:
            break
        if time.time() > deadline:
            pytest.fail(f"no recent OK disk check from the agent within 120 s: {disk}")
        time.sleep(3)
    assert "DISK OK" in result["output"]
    # The command ran in the container: its plugin, its command line.
    assert result["command"][0] == "/usr/lib/nagios/plugins/check_disk"
    host = api(f"/v1/objects/hosts/{AGENT}?attrs=state")["results"][0]["attrs"]
    assert host["state"] == 0  # cluster-zone: the agent's zone is connected


def test_agent_certificate_is_signed_by_the_master_ca(deployed, ssh):
    ca = ssh("cat /var/lib/icinga2/certs/ca.crt").stdout
    assert ca.strip() == lab_icinga_master.CA_CERT.read_text().strip()
    ssh(f"openssl verify -CAfile /var/lib/icinga2/certs/ca.crt "
        f"/var/lib/icinga2/certs/{AGENT}.crt")
    # The ticket was used and removed.
    assert ssh("test -e /root/.icinga2-agent.ticket", check=False).returncode != 0


def test_api_users_get_only_their_permissions(deployed):
    """lab-reader may not submit a check result (Icinga answers as if nothing matched);
    mailstore, which `mailstore icinga push` uses, may."""
    body = {"type": "Service", "filter": f'service.__name=="{AGENT}!load"', "exit_status": 0,
            "plugin_output": "OK - permission test"}
    status, answer = request("POST", "/v1/actions/process-check-result", body)
    assert status in (403, 404) and "results" not in answer, answer
    status, answer = request("POST", "/v1/actions/process-check-result", body, user="mailstore")
    assert status == 200 and answer["results"][0]["code"] == 200, answer


def test_config_that_fails_validation_is_never_activated(deployed, ssh, tmp_path):
    """Inventory data that renders a config Icinga2 rejects (a global zone named like the
    agent's own zone: defined twice): the deploy fails with the validator's reason, the live
    files stay as they were and the agent keeps running and reporting."""
    inventory = tmp_path / "broken_inventory.py"
    inventory.write_text(
        "import copy\n"
        "from inventories import lab as _lab\n"
        "from operations.defaults import defaults as _defaults\n"
        "_name, _data = _lab.email[0]\n"
        "# Outside inventories/, pyinfra finds no group_data: merge the defaults here.\n"
        "_data = {**_defaults(), **copy.deepcopy(_data)}\n"
        f"_data['icinga2_global_zones'] = ['global-templates', '{AGENT}']\n"
        "email = [(_name, _data)]\n")
    deploy = tmp_path / "agent_only.py"
    deploy.write_text("from operations import icinga2_agent\nicinga2_agent.agent()\n")
    before = ssh("sha256sum /etc/icinga2/zones.conf").stdout
    with lock.held():
        result = subprocess.run(
            [str(REPO / ".venv" / "bin" / "pyinfra"), "-y", str(inventory), str(deploy)],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "re-defined" in output or "redefined" in output, output[-3000:]
    assert ssh("sha256sum /etc/icinga2/zones.conf").stdout == before
    assert ssh("systemctl is-active icinga2").stdout.strip() == "active"
    ssh("icinga2 daemon -C >/dev/null")
