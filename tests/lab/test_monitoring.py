"""The lab master runs the mailstore checks on the container's agent, and the backup's pushed
result turns CRITICAL when the backup is stale.

The deploy registered the checks (operations/monitoring.py); here the master's REST API is
asked (TLS verified against the master's CA, as the read-only user `lab-reader`) for each
service's last result, which must be recent, come from the agent (`check_source`), and be the
plugin's own answer: a check that cannot read its target (no sudo rule, wrong permissions)
answers UNKNOWN, which fails here.
"""
import base64
import http.client
import json
import ssl
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from operations.defaults import defaults  # noqa: E402
from operations import lab_icinga_master, monitoring  # noqa: E402

AGENT = "email.infra.cacert.test"
BRIDGE = "10.0.3.1"
DATA = defaults()
REPOSITORY = DATA["backup_repository"]
KEY_FILE = DATA["backup_key_file"]
# service -> (plugin's name in its status line, states that are a sound answer in the lab)
ACTIVE = {
    "mailstore-volume": ("VOLUME", {0}),
    # a lab account that never got mail has no Maildir yet: WARNING is an honest answer
    "mailstore-maildir": ("MAILDIR", {0, 1}),
    "mailstore-cert-email": ("CERT", {0}),
    "mailstore-cert-community": ("CERT", {0}),
    "mailstore-cert-selfservice-api": ("CERT", {0}),
    "mailstore-mailq": ("MAILQ", {0, 1}),
    "mailstore-crl": ("CRL", {0}),
    "mailstore-backup-repository": ("BACKUP", {0}),
}


def _master(method, path, user):
    """(status, JSON body) of `method path` on the master's API as `user` (TLS verified: CA
    and the master's CN)."""
    context = ssl.create_default_context(cafile=str(lab_icinga_master.CA_CERT))
    # Icinga's certificates name the node, not the address; the name is checked below
    context.check_hostname = False
    context.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
    password = lab_icinga_master.api_password_file(user).read_text().strip()
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    connection = http.client.HTTPSConnection(BRIDGE, 5665, context=context, timeout=10)
    try:
        connection.request(method, path, headers={"Accept": "application/json",
                                                  "Authorization": "Basic " + auth})
        subject = dict(item for rdn in connection.sock.getpeercert()["subject"] for item in rdn)
        assert subject["commonName"] == "master.cacert.test"
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def _get(path):
    """JSON of a GET on the master's API as the read-only lab-reader."""
    status, body = _master("GET", path, "lab-reader")
    assert status == 200, body
    return body


def service(name):
    query = urllib.parse.urlencode([("attrs", a) for a in (
        "state", "last_check", "last_check_result", "vars", "check_command")])
    found = _get(f"/v1/objects/services/{urllib.parse.quote(f'{AGENT}!{name}')}?{query}")
    return found["results"][0]["attrs"]


def wait_for_result(name, since, accept, timeout=150):
    """The first result of `name` newer than `since` that `accept(attrs)` takes."""
    deadline = time.time() + timeout
    attrs = None
    while time.time() < deadline:
        attrs = service(name)
        if (attrs["last_check_result"] or {}).get("execution_end", 0) > since and accept(attrs):
            return attrs
        time.sleep(3)
    pytest.fail(f"{name}: no acceptable result after {since} within {timeout}s; last: "
                f"{json.dumps((attrs or {}).get('last_check_result'), indent=1)[:1500]}")


DEPLOY = ("email",)   # for `deployed` in conftest, which the one below builds on


@pytest.fixture(scope="module")
def deployed(deployed, lab, ssh):
    """The deploy as it is, and a fresh, verified snapshot in the repository the checks watch.
    The backup deploy (operations/backup.py) makes that repository with the lab's key; only
    without it is it made here, the same way (init with the key file)."""
    ssh(f"test -e {REPOSITORY}/config.json || {{ mkdir -p -m 700 $(dirname {REPOSITORY}) && "
        f"mailstore backup init {REPOSITORY} --key-file {KEY_FILE} >/dev/null; }}")
    ssh(f"mailstore backup run {REPOSITORY} {lab['mail_root']} --key-file {KEY_FILE} "
        f">/dev/null && mailstore backup verify {REPOSITORY} --key-file {KEY_FILE} >/dev/null")
    return time.time()


def test_the_agent_runs_every_mailstore_check_for_the_master(deployed):
    started = time.time()
    # results that began after the backup repository was made
    for name, (plugin, states) in ACTIVE.items():
        attrs = wait_for_result(name, deployed, lambda a: a["last_check_result"]
                                .get("check_source") == AGENT)
        result = attrs["last_check_result"]
        assert result["output"].startswith(plugin + " "), result["output"]
        assert attrs["state"] in states, f"{name}: {result['output']}"
        args = attrs["vars"]["mailstore_args"]
        assert not args or result["command"][-len(args):] == args
        assert "check" in result["command"]
        assert attrs["vars"]["managed_by"] == "mailstore"
    print(f"all {len(ACTIVE)} mailstore checks reported by the agent within "
          f"{time.time() - started:.0f}s")


