"""Port origins (operations/firewall.py) seen from the network, with real clients.

A stranger (a test-made network namespace, neither monitor nor community) is refused on 5665
(Icinga2) and 9443 (self-service API) while the public ports answer; the monitor address
(10.0.3.2 on the lab host) reaches 5665, the community address (10.0.3.3) reaches 9443.

A refusal only proves the firewall if something listens behind it: when the Icinga2 agent or
the self-service API is not (yet) listening, the test starts its own small listener in the
container on that port for its duration and stops it afterwards.
"""
import socket

import pytest

from tests.lab.netns import client

STRANGER = "10.0.3.202"
MONITOR = "10.0.3.2"
COMMUNITY = "10.0.3.3"

_LISTENER = ("nohup timeout 300 python3 -c 'import socket\n"
             "s = socket.create_server((\"\", {port}))\n"
             "while True: s.accept()[0].close()' >/dev/null 2>&1 & echo $!")


@pytest.fixture(scope="module")
def listeners(ssh):
    """Make sure 5665 and 9443 have a listener in the container; stop the ones we started."""
    started = []
    for port in (5665, 9443):
        if not ssh(f"ss -Hltn 'sport = :{port}'").stdout.strip():
            started.append(ssh(_LISTENER.format(port=port)).stdout.strip())
    ssh("for i in $(seq 50); do [ $(ss -Hltn 'sport = :5665 or sport = :9443' | wc -l) -ge 2 ]"
        " && exit 0; sleep 0.1; done; exit 1")
    yield
    for pid in started:
        ssh(f"kill {pid}", check=False)


@pytest.fixture(scope="module")
def stranger():
    with client("cl-fw", STRANGER) as ns:
        yield ns


def _connect_from(source, address, port, timeout=5, attempts=3):
    """True once a TCP connection from `source` is accepted; a refusal raises at once.

    A timeout is retried: the container may still hold a failed ARP entry for an address the
    lab host (re)added to the bridge a moment ago.
    """
    for attempt in range(attempts):
        try:
            with socket.create_connection((address, port), timeout=timeout,
                                          source_address=(source, 0)):
                return True
        except TimeoutError:
            if attempt == attempts - 1:
                raise


def test_ruleset_is_loaded(ssh):
    table = ssh("nft list table inet cacert_email").stdout
    assert "policy drop" in table and "tcp dport 5665" in table


def test_stranger_is_refused_on_icinga_and_selfservice_ports(lab, listeners, stranger):
    for port in (5665, 9443):
        assert stranger.probe(lab["address"], port) == "refused", port


def test_stranger_is_refused_on_mariadb(lab, stranger):
    assert stranger.probe(lab["address"], 3306) == "refused"


def test_stranger_reaches_the_public_ports(lab, stranger):
    assert stranger.probe(lab["address"], 25, banner=True).startswith("open 220 ")
    assert stranger.probe(lab["address"], 993) == "open"
    assert stranger.probe(lab["address"], 443) == "open"


def test_monitor_reaches_icinga_but_not_the_selfservice_api(lab, listeners):
    assert _connect_from(MONITOR, lab["address"], 5665)
    with pytest.raises(ConnectionRefusedError):
        _connect_from(MONITOR, lab["address"], 9443)


def test_community_reaches_the_selfservice_api_but_not_icinga(lab, listeners):
    assert _connect_from(COMMUNITY, lab["address"], 9443)
    with pytest.raises(ConnectionRefusedError):
        _connect_from(COMMUNITY, lab["address"], 5665)


def test_a_ruleset_nft_rejects_never_goes_live(ssh, tmp_path):
    from operations import firewall
    from tests.lab.broken_config import deploy_broken

    before = ssh(f"sha1sum {firewall.CONFIG}").stdout
    result = deploy_broken(tmp_path, firewall.CONFIG,
                           "table inet cacert_email { chain input { tcp dport 22 acept } }\n",
                           firewall.STAGE, firewall.CHECK)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "nftables.conf:1" in output and "syntax error" in output
    assert ssh(f"sha1sum {firewall.CONFIG}").stdout == before
    assert "tcp dport 5665" in ssh(f"nft list table {firewall.TABLE}").stdout
