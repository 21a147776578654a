"""The status command's network checks against real servers on loopback.

The servers (tests/harness/loopback_servers.py) speak the first lines of SMTP, IMAP, POP3 and
ManageSieve and really switch to TLS with certificates from tests/harness/pki; Postfix and
Dovecot themselves are not run here (they need root, their packages and a full configuration),
the lab test tests/lab/test_status.py runs the command against them. Each failure must name
its check, so an operator reading one line knows which port and which property broke.
"""
import datetime
import socket

import pytest

from operations import network_checks, probes
from operations.check_result import FAIL, OK, SKIP, WARN
from tests.harness import DAY, NOW, PKI, write_pem
from tests.harness.loopback_servers import (MailServer, SilentServer, closed_port,
                                            tls_context)

HOST = "email.cacert.test"
NAMES = {"email": {"names": [HOST]}, "community": {"names": ["community.cacert.test"]}}
TIMEOUT = 2


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """Server contexts for valid, expired, wrong-name and near-expiry certificates, and the
    CA file (root) that verifies them; `stranger`: a valid one from another CA."""
    pki, other = PKI(), PKI()
    d = tmp_path_factory.mktemp("certs")

    def context(label, authority, names, **kwargs):
        cert, key = authority.leaf(names[0], names=names, **kwargs)
        return tls_context(write_pem(d / f"{label}.pem", cert, authority.inter),
                           write_pem(d / f"{label}.key", key))

    now = datetime.datetime.now(datetime.timezone.utc)
    return {
        "ca": write_pem(d / "ca.pem", pki.root),
        "valid": context("valid", pki, ["community.cacert.test"]),
        "email": context("email", pki, [HOST]),
        "expired": context("expired", pki, ["community.cacert.test"],
                           not_before=NOW - 30 * DAY, not_after=now - 2 * DAY),
        "wrong_name": context("wrong", pki, ["other.example"]),
        "soon": context("soon", pki, ["community.cacert.test"], not_after=now + 10 * DAY),
        "stranger": context("stranger", other, ["community.cacert.test"]),
    }


def cert_results(server, name, certs, warn_days=30):
    ports = {name: {"port": server.port, "from": "any"}}
    return network_checks.certificate_checks(ports, NAMES, [], "127.0.0.1", warn_days,
                                             TIMEOUT, ca_file=certs["ca"])


@pytest.mark.parametrize("protocol,name", [("tls", "imaps"), ("smtp", "submission"),
                                           ("imap", "imap"), ("pop3", "pop3"),
                                           ("sieve", "sieve")])
def test_a_valid_certificate_passes_on_implicit_tls_and_every_starttls(certs, protocol, name):
    with MailServer(protocol, certs["valid"]) as server:
        [result] = cert_results(server, name, certs)
    assert result.status == OK, result
    assert result.check == f"cert {name}/{server.port}"
    assert "community.cacert.test, verified" in result.detail


def test_the_smtp_port_must_serve_the_email_certificate(certs):
    with MailServer("smtp", certs["email"]) as server:
        [result] = cert_results(server, "smtp", certs)
    assert result.status == OK, result
    with MailServer("smtp", certs["valid"]) as server:
        [result] = cert_results(server, "smtp", certs)
    assert (result.status, result.check) == (FAIL, f"cert smtp/{server.port}")
    assert "does not cover email.cacert.test" in result.detail


def test_an_expired_certificate_fails_saying_expired(certs):
    with MailServer("tls", certs["expired"]) as server:
        [result] = cert_results(server, "pop3s", certs)
    assert (result.status, result.check) == (FAIL, f"cert pop3s/{server.port}")
    assert "expired" in result.detail and "2 days ago" in result.detail


def test_a_certificate_for_another_name_fails(certs):
    with MailServer("imap", certs["wrong_name"]) as server:
        [result] = cert_results(server, "imap", certs)
    assert result.status == FAIL
    assert "does not cover community.cacert.test (names: other.example)" in result.detail


def test_a_certificate_from_another_ca_fails_its_chain(certs):
    with MailServer("tls", certs["stranger"]) as server:
        [result] = cert_results(server, "https", certs)
    assert (result.status, result.check) == (FAIL, f"cert https/{server.port}")
    assert "chain does not verify" in result.detail


def test_a_certificate_near_its_end_warns(certs):
    with MailServer("tls", certs["soon"]) as server:
        [result] = cert_results(server, "smtps", certs, warn_days=30)
        [later] = cert_results(server, "smtps", certs, warn_days=5)
    assert result.status == WARN and "fewer than certificate_warn_days (30)" in result.detail
    assert later.status == OK


def test_no_tls_at_all_fails_the_certificate_check(certs):
    with MailServer("smtp", certs["valid"], starttls=False) as server:
        [result] = cert_results(server, "submission", certs)
    assert (result.status, result.check) == (FAIL, f"cert submission/{server.port}")
    assert "no TLS session" in result.detail


def test_a_server_that_never_answers_fails_within_the_timeout(certs):
    with SilentServer() as server:
        started = datetime.datetime.now()
        [result] = network_checks.protocol_checks(
            {"imap": {"port": server.port, "from": "any"}}, [], "127.0.0.1", HOST, 0.5)
        elapsed = (datetime.datetime.now() - started).total_seconds()
    assert (result.status, result.check) == (FAIL, f"greeting imap/{server.port}")
    assert "no answer within 0.5s" in result.detail
    assert elapsed < 5


def greeting_results(server, name, hostname=HOST):
    return {r.check.rsplit("/", 1)[0]: r for r in network_checks.protocol_checks(
        {name: {"port": server.port, "from": "any"}}, [], "127.0.0.1", hostname, TIMEOUT)}


