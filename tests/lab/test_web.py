"""nginx (operations/nginx.py) with real https and http clients."""
import socket
import ssl

import pytest


@pytest.fixture(scope="module")
def community(lab):
    return lab["hostnames"]["community"]


def _get(sock, host, path):
    """Status code, headers (lower-case names) and body of one HTTP/1.1 GET over `sock`."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("iso-8859-1").split("\r\n")
    headers = dict((k.strip().lower(), v.strip()) for k, _, v in
                   (line.partition(":") for line in lines[1:]))
    return int(lines[0].split()[1]), headers, body.decode(errors="replace")


def test_https_serves_the_community_certificate_verified_by_the_lab_ca(lab, community):
    context = ssl.create_default_context(cafile=lab["ca_cert"])
    raw = socket.create_connection((lab["address"], lab["ports"]["https"]), timeout=10)
    # The handshake fails unless the chain verifies against the lab CA and names `community`.
    with context.wrap_socket(raw, server_hostname=community) as tls:
        cert = tls.getpeercert()
        status, headers, body = _get(tls, community, "/")
    assert ("DNS", community) in cert["subjectAltName"]
    assert status == 200 and community in body
    assert "strict-transport-security" in headers


def test_http_redirects_permanently_to_https_keeping_path_and_query(lab, community):
    with socket.create_connection((lab["address"], lab["ports"]["http"]), timeout=10) as sock:
        status, headers, _ = _get(sock, community, "/some/path?x=1")
    assert status == 301
    assert headers["location"] == f"https://{community}/some/path?x=1"


def test_nginx_runs_the_validated_config(ssh):
    assert ssh("systemctl is-active nginx").stdout.strip() == "active"
    ssh("nginx -t -q")


def test_a_config_nginx_rejects_never_goes_live(ssh, tmp_path):
    from operations import nginx
    from tests.lab.broken_config import deploy_broken

    before = ssh(f"sha1sum {nginx.CONFIG}").stdout
    result = deploy_broken(tmp_path, nginx.CONFIG, "http { listen nowhere; }\n", nginx.STAGE,
                           nginx.CHECK)
    assert result.returncode != 0
    assert "test failed" in result.stdout + result.stderr  # nginx -t said why
    assert ssh(f"sha1sum {nginx.CONFIG}").stdout == before
    assert ssh("systemctl is-active nginx").stdout.strip() == "active"
