"""CRL checking in the lab: a client certificate of the lab CA is accepted by the self-service
API; once it is revoked (a new CRL on the lab host) and the refresh job has run in the
container (the command its timer starts), the API refuses it and `mailstore check cert --crl`
says CRITICAL. A refresh that keeps failing turns the master's `mailstore-crl` service
CRITICAL. A clean CRL is restored afterwards."""
import http.client
import ssl
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from mailclients import wait_for

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from lab import ca, lock  # noqa: E402
from operations import crl  # noqa: E402
from test_monitoring import wait_for_result  # noqa: E402
from test_selfservice_api import SECRETS, client_context, health  # noqa: E402

REFRESH = f"systemctl start {crl.UNIT}.service"  # what cacert-crl-refresh.timer starts
SOURCES = crl.SOURCES
SERVICE = "cacert-selfservice-api"


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """A client certificate from the lab's intermediate CA: (serial, chain file, key file)."""
    lab_ca = REPO / ".lab" / "ca"
    inter_key = serialization.load_pem_private_key(
        (lab_ca / "intermediate.key.pem").read_bytes(), None)
    inter = x509.load_pem_x509_certificate((lab_ca / "intermediate.pem").read_bytes())
    key, cert = ca.make_server(inter_key, inter, ["crl-test.cacert.test"])
    directory = tmp_path_factory.mktemp("crl-client")
    chain, private = directory / "chain.pem", directory / "key.pem"
    chain.write_bytes(ca.cert_pem(cert) + ca.cert_pem(inter))
    private.write_bytes(ca.key_pem(key))
    return cert.serial_number, chain, private


def main_pid(ssh):
    return ssh(f"systemctl show -p MainPID --value {SERVICE}").stdout.strip()


def answers(lab, context):
    try:
        return health(lab, context)[0]
    except (OSError, AssertionError, http.client.HTTPException):
        return None


def check_cert(ssh, chain):
    ssh("cat > /tmp/crl-test.chain.pem", input=chain.read_text())
    return ssh(f"mailstore check cert /tmp/crl-test.chain.pem "
               f"--crl {SOURCES}/intermediate.crl.pem", check=False)


@pytest.fixture
def clean_crl_afterwards(ssh, lab):
    yield
    crl.publish_lab_crls()
    ssh(REFRESH)
    community = client_context(lab, SECRETS / "community.chain.pem",
                               SECRETS / "community.key.pem")
    wait_for(lambda: answers(lab, community), timeout=30, what="the API after the clean CRL")


def test_revoked_client_is_refused_and_check_cert_is_critical(deployed, lab, ssh, client,
                                                              clean_crl_afterwards):
    serial, chain, key = client
    context = client_context(lab, chain, key)
    community = client_context(lab, SECRETS / "community.chain.pem",
                               SECRETS / "community.key.pem")
    # Before: the CRL in force (a clean one, installed by the deploy) lets the client in.
    crl.publish_lab_crls()
    ssh(REFRESH)
    answer = wait_for(lambda: answers(lab, context), timeout=30, what="the API to accept")
    assert answer["client"] == "crl-test.cacert.test"
    ok = check_cert(ssh, chain)
    assert ok.returncode == 0, ok.stdout + ok.stderr

    old_pid = main_pid(ssh)
    # Under the lab lock: a lab host deploy in between would put a clean CRL back.
    with lock.held():
        crl.publish_lab_crls(revoked=[serial])
        ssh(REFRESH)
    # The refresh replaced the bundle and restarted the API (it reads the CRL at start only).
    bundle = ssh(f"openssl crl -in {SOURCES}/intermediate.crl.pem -noout -text").stdout
    assert f"{serial:X}"[-8:] in bundle.replace(":", "").upper()
    wait_for(lambda: main_pid(ssh) not in ("0", "", old_pid), timeout=30,
             what="the API restarted by the refresh")
    wait_for(lambda: answers(lab, community), timeout=30, what="the API back, for others")
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        health(lab, context)

    critical = check_cert(ssh, chain)
    assert critical.returncode == 2, critical.stdout + critical.stderr
    assert "CRITICAL" in critical.stdout.split("|")[0]
    assert "revoked" in critical.stdout.lower()


def test_a_crl_from_a_foreign_signer_is_not_installed(deployed, lab, ssh, clean_crl_afterwards):
    before = ssh(f"sha256sum {SOURCES}/intermediate.crl.pem").stdout
    other_key, _ = ca.make_root()
    inter = x509.load_pem_x509_certificate((REPO / ".lab/ca/intermediate.pem").read_bytes())
    forged = ca.make_crl(other_key, inter, [1234])
    target = crl.LAB_CRL_DIR / "intermediate.crl"
    tmp = target.with_name(".forged.tmp")
    tmp.write_bytes(forged.public_bytes(serialization.Encoding.DER))
    tmp.replace(target)
    result = ssh(REFRESH, check=False)
    assert result.returncode != 0
    log = ssh(f"journalctl -u {crl.UNIT}.service -n 5 --no-pager").stdout
    assert "signature not verified" in log
    assert ssh(f"sha256sum {SOURCES}/intermediate.crl.pem").stdout == before


def test_a_refresh_failing_for_a_day_turns_the_crl_service_critical(deployed, lab, ssh,
                                                                     clean_crl_afterwards):
    target = crl.LAB_CRL_DIR / "intermediate.crl"
    with lock.held():   # a lab host deploy in between would publish the CRL again
        target.unlink()                         # the CRL server answers 404 from now on
        result = ssh(REFRESH, check=False)
        assert result.returncode != 0
        log = ssh(f"journalctl -u {crl.UNIT}.service -n 5 --no-pager").stdout
        assert "download failed" in log
        # A day of failed hourly runs leaves exactly this: no CRL file rewritten since.
        ssh(f"touch -d '25 hours ago' {SOURCES}/*.pem")
    since = time.time()
    attrs = wait_for_result("mailstore-crl", since, lambda a: a["state"] != 0)
    output = attrs["last_check_result"]["output"]
    assert attrs["state"] == 2 and output.startswith("CRL CRITICAL"), output
    assert "last successful refresh" in output
