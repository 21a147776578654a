"""The self-service API in the container: from the lab's signed repository, running as its own
user, https on 9443 with the expected certificate, client certificates required, restarted
when its config or certificate changes.

The stand-in package (lab/selfservice_pkg) answers GET /health with its pid and the digest of
the config it loaded. Clients connect from the community address (lab: 10.0.3.3 on the
bridge), the only origin nftables admits to 9443, with the community host's certificate.
"""
import datetime
import hashlib
import http.client
import json
import socket
import ssl
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from lab import topology  # noqa: E402
from operations import lab_selfservice_repo  # noqa: E402

PORT = 9443
SERVICE = "cacert-selfservice-api"
API_NAME = topology.CERTIFICATE_NAMES["selfservice_api"]
SECRETS = REPO / ".lab" / "secrets"
CONFIG = "/etc/cacert-selfservice-api/config.yaml"


class _Connection(http.client.HTTPSConnection):
    """HTTPS to the container from a chosen source address, checking the API's name."""

    def __init__(self, address, source, context):
        super().__init__(address, PORT, context=context, timeout=10)
        self._source = source

    def connect(self):
        sock = socket.create_connection((self.host, self.port), self.timeout,
                                        source_address=(self._source, 0))
        self.sock = self._context.wrap_socket(sock, server_hostname=API_NAME)


def client_context(lab, cert=None, key=None):
    context = ssl.create_default_context(cafile=lab["ca_cert"])
    if cert:
        context.load_cert_chain(cert, key)
    return context


def health(lab, context, source=topology.COMMUNITY_ADDRESS):
    connection = _Connection(lab["address"], source, context)
    try:
        connection.request("GET", "/health")
        peer = x509.load_der_x509_certificate(connection.sock.getpeercert(binary_form=True))
        response = connection.getresponse()
        assert response.status == 200
        return json.loads(response.read()), peer
    finally:
        connection.close()


@pytest.fixture(scope="module")
def community_client(lab):
    return client_context(lab, SECRETS / "community.chain.pem", SECRETS / "community.key.pem")


def main_pid(ssh):
    return int(ssh(f"systemctl show -p MainPID --value {SERVICE}").stdout.strip())


def wait_for_health(lab, context, not_pid=None, timeout=30):
    deadline = time.time() + timeout
    while True:
        try:
            answer, _ = health(lab, context)
            if answer["pid"] != not_pid:
                return answer
        except (OSError, AssertionError):
            pass
        if time.time() > deadline:
            pytest.fail(f"the API did not answer (as a new process) within {timeout} s")
        time.sleep(1)


def test_package_comes_from_the_signed_lab_repository(deployed, ssh):
    policy = ssh(f"apt-cache policy {SERVICE}").stdout.splitlines()
    # " *** <installed version> <priority>" is followed by the sources of that version.
    star = next(i for i, line in enumerate(policy) if line.startswith(" *** "))
    origins = []
    for line in policy[star + 1:]:
        if not line.startswith("        "):
            break
        origins.append(line.split(None, 1)[1])
    assert "http://10.0.3.1:8080 lab/main amd64 Packages" in origins, policy
    sources = ssh(f"cat /etc/apt/sources.list.d/{SERVICE}.sources").stdout
    assert f"Signed-By: /etc/apt/keyrings/{SERVICE}.asc" in sources
    keyring = ssh(f"cat /etc/apt/keyrings/{SERVICE}.asc").stdout
    assert keyring == lab_selfservice_repo.PUBLIC_KEY.read_text()
    # apt trusts that repository only through the keyring: not through its global keyrings.
    listed = ssh("apt-key list 2>/dev/null; ls /etc/apt/trusted.gpg.d/", check=False).stdout
    assert "cacert-email lab apt repository" not in listed


def test_runs_as_its_own_user(deployed, ssh):
    assert ssh(f"systemctl is-active {SERVICE}").stdout.strip() == "active"
    assert ssh(f"systemctl is-enabled {SERVICE}").stdout.strip() == "enabled"
    user = ssh(f"ps -o user= -p {main_pid(ssh)}").stdout.strip()
    assert user == SERVICE
    # Its key is readable by its group and nobody else.
    mode = ssh("stat -c '%U:%G %a' /etc/cacert-selfservice-api/private/server.key.pem").stdout
    assert mode.split() == [f"root:{SERVICE}", "640"]


def test_https_with_the_expected_certificate(deployed, lab, community_client):
    answer, peer = health(lab, community_client)
    assert answer["status"] == "ok"
    assert answer["client"] == topology.CERTIFICATE_NAMES["community"]
    expected = x509.load_pem_x509_certificates(
        (SECRETS / "selfservice_api.chain.pem").read_bytes())[0]
    assert peer == expected
    assert peer.not_valid_after_utc > datetime.datetime.now(datetime.timezone.utc)


def _foreign_client(tmp_path):
    """A client certificate from a CA the API does not trust."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "intruder.example")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return tmp_path / "c.pem", tmp_path / "k.pem"


def test_clients_without_a_trusted_certificate_are_refused(deployed, lab, tmp_path):
    for context in (client_context(lab), client_context(lab, *_foreign_client(tmp_path))):
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
            health(lab, context)


def test_config_change_restarts_the_service(deployed, lab, ssh, run_deploy, community_client):
    """An edit on the server is a change the deploy reverts: config rewritten, service
    restarted (new pid), running the deployed config again."""
    before = wait_for_health(lab, community_client)
    deployed_digest = hashlib.sha256(ssh(f"cat {CONFIG}").stdout.encode()).hexdigest()
    assert before["config_sha256"] == deployed_digest
    ssh(f"echo '# local edit' >> {CONFIG} && systemctl restart {SERVICE}")
    edited = wait_for_health(lab, community_client, not_pid=before["pid"])
    assert edited["config_sha256"] != deployed_digest

    result = run_deploy()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    after = wait_for_health(lab, community_client, not_pid=edited["pid"])
    assert after["config_sha256"] == deployed_digest


def test_certificate_change_restarts_the_service(deployed, lab, ssh, run_deploy,
                                                 community_client):
    """A server certificate that differs from the secrets directory's is replaced by the
    deploy, and the service then serves the right one (certificates restart it)."""
    before = wait_for_health(lab, community_client)
    # Serve the community certificate instead (it verifies, but names the wrong host).
    ssh("cp /etc/ssl/public/community.cacert.org.chain.pem "
        "/etc/cacert-selfservice-api/certs/server.crt.pem && "
        f"cp /etc/ssl/private/community.cacert.org.key.pem "
        f"/etc/cacert-selfservice-api/private/server.key.pem && systemctl restart {SERVICE}")
    deadline = time.time() + 30
    while True:
        try:
            health(lab, community_client)
        except ssl.SSLCertVerificationError:
            break  # it is up, with the wrong certificate
        except ConnectionRefusedError:
            pass  # still starting
        else:
            pytest.fail("the API answered with a certificate that should not verify")
        if time.time() > deadline:
            pytest.fail("the API did not come back with the swapped certificate")
        time.sleep(1)

    result = run_deploy()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    after = wait_for_health(lab, community_client, not_pid=before["pid"])
    assert after["status"] == "ok"