def test_a_good_smtp_dialogue_passes_every_check(certs):
    with MailServer("smtp", certs["valid"], capabilities=["PIPELINING", "SIZE 10240000"]) \
            as server:
        results = greeting_results(server, "submission")
    assert {c: r.status for c, r in results.items()} == {
        "starttls submission": OK, "no login before TLS submission": OK,
        "smtp banner submission": OK, "smtp ehlo name submission": OK}


def test_smtp_failures_are_named(certs):
    with MailServer("smtp", certs["valid"], name="localhost.localdomain",
                    capabilities=["AUTH PLAIN LOGIN"], starttls=False) as server:
        results = greeting_results(server, "submission")
    assert {c: r.status for c, r in results.items()} == {
        "starttls submission": FAIL, "no login before TLS submission": FAIL,
        "smtp banner submission": FAIL, "smtp ehlo name submission": FAIL}
    no_login = results["no login before TLS submission"]
    assert "offered without TLS: AUTH PLAIN LOGIN" in no_login.detail
    assert "expected email.cacert.test" in results["smtp banner submission"].detail


@pytest.mark.parametrize("protocol,good,bad,offered", [
    ("imap", ["LOGINDISABLED"], ["AUTH=PLAIN"], "AUTH=PLAIN, LOGIN"),
    ("pop3", ["PIPELINING"], ["USER", "SASL PLAIN"], "USER, SASL PLAIN"),
    ("sieve", ['"SASL" ""'], ['"SASL" "PLAIN"'], '"SASL" "PLAIN"'),
])
def test_login_before_tls_fails_on_imap_pop3_and_sieve(certs, protocol, good, bad, offered):
    with MailServer(protocol, certs["valid"], capabilities=good) as server:
        ok = greeting_results(server, protocol)
    with MailServer(protocol, certs["valid"], capabilities=bad) as server:
        failed = greeting_results(server, protocol)
    assert ok[f"no login before TLS {protocol}"].status == OK
    result = failed[f"no login before TLS {protocol}"]
    assert result.status == FAIL and result.detail == f"offered without TLS: {offered}"
    if protocol != "sieve":   # port 4190 need not offer STARTTLS by the contract
        assert ok[f"starttls {protocol}"].status == OK


def test_ports_answer_where_they_must_and_are_refused_elsewhere(certs):
    closed = closed_port()
    with MailServer("tls", certs["valid"]) as open_server:
        ports = {"smtp": {"port": closed, "from": "any"},
                 "mariadb": {"port": open_server.port, "from": "local"},
                 "https": {"port": open_server.port, "from": "any"},
                 "icinga2": {"port": closed, "from": "monitor"}}
        results = {r.check: r for r in network_checks.port_checks(
            ports, {"monitor": ["192.0.2.1"]}, "127.0.0.1", TIMEOUT)}
    assert results[f"port https/{open_server.port}"].status == OK
    smtp = results[f"port smtp/{closed}"]
    assert smtp.status == FAIL and "connection refused" in smtp.detail
    mariadb = results[f"port mariadb/{open_server.port}"]
    assert mariadb.status == FAIL and "only local may connect" in mariadb.detail
    assert results[f"port icinga2/{closed}"].status == OK
    skipped = results[f"port icinga2/{closed} answers monitor"]
    assert skipped.status == SKIP and "not a monitor address" in skipped.detail


def test_from_a_trusted_address_its_port_must_answer():
    closed = closed_port()
    results = {r.check: r for r in network_checks.port_checks(
        {"icinga2": {"port": closed, "from": "monitor"}}, {"monitor": ["127.0.0.0/8"]},
        "127.0.0.1", TIMEOUT, source="127.0.0.1")}
    assert results[f"port icinga2/{closed}"].status == FAIL
    assert "must answer from 127.0.0.1 (monitor)" in results[f"port icinga2/{closed}"].detail
    skipped = results[f"port icinga2/{closed} refused from others"]
    assert skipped.status == SKIP and "it is a monitor address" in skipped.detail


def test_name_matching_follows_rfc_6125():
    assert network_checks.name_matches("*.cacert.test", "email.cacert.test")
    assert not network_checks.name_matches("*.cacert.test", "a.b.cacert.test")
    assert network_checks.name_matches("Email.CAcert.test", "email.cacert.test")
    assert not network_checks.name_matches("cacert.test", "email.cacert.test")



def test_a_connection_lost_once_is_tried_again_and_one_lost_twice_fails(monkeypatch):
    """A real listener whose accept queue is full: Linux drops the SYNs, as a lost packet or a
    filtering firewall would. Once the queue is drained after the first attempt, the second
    connects; never drained, both attempts time out."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        assert probes.reachability("127.0.0.1", port, 0.5, attempts=1) == (
            "timeout", "no answer within 0.5s")
        assert probes.reachability("127.0.0.1", port, 0.5) == (
            "timeout", "no answer within 0.5s (2 attempts)")

        real_connect, calls = probes.connect, []

        def connect_then_drain(*args, **kwargs):
            calls.append(args)
            try:
                return real_connect(*args, **kwargs)
            finally:
                if len(calls) == 1:     # the first attempt is over: make room
                    server.setblocking(False)
                    for _ in fillers:
                        try:
                            server.accept()[0].close()
                        except BlockingIOError:
                            break
        monkeypatch.setattr(probes, "connect", connect_then_drain)
        assert probes.reachability("127.0.0.1", port, 0.5)[0] == "open"
        assert len(calls) == 2
    finally:
        for filler in fillers:
            filler.close()
        server.close()