def test_privileged_checks_run_through_sudo_and_only_the_declared_ones(deployed, ssh):
    desc = json.loads(ssh(f"cat {monitoring.DESCRIPTION}").stdout)
    maildir = next(s for s in desc["services"] if s.get("check") == "maildir")
    declared = desc["mailstore_by_check"]["maildir"] + ["check", "maildir"] + maildir["args"]
    as_nagios = "runuser -u nagios -- "
    quoted = " ".join(f"'{a}'" for a in declared)
    ok = ssh(as_nagios + quoted, check=False)
    assert ok.returncode in (0, 1), ok.stdout + ok.stderr
    assert ok.stdout.startswith("MAILDIR ")
    # other arguments, another file, another user: refused by sudo before anything runs
    for argv in (declared[:-1],
                 ["/usr/bin/sudo", "-n", "/usr/local/bin/mailstore", "check", "cert",
                  "/etc/shadow"],
                 ["/usr/bin/sudo", "-n", "-u", "vmail", "/usr/local/bin/mailstore", "check",
                  "volume", "/"]):
        refused = ssh(as_nagios + " ".join(f"'{a}'" for a in argv), check=False)
        assert refused.returncode != 0 and "sudo" in refused.stderr, (argv, refused.stderr)
    # the Maildirs really are closed to nagios: sudo is what makes the check work
    direct = ssh(as_nagios + "/usr/local/bin/mailstore check maildir " + maildir["args"][0],
                 check=False)
    assert direct.returncode == 3, direct.stdout


def _backdated_snapshot(ssh, repo, mail_root, days):
    """A repository whose only snapshot finished `days` ago (the clock of `backup run` is
    moved back; the repository itself is made by the real code)."""
    ssh(f"rm -rf {repo} && mailstore backup init {repo} >/dev/null")
    script = (f"import sys, time\nreal = time.time\ntime.time = lambda: real() - {days} * 86400\n"
              "from mailstore.cli import main\n"
              f"sys.argv = ['mailstore', 'backup', 'run', '{repo}', '{mail_root}']\nmain()\n")
    ssh("/opt/mailstore/venv/bin/python - >/dev/null", input=script)


def test_a_stale_backup_turns_the_pushed_backup_service_critical(deployed, lab, ssh):
    stale = "/root/stale-backup-repository"
    _backdated_snapshot(ssh, stale, lab["mail_root"], days=3)
    before = time.time()
    pushed = ssh(f"{monitoring.PUSH} mailstore-backup backup --repo {stale} "
                 f"-w {monitoring.BACKUP_PUSH_WARNING} -c {monitoring.BACKUP_PUSH_CRITICAL}")
    assert "submitted CRITICAL" in pushed.stdout, pushed.stdout
    attrs = wait_for_result("mailstore-backup", before - 1, lambda a: True, timeout=30)
    assert attrs["state"] == 2, attrs["last_check_result"]
    assert "3.0d ago" in attrs["last_check_result"]["output"]
    ssh(f"rm -rf {stale}")

    # the nightly job's own command, after a good run: green again
    before = time.time()
    ssh(f"mailstore backup run {REPOSITORY} {lab['mail_root']} --key-file {KEY_FILE} "
        f">/dev/null")
    good = ssh(monitoring.PUSH_BACKUP)
    assert "submitted" in good.stdout, good.stdout
    attrs = wait_for_result("mailstore-backup", before - 1, lambda a: True, timeout=30)
    assert attrs["state"] == 0, attrs["last_check_result"]
    assert attrs["last_check_result"]["performance_data"], attrs["last_check_result"]


def _delete_on_master(name):
    """Delete one of our services as the `mailstore` API user (as a restore or a hand might)."""
    status, body = _master("DELETE", "/v1/objects/services/" + urllib.parse.quote(
        f"{AGENT}!{name}") + "?cascade=1", "mailstore")
    assert status == 200, body


def test_a_service_lost_on_the_master_comes_back_with_the_next_deploy(deployed, run_deploy):
    _delete_on_master("mailstore-mailq")
    gone = urllib.parse.quote('service.name=="mailstore-mailq"')
    assert _get(f"/v1/objects/services?filter={gone}")["results"] == []
    result = run_deploy()
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert service("mailstore-mailq")["vars"]["managed_by"] == "mailstore"
