"""`mailstore icinga register|push` against a real Icinga2 (Debian's package) on 127.0.0.1.

The test starts its own daemon: own config, data, log and run directories under a temp dir,
its own CA and API certificate (made with cryptography, as `icinga2 pki new-ca/new-cert`
would), API users with only the permissions each job needs, a free port; no systemd. It is
stopped when the module's tests are done.
"""
import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from mailstore.cli import main

NODE = "master.test"
HOST = "email.cacert.test"          # the Host object, and the agent's Endpoint name
MAILSTORE = os.path.join(os.path.dirname(sys.executable), "mailstore")
# what `mailstore icinga register` needs, nothing more (same list as the lab master's user)
REGISTER_PERMISSIONS = [
    "objects/query/Host",
    "objects/query/Service", "objects/create/Service", "objects/modify/Service",
    "objects/delete/Service",
    "objects/query/CheckCommand", "objects/create/CheckCommand",
    "objects/modify/CheckCommand", "objects/delete/CheckCommand",
    "actions/process-check-result",
]
PUSH_PERMISSIONS = ["actions/process-check-result"]

CONFIG = """
include <itl>
object FileLogger "main" {{ path = LogDir + "/icinga2.log"; severity = "information" }}
object Endpoint NodeName {{}}
object Zone ZoneName {{ endpoints = [ NodeName ] }}
object Endpoint "{host}" {{}}
object Zone "{host}" {{ endpoints = [ "{host}" ]; parent = ZoneName }}
object Zone "global-templates" {{ global = true }}
object ApiListener "api" {{
  bind_host = "127.0.0.1"
  bind_port = {port}
  accept_config = false
  accept_commands = false
}}
object CheckerComponent "checker" {{}}
object ApiUser "register" {{ password = "{register_pw}"; permissions = {register_perms} }}
object ApiUser "push" {{ password = "{push_pw}"; permissions = {push_perms} }}
object ApiUser "reader" {{ password = "{reader_pw}"; permissions = [ "*" ] }}
object Host "{host}" {{ check_command = "dummy"; enable_active_checks = false }}
/* not ours: registration must never touch it */
object Service "ping" {{ host_name = "{host}"; check_command = "dummy"; enable_active_checks = false }}
"""


def _ca(cn):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                         False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def _server_cert(ca, ca_key, cn):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName(cn), x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert, key


