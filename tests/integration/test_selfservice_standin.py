"""The lab's stand-in self-service API (lab/selfservice_pkg) on loopback: it reads the
config.yaml the deploy renders, serves its certificate, demands a client certificate from the
configured CA and honours the CRL when the file exists."""
import datetime
import http.client
import json
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import jinja2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from lab import ca  # noqa: E402

SERVER = REPO / "lab/selfservice_pkg/usr/lib/cacert-selfservice-api/server.py"
NAME = "email.infra.cacert.test"


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def pki(tmp_path):
    root_key, root = ca.make_root()
    server_key, server = ca.make_server(root_key, root, [NAME])
    client_key, client = ca.make_server(root_key, root, ["community.cacert.test"])
    other_key, other = ca.make_server(root_key, root, ["other.cacert.test"])
    files = {"ca": root, "server": server, "client": client, "other": other}
    for name, cert in files.items():
        (tmp_path / f"{name}.pem").write_bytes(ca.cert_pem(cert))
    for name, key in (("server", server_key), ("client", client_key), ("other", other_key)):
        (tmp_path / f"{name}.key").write_bytes(ca.key_pem(key))
    return {"dir": tmp_path, "root": root, "root_key": root_key, "client": client}


def _render_config(pki, port):
    """config.yaml exactly as files/selfservice_api/config.yaml.j2 makes it."""
    template = (REPO / "files/selfservice_api/config.yaml.j2").read_text()
    d = pki["dir"]
    return jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(template).render(
        listen="127.0.0.1", port=port, names=[NAME], certificate=d / "server.pem",
        private_key=d / "server.key", client_ca=d / "ca.pem", crl=d / "crl.pem",
        database="cacertusers", mail_domain="cacert.test")


@pytest.fixture
def server(pki):
    port = _free_port()
    config = pki["dir"] / "config.yaml"
    config.write_text(_render_config(pki, port))

    def start():
        process = subprocess.Popen([sys.executable, str(SERVER), str(config)],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                return process
            except OSError:
                time.sleep(0.1)
        process.kill()
        pytest.fail(f"the stand-in did not listen: {process.communicate()[0]!r}")

    processes = [start()]
    yield {"port": port, "restart": lambda: (processes[-1].terminate(), processes[-1].wait(),
                                             processes.append(start()))}
    for process in processes:
        process.kill()
        process.wait()


def _get(pki, port, client="client"):
    context = ssl.create_default_context(cafile=str(pki["dir"] / "ca.pem"))
    if client:
        context.load_cert_chain(pki["dir"] / f"{client}.pem", pki["dir"] / f"{client}.key")
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
    # The certificate names the API host, not 127.0.0.1: check that name.
    sock = socket.create_connection(("127.0.0.1", port), 5)
    connection.sock = context.wrap_socket(sock, server_hostname=NAME)
    connection.request("GET", "/health")
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def test_health_names_the_client(pki, server):
    status, answer = _get(pki, server["port"])
    assert status == 200
    assert answer["status"] == "ok" and answer["client"] == "community.cacert.test"


def test_client_without_certificate_is_refused(pki, server):
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        _get(pki, server["port"], client=None)


def test_revoked_client_is_refused_once_the_crl_exists(pki, server):
    now = datetime.datetime.now(datetime.timezone.utc)
    crl = (x509.CertificateRevocationListBuilder()
           .issuer_name(pki["root"].subject).last_update(now)
           .next_update(now + datetime.timedelta(days=1))
           .add_revoked_certificate(x509.RevokedCertificateBuilder()
                                    .serial_number(pki["client"].serial_number)
                                    .revocation_date(now).build())
           .sign(pki["root_key"], hashes.SHA256()))
    (pki["dir"] / "crl.pem").write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    server["restart"]()
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        _get(pki, server["port"])
    # The CRL is in force, not a broken server: a certificate not on it still gets in.
    assert _get(pki, server["port"], client="other")[1]["client"] == "other.cacert.test"
