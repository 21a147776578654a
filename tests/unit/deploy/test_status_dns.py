"""The status command's DNS checks against a real name server on loopback (a UDP server built
with dnspython: tests/harness/loopback_servers.py). The expected records are dns_report's own
lines, so a record dns_report adds is checked without a change here."""
import pytest

from operations import dns_checks, dns_report
from operations.check_result import FAIL, OK, SKIP
from tests.harness.loopback_servers import DnsServer

ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx2Ibl1GuqJY8IoVbrTWQNt3pfHdyyS8Ik4yt5pqzD8"
DATA = {"mail_domain": "cacert.test", "relayhost": None,
        "hostnames": {"email": "email.cacert.test", "community": "community.cacert.test"}}
STATE = {"public_keys": [ED25519], "addresses": ["10.0.3.19"], "dkim": {}}
LINES = dns_report.report(DATA, STATE)


def published(skip=()):
    """The zone as the report says it must be, less the (name, type, value) in `skip`."""
    zone = {}
    for name, rtype, value in dns_checks.expected_records(LINES):
        if (name, rtype, value) not in skip:
            zone.setdefault((name, rtype), []).append(value)
    return zone


def run(zone, unpublished=()):
    server = DnsServer(zone)
    try:
        lookup = dns_checks.resolver("127.0.0.1", 2, port=server.port)
        return dns_checks.dns_checks(LINES, lookup, unpublished)
    finally:
        server.close()


def test_every_record_the_report_names_passes_when_published():
    results = run(published())
    assert [r.status for r in results] == [OK] * len(dns_checks.expected_records(LINES))
    checks = {r.check for r in results}
    assert {"dns A email.cacert.test.", "dns MX cacert.test.", "dns SPF cacert.test.",
            "dns TLSRPT _smtp._tls.cacert.test.", "dns SSHFP email.cacert.test. 4 2"} <= checks


def test_a_missing_record_is_one_fail_naming_it():
    mx = next(r for r in dns_checks.expected_records(LINES) if r[1] == "MX")
    results = run(published(skip=[mx]))
    failed = [r for r in results if r.status == FAIL]
    assert [r.check for r in failed] == ["dns MX cacert.test."]
    assert "missing: no MX record" in failed[0].detail


def test_a_missing_name_and_a_different_value_fail():
    zone = published()
    del zone["_smtp._tls.cacert.test.", "TXT"]
    zone["email.cacert.test.", "A"] = ["10.0.3.99"]
    failed = {r.check: r.detail for r in run(zone) if r.status == FAIL}
    assert set(failed) == {"dns TLSRPT _smtp._tls.cacert.test.", "dns A email.cacert.test."}
    assert "NXDOMAIN" in failed["dns TLSRPT _smtp._tls.cacert.test."]
    assert "different: published 10.0.3.99 (expected 10.0.3.19)" in \
        failed["dns A email.cacert.test."]


def test_txt_split_differently_is_the_same_record():
    zone = published()
    spf = zone["cacert.test.", "TXT"][0]
    zone["cacert.test.", "TXT"] = [spf[:10] + '" "' + spf[10:]]
    assert all(r.status == OK for r in run(zone))


def test_unpublished_kinds_are_one_skip_each():
    zone = {k: v for k, v in published().items() if k[1] != "SSHFP"}
    results = run(zone, unpublished=["SSHFP"])
    skipped = [r for r in results if r.status == SKIP]
    assert [r.check for r in skipped] == ["dns SSHFP"]
    assert all(r.status == OK for r in results if r.status != SKIP)


def test_a_silent_resolver_fails_within_its_timeout():
    lookup = dns_checks.resolver("127.0.0.1", 0.5, port=9)   # discard: nothing answers
    with pytest.raises(dns_checks.LookupFailed, match="within 0.5s|lookup failed"):
        lookup("cacert.test.", "MX")