def _pem(obj):
    if hasattr(obj, "private_bytes"):
        return obj.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.TraditionalOpenSSL,
                                 serialization.NoEncryption())
    return obj.public_bytes(serialization.Encoding.PEM)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Master:
    """A running Icinga2 master: url, CA file, credential files, a reader session."""

    def __init__(self, base):
        self.base = base
        self.port = _free_port()
        self.url = "https://127.0.0.1:%d" % self.port
        self.passwords = {u: os.urandom(12).hex() for u in ("register", "push", "reader")}
        self.proc = None

    def write_files(self):
        b = self.base
        for d in ("etc", "data/certs", "log", "cache", "spool", "run/icinga2"):
            os.makedirs(os.path.join(b, d), exist_ok=True)
        ca, ca_key = _ca("Icinga Test CA")
        cert, key = _server_cert(ca, ca_key, NODE)
        certs = os.path.join(b, "data", "certs")
        for name, obj in (("ca.crt", ca), (NODE + ".crt", cert), (NODE + ".key", key)):
            with open(os.path.join(certs, name), "wb") as f:
                f.write(_pem(obj))
        self.ca_file = os.path.join(b, "ca.pem")
        shutil.copy(os.path.join(certs, "ca.crt"), self.ca_file)
        other, _ = _ca("Icinga Test CA")          # same name, other key: must be refused
        self.wrong_ca_file = os.path.join(b, "wrong-ca.pem")
        with open(self.wrong_ca_file, "wb") as f:
            f.write(_pem(other))
        self.credentials = {}
        for user, pw in self.passwords.items():
            path = os.path.join(b, "%s.credentials" % user)
            with open(path, "w") as f:
                f.write("%s:%s\n" % (user, pw))
            os.chmod(path, 0o600)
            self.credentials[user] = path
        with open(os.path.join(b, "etc", "icinga2.conf"), "w") as f:
            f.write(CONFIG.format(host=HOST, port=self.port,
                                  register_pw=self.passwords["register"],
                                  push_pw=self.passwords["push"],
                                  reader_pw=self.passwords["reader"],
                                  register_perms=json.dumps(REGISTER_PERMISSIONS),
                                  push_perms=json.dumps(PUSH_PERMISSIONS)))

    def command(self):
        b = self.base
        defines = {
            "NodeName": NODE, "ZoneName": "master", "ConfigDir": b + "/etc",
            "DataDir": b + "/data", "LogDir": b + "/log", "CacheDir": b + "/cache",
            "SpoolDir": b + "/spool", "InitRunDir": b + "/run",
            "PidPath": b + "/run/icinga2.pid", "StatePath": b + "/data/icinga2.state",
            "ModAttrPath": b + "/data/modified-attributes.conf",
            "ObjectsPath": b + "/cache/icinga2.debug", "VarsPath": b + "/cache/icinga2.vars",
            "ZonesStageVarDir": b + "/data/api/zones-stage",
            "RunAsUser": "root", "RunAsGroup": "root",
        }
        return (["icinga2", "daemon", "-c", b + "/etc/icinga2.conf"]
                + ["-D%s=%s" % kv for kv in defines.items()])

    def start(self, wait=60):
        self.write_files()
        self.log = open(os.path.join(self.base, "daemon.out"), "wb")
        env = dict(os.environ, ICINGA2_USER="root", ICINGA2_GROUP="root")
        # own process group: the daemon forks helpers; teardown signals the whole group
        self.proc = subprocess.Popen(self.command(), stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        self.reader = requests.Session()
        self.reader.trust_env = False
        self.reader.verify = self.ca_file
        self.reader.auth = ("reader", self.passwords["reader"])
        self.reader.headers["Accept"] = "application/json"
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("icinga2 exited with %s:\n%s" % (self.proc.returncode,
                                                                    self.tail()))
            try:
                r = self.reader.get(self.url + "/v1/status/ApiListener", timeout=2)
                if r.status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError("icinga2 API not up within %ss:\n%s" % (wait, self.tail()))

    def tail(self):
        with open(os.path.join(self.base, "daemon.out"), "rb") as f:
            return f.read()[-3000:].decode("utf-8", "replace")

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is not None:
            self._reap_group()
            return
        pgid = os.getpgid(self.proc.pid)
        os.killpg(pgid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._reap_group(pgid)

    def _reap_group(self, pgid=None):
        """Helpers of the daemon's process group that outlive the umbrella process."""
        pgid = pgid or self.proc.pid     # start_new_session: the group id is the pid
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            os.killpg(pgid, signal.SIGKILL)
        if not self.log.closed:
            self.log.close()

    # reading the state back, as an operator's dashboard would
    def obj(self, type_, name, attrs=None):
        r = self.reader.get("%s/v1/objects/%s/%s" % (self.url, type_, name),
                            json={"attrs": attrs} if attrs else None, timeout=10)
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return r.json()["results"][0]["attrs"]

    def services(self):
        r = self.reader.get(self.url + "/v1/objects/services",
                            json={"filter": "host.name == h", "filter_vars": {"h": HOST},
                                  "attrs": ["__name", "vars"]}, timeout=10)
        r.raise_for_status()
        return {o["name"]: o["attrs"] for o in r.json()["results"]}

    def commands(self):
        r = self.reader.get(self.url + "/v1/objects/checkcommands",
                            json={"attrs": ["name", "vars"]}, timeout=10)
        r.raise_for_status()
        return {o["attrs"]["name"] for o in r.json()["results"]
                if (o["attrs"]["vars"] or {}).get("managed_by") == "mailstore"}


@pytest.fixture(scope="module")
def master(tmp_path_factory):
    if shutil.which("icinga2") is None:
        # under CI a failure (tests/conftest.py); tests/setup installs it
        pytest.skip("icinga2 is not installed (tests/packages lists it)")
    # the free port may be taken between choosing and binding it: then try another one
    for attempt in range(3):
        m = Master(str(tmp_path_factory.mktemp("icinga2")))
        try:
            m.start()
            break
        except RuntimeError:
            m.stop()
            if attempt == 2:
                raise
    try:
        yield m
    finally:
        m.stop()


def description(tmp_path, services, endpoint=HOST, name="desc.json", **extra):
    data = dict({"host": HOST, "command_endpoint": endpoint, "mailstore": MAILSTORE,
                 "command_zone": "global-templates", "service_zone": "master",
                 "services": services}, **extra)
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def register(master, desc, *more, user="register", ca=None):
    return cli("icinga", "register", "--url", master.url, "--ca", ca or master.ca_file,
               "--credentials", master.credentials[user], "--description", desc, "--json",
               *more)


VOLUME = {"name": "mailstore-volume", "check": "volume", "args": ["/srv/mail", "-w", "15:"],
          "check_interval": 300, "display_name": "Mail volume"}
CERT = {"name": "mailstore-cert-community", "check": "cert",
        "args": ["/etc/ssl/public/community.cacert.org.chain.pem"]}
BACKUP = {"name": "mailstore-backup", "passive": True, "freshness": 93600}


def test_register_creates_commands_and_services(master, tmp_path):
    result = register(master, description(tmp_path, [VOLUME, CERT, BACKUP]))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    created = {(o["type"], o["name"]) for o in summary["created"]}
    assert created == {("CheckCommand", "mailstore-volume"), ("CheckCommand", "mailstore-cert"),
                       ("Service", HOST + "!mailstore-volume"),
                       ("Service", HOST + "!mailstore-cert-community"),
                       ("Service", HOST + "!mailstore-backup")}
    cmd = master.obj("checkcommands", "mailstore-volume")
    assert cmd["command"] == [MAILSTORE, "check", "volume"]
    assert cmd["zone"] == "global-templates" and cmd["vars"]["managed_by"] == "mailstore"
    svc = master.obj("services", HOST + "!mailstore-volume")
    assert svc["command_endpoint"] == HOST and svc["check_command"] == "mailstore-volume"
    assert svc["vars"]["mailstore_args"] == ["/srv/mail", "-w", "15:"]
    assert svc["check_interval"] == 300 and svc["display_name"] == "Mail volume"
    assert svc["zone"] == "master"
    passive = master.obj("services", HOST + "!mailstore-backup")
    assert passive["check_command"] == "dummy" and passive["command_endpoint"] == ""
    assert passive["check_interval"] == 93600 and passive["vars"]["dummy_state"] == 2
    # waiting for its first push: UNKNOWN now, the freshness check a full period away
    assert passive["state"] == 3 and "waiting for the first" in \
        passive["last_check_result"]["output"]
    assert passive["next_check"] > time.time() + 93600 - 120


def test_rerun_changes_nothing(master, tmp_path):
    desc = description(tmp_path, [VOLUME, CERT, BACKUP])
    before = {n: master.obj("services", HOST + "!" + n, ["version", "original_attributes"])
              for n in ("mailstore-volume", "mailstore-backup")}
    summary = json.loads(register(master, desc).output)
    assert not (summary["created"] or summary["updated"] or summary["recreated"]
                or summary["deleted"] or summary["stale"])
    assert len(summary["unchanged"]) == 5
    after = {n: master.obj("services", HOST + "!" + n, ["version", "original_attributes"])
             for n in before}
    assert after == before


def test_changed_description_updates_in_place(master, tmp_path):
    volume = dict(VOLUME, args=["/srv/mail", "-w", "20:", "-c", "10:"], check_interval=120)
    summary = json.loads(register(master, description(tmp_path, [volume, CERT, BACKUP])).output)
    assert [o["name"] for o in summary["updated"]] == [HOST + "!mailstore-volume"]
    assert set(summary["updated"][0]["changes"]) == {"check_interval", "vars"}
    svc = master.obj("services", HOST + "!mailstore-volume")
    assert svc["check_interval"] == 120
    assert svc["vars"]["mailstore_args"] == ["/srv/mail", "-w", "20:", "-c", "10:"]
    # and the new state is the new "nothing to do"
    again = json.loads(register(master, description(tmp_path, [volume, CERT, BACKUP])).output)
    assert not again["updated"] and len(again["unchanged"]) == 5


def test_prune_deletes_only_what_it_created_and_no_longer_declares(master, tmp_path):
    desc = description(tmp_path, [VOLUME, BACKUP])
    summary = json.loads(register(master, desc).output)
    assert {o["name"] for o in summary["stale"]} == {HOST + "!mailstore-cert-community",
                                                     "mailstore-cert"}
    assert HOST + "!mailstore-cert-community" in master.services()       # not without --prune
    summary = json.loads(register(master, desc, "--prune").output)
    assert {o["name"] for o in summary["deleted"]} == {HOST + "!mailstore-cert-community",
                                                       "mailstore-cert"}
    services = master.services()
    assert HOST + "!mailstore-cert-community" not in services
    assert HOST + "!ping" in services                                    # from the config
    assert master.commands() == {"mailstore-volume"}
    assert master.obj("checkcommands", "dummy") is not None              # ITL untouched


def test_an_object_that_is_not_ours_is_refused(master, tmp_path):
    result = register(master, description(tmp_path, [VOLUME, BACKUP,
                                                     {"name": "ping", "check": "mailq"}]))
    assert result.exit_code == 1
    assert "'%s!ping' exists on the master but was not created by mailstore" % HOST \
        in result.output
    assert master.obj("services", HOST + "!ping")["check_command"] == "dummy"


def test_push_submits_state_output_and_perfdata(master, tmp_path):
    result = cli("icinga", "push", "--url", master.url, "--ca", master.ca_file,
                 "--credentials", master.credentials["push"], "--host", HOST,
                 "--service", "mailstore-backup", "--json", "--",
                 "volume", str(tmp_path), "-w", "100.5:", "-c", "0:")
    assert result.exit_code == 0, result.output
    pushed = json.loads(result.output)
    assert pushed["exit_status"] == 1 and pushed["output"].startswith("VOLUME WARNING - ")
    svc = master.obj("services", HOST + "!mailstore-backup")
    assert svc["state"] == 1
    cr = svc["last_check_result"]
    assert cr["output"] == pushed["output"] and cr["active"] is False
    labels = {p.split("=")[0] for p in cr["performance_data"]}
    assert {"space_free_pct", "space_free", "inodes_free_pct", "inodes_free"} <= labels
    assert any(p.startswith("space_free_pct=") and p.endswith(";100.5:;;0;100")
               for p in cr["performance_data"])
    # a pushed result moves the freshness check a full period ahead
    assert svc["next_check"] > time.time() + 93600 - 120


def test_push_of_a_failing_check_is_unknown_not_lost(master, tmp_path):
    result = cli("icinga", "push", "--url", master.url, "--ca", master.ca_file,
                 "--credentials", master.credentials["push"], "--host", HOST,
                 "--service", "mailstore-backup", "--", "backup", "--repo",
                 str(tmp_path / "no-repo"))
    assert result.exit_code == 0 and "submitted UNKNOWN" in result.output
    svc = master.obj("services", HOST + "!mailstore-backup")
    assert svc["state"] == 3 and "does not exist" in svc["last_check_result"]["output"]


def test_a_job_that_never_pushes_turns_critical(master, tmp_path):
    stale = {"name": "mailstore-never", "passive": True, "freshness": 2}
    assert register(master, description(tmp_path, [VOLUME, BACKUP, stale])).exit_code == 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        svc = master.obj("services", HOST + "!mailstore-never")
        if svc["state"] == 2:
            break
        time.sleep(0.5)
    assert svc["state"] == 2, svc["last_check_result"]
    assert "no result pushed" in svc["last_check_result"]["output"]


def test_the_registered_command_runs_the_plugin(master, tmp_path):
    # command_endpoint = the master's own endpoint: Icinga runs it locally, which proves the
    # CheckCommand's argument passing end to end (an agent does the same in the lab).
    local = {"name": "mailstore-volume-local", "check": "volume",
             "args": [str(tmp_path), "-w", "100.5:", "-c", "0:"], "check_interval": 1,
             "retry_interval": 1}
    desc = description(tmp_path, [VOLUME, BACKUP, local], name="local.json")
    data = json.load(open(desc))
    data["services"][0]["check"] = "volume"
    result = register(master, description(tmp_path, data["services"], endpoint=NODE,
                                          name="local2.json"))
    assert result.exit_code == 0, result.output
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        cr = master.obj("services", HOST + "!mailstore-volume-local")["last_check_result"]
        if cr and cr.get("active") and cr["output"].startswith("VOLUME"):
            break
        time.sleep(0.5)
    assert cr["state"] == 1, cr
    assert cr["output"].startswith("VOLUME WARNING - free space")
    assert any(p.startswith("space_free_pct=") for p in cr["performance_data"])


def test_wrong_password_is_a_clear_error(master, tmp_path):
    bad = tmp_path / "bad.credentials"
    bad.write_text("register:not-the-password\n")
    os.chmod(str(bad), 0o600)
    result = cli("icinga", "register", "--url", master.url, "--ca", master.ca_file,
                 "--credentials", bad, "--description", description(tmp_path, [VOLUME]))
    assert result.exit_code == 1
    assert "HTTP 401" in result.output and "Unauthorized" in result.output


def test_wrong_ca_is_a_clear_error(master, tmp_path):
    result = register(master, description(tmp_path, [VOLUME]), ca=master.wrong_ca_file)
    assert result.exit_code == 1
    assert "TLS verification of %s/ failed with CA %s" % (master.url, master.wrong_ca_file) \
        in result.output


def test_push_user_cannot_register(master, tmp_path):
    result = register(master, description(tmp_path, [VOLUME, BACKUP]), user="push")
    assert result.exit_code == 1
    assert "lacks objects/query/Host" in result.output


def test_push_to_an_unknown_service_names_it(master, tmp_path):
    result = cli("icinga", "push", "--url", master.url, "--ca", master.ca_file,
                 "--credentials", master.credentials["push"], "--host", HOST,
                 "--service", "nope", "--", "volume", str(tmp_path))
    assert result.exit_code == 1
    assert "submit check result for '%s!nope'" % HOST in result.output
    assert "HTTP 404" in result.output


def test_unknown_endpoint_is_named_in_the_error(master, tmp_path):
    odd = {"name": "mailstore-mailq", "check": "mailq"}
    result = register(master, description(tmp_path, [VOLUME, BACKUP, odd],
                                          endpoint="no-such-agent"))
    assert result.exit_code == 1
    assert "'%s!mailstore-mailq'" % HOST in result.output or \
        "'%s!mailstore-volume'" % HOST in result.output
    assert "no-such-agent" in result.output and "Endpoint" in result.output, result.output


def test_dry_run_changes_nothing(master, tmp_path):
    extra = {"name": "mailstore-maildir", "check": "maildir", "args": ["/srv/mail"]}
    summary = json.loads(register(master, description(tmp_path, [VOLUME, BACKUP, extra]),
                                  "--dry-run").output)
    assert summary["dry_run"] is True
    assert {o["name"] for o in summary["created"]} == {HOST + "!mailstore-maildir",
                                                       "mailstore-maildir"}
    assert master.obj("services", HOST + "!mailstore-maildir") is None
    assert master.obj("checkcommands", "mailstore-maildir") is None


def test_tls_name_verifies_the_node_name_instead_of_the_urls_host(master, tmp_path):
    """Icinga certificates name the node; the deploy connects to an address. --tls-name makes
    TLS check that name (and only that name) against the certificate."""
    address_url = master.url.replace("127.0.0.1", "localhost")
    desc = description(tmp_path, [VOLUME])
    ok = cli("icinga", "register", "--url", address_url, "--tls-name", NODE, "--ca",
             master.ca_file, "--credentials", master.credentials["register"], "--description",
             desc, "--dry-run")
    assert ok.exit_code == 0, ok.output
    wrong = cli("icinga", "register", "--url", master.url, "--tls-name", "other.example",
                "--ca", master.ca_file, "--credentials", master.credentials["register"],
                "--description", desc, "--dry-run")
    assert wrong.exit_code == 1
    assert "TLS verification" in wrong.output and "other.example" in wrong.output


def test_a_per_object_failure_of_the_real_api_is_reported(master):
    """What Icinga2 itself answers when one object cannot be changed or created (a code per
    object in `results`, whatever the HTTP status), and what mailstore makes of it."""
    from mailstore.icinga import Api, IcingaError
    api = Api(master.url, master.ca_file, "reader", master.passwords["reader"], timeout=20)
    with pytest.raises(IcingaError) as e:
        api.update("Service", HOST + "!ping", {"zone": "elsewhere"})
    # HTTP 200, {"results": [{"code": 500, "status": "Attribute 'zone' could not be set..."}]}
    assert str(e.value) == ("update Service '%s!ping': Attribute 'zone' could not be set: "
                            "Error: Attribute cannot be modified." % HOST)
    assert master.obj("services", HOST + "!ping")["zone"] != "elsewhere"
    with pytest.raises(IcingaError) as e:
        api.create("Service", HOST + "!broken", None,
                   {"check_command": "no-such-command", "enable_active_checks": False})
    assert str(e.value).startswith("create Service '%s!broken': " % HOST)
    # HTTP 500, the code 500 and "Object could not be created." per object, the reason in
    # its `errors`: mailstore names it
    assert "Object could not be created. Error: Validation failed for object" in str(e.value)
    assert "Object 'no-such-command' of type 'CheckCommand' does not exist." in str(e.value)
    assert HOST + "!broken" not in master.services()
