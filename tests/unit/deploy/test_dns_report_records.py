"""operations/dns_report.py: record formatting, independent of any host."""
import base64
import datetime
import hashlib
import json
import os
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tests.unit.deploy import fake_host  # noqa: F401  (puts the repository on sys.path)
from tests.unit.deploy.conftest import REPO
from operations import dns_report as dns


def _openssh(key):
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                         serialization.PublicFormat.OpenSSH).decode()


@pytest.fixture(scope="module")
def host_keys():
    return {
        "rsa": _openssh(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        "ecdsa": _openssh(ec.generate_private_key(ec.SECP256R1())),
        "ed25519": _openssh(ed25519.Ed25519PrivateKey.generate()),
    }


def test_sshfp_has_both_hashes_for_each_key_type_in_algorithm_order(host_keys):
    lines = dns.sshfp_records("email.cacert.test", [host_keys["ed25519"] + " root@email",
                                                    host_keys["rsa"], host_keys["ecdsa"]])
    assert [line.split("\t")[3][:3] for line in lines] == \
        ["1 1", "1 2", "3 1", "3 2", "4 1", "4 2"]
    assert all(line.startswith("email.cacert.test.\tIN\tSSHFP\t") for line in lines)
    blob = base64.b64decode(host_keys["ed25519"].split()[1])
    assert lines[5].endswith(" " + hashlib.sha256(blob).hexdigest())
    assert lines[4].endswith(" " + hashlib.sha1(blob).hexdigest())


def test_sshfp_only_for_key_types_present(host_keys):
    lines = dns.sshfp_records("h.example", [host_keys["ed25519"]])
    assert [line.split("\t")[3][:3] for line in lines] == ["4 1", "4 2"]


def test_sshfp_agrees_with_ssh_keygen(tmp_path, host_keys):
    """ssh-keygen -r is the reference implementation of the fingerprints."""
    expected = set()
    for name, line in host_keys.items():
        pub = tmp_path / f"{name}.pub"
        pub.write_text(line + "\n")
        out = subprocess.run(["ssh-keygen", "-r", "email.cacert.test", "-f", str(pub)],
                             capture_output=True, text=True, check=True).stdout
        expected |= {tuple(row.split()[3:6]) for row in out.splitlines() if "SSHFP" in row}
    got = {tuple(line.split("\t")[3].split()) for line in
           dns.sshfp_records("email.cacert.test", list(host_keys.values()))}
    assert got == expected and len(got) == 6


def test_sshfp_refuses_a_line_that_is_no_key():
    with pytest.raises(dns.ReportError, match="not an SSH public key"):
        dns.sshfp_records("h.example", ["ssh-foo AAAA"])


def test_addresses_of_the_default_route_interface_only():
    ip_addr = (
        "2: eth0    inet 213.154.225.228/24 brd 213.154.225.255 scope global eth0\\       "
        "valid_lft forever preferred_lft forever\n"
        "2: eth0    inet6 2001:7b8:616:162:2::228/64 scope global \\       valid_lft forever\n"
        "3: eth1    inet 10.0.0.19/24 brd 10.0.0.255 scope global eth1\\       valid_lft forever\n")
    routes = "default via 213.154.225.1 dev eth0 \ndefault via fe80::1 dev eth0 metric 1024\n"
    addresses = dns.default_route_addresses(ip_addr, routes)
    assert addresses == ["213.154.225.228", "2001:7b8:616:162:2::228"]
    lines = dns.address_records(["email.cacert.org"], addresses)
    assert lines == ["email.cacert.org.\tIN\tA\t213.154.225.228",
                     "email.cacert.org.\tIN\tAAAA\t2001:7b8:616:162:2::228"]
    # Without any default route, every global address counts.
    assert len(dns.default_route_addresses(ip_addr, "")) == 3


def test_mx_spf_tlsrpt():
    assert dns.mx_record("cacert.org", "email.cacert.org") == \
        "cacert.org.\tIN\tMX\t10 email.cacert.org."
    assert dns.spf_record("cacert.org") == 'cacert.org.\tIN\tTXT\t"v=spf1 mx ~all"'
    assert dns.spf_record("cacert.org", "[emailout.cacert.org]:25").endswith(
        '"v=spf1 mx a:emailout.cacert.org ~all"')
    assert dns.tlsrpt_record("cacert.org") == \
        '_smtp._tls.cacert.org.\tIN\tTXT\t"v=TLSRPTv1; rua=mailto:postmaster@cacert.org"'


def test_dkim_rsa_record_splits_long_strings_and_carries_the_key():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    line = dns.dkim_record("cacert.org", "mail", pem)
    name, _, rtype, value = line.split("\t")
    assert (name, rtype) == ("mail._domainkey.cacert.org.", "TXT")
    strings = value[1:-1].split('" "')
    assert all(len(s) <= 255 for s in strings) and len(strings) == 2
    text = "".join(strings)
    assert text.startswith("v=DKIM1; h=sha256; k=rsa; p=")
    der = base64.b64decode(text.split("p=")[1])
    assert serialization.load_der_public_key(der).public_numbers() == \
        key.public_key().public_numbers()


def test_dkim_keys_parsed_from_the_remote_listing():
    pem = ("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n"
           "-----END PUBLIC KEY-----")
    keys = dns.parse_dkim_keys(f"selector 2026\n{pem}\n")
    assert keys == {"2026": pem + "\n"}
    assert "k=ed25519; p=Gb9ECWmE" in dns.dkim_record("cacert.org", "2026", keys["2026"])
    assert dns.parse_dkim_keys("") == {}


def test_report_says_what_is_missing(host_keys):
    data = {"mail_domain": "cacert.test", "relayhost": None,
            "hostnames": {"email": "email.cacert.test", "community": "community.cacert.test"}}
    lines = dns.report(data, {"public_keys": [host_keys["ed25519"]],
                              "addresses": ["10.0.3.19"], "dkim": {}})
    text = "\n".join(lines)
    assert "email.cacert.test.\tIN\tA\t10.0.3.19" in text
    assert "community.cacert.test.\tIN\tA\t10.0.3.19" in text
    assert "no AAAA record" in text
    assert "DKIM is not set up" in text
    assert "cacert.test.\tIN\tMX\t10 email.cacert.test." in lines


def test_txt_value_escapes_quotes():
    assert dns.txt_value('a"b') == '"a\\"b"'


def test_read_state_parses_what_the_host_answers(host_keys):
    """The glue between the remote commands and the pure functions, with a stub host."""
    pem = ("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n"
           "-----END PUBLIC KEY-----")
    answers = {
        dns._KEYS_COMMAND: host_keys["ed25519"] + " root@email\n" + host_keys["rsa"],
        dns._ADDR_COMMAND: "2: eth0    inet 10.0.3.19/24 brd 10.0.3.255 scope global eth0\\ x",
        dns._ROUTE_COMMAND: "default via 10.0.3.1 dev eth0",
        dns._DKIM_COMMAND.format(dir=dns.DKIM_KEY_DIR, domain="cacert.test"):
            f"selector 202611\n{pem}",
    }

    class Host:
        class data:
            mail_domain = "cacert.test"

        @staticmethod
        def get_fact(fact, command):
            return answers[command]

    state = dns.read_state(Host)
    assert state["addresses"] == ["10.0.3.19"]
    assert list(state["dkim"]) == ["202611"]
    lines = dns.report({"mail_domain": "cacert.test", "relayhost": None,
                        "hostnames": {"email": "email.cacert.test",
                                      "community": "community.cacert.test"}}, state)
    assert sum("\tSSHFP\t" in line for line in lines) == 4
    assert any(line.startswith("202611._domainkey.cacert.test.\tIN\tTXT\t") for line in lines)


def test_command_without_inventory_prints_usage(capsys):
    with pytest.raises(SystemExit) as exit_:
        dns.main([])
    assert exit_.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_help_goes_to_stdout_with_exit_0():
    """As every command's --help: readable with `| less`, and not an error."""
    result = subprocess.run([sys.executable, "-m", "operations.dns_report", "--help"],
                            cwd=REPO, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:") and "--json" in result.stdout
    assert "inventories/prod.py" in result.stdout and result.stderr == ""


REPORT_DATA = {"mail_domain": "cacert.test", "relayhost": None,
               "hostnames": {"email": "email.cacert.test", "community": "community.cacert.test"}}


def test_json_output_carries_every_record_and_note(host_keys):
    lines = dns.report(REPORT_DATA, {"public_keys": [host_keys["ed25519"]],
                                     "addresses": ["10.0.3.19"], "dkim": {}})
    text = dns.render([("email.cacert.test", lines)], as_json=True,
                      now=datetime.datetime(2026, 12, 5, 21, 0, tzinfo=datetime.timezone.utc))
    document = json.loads(text)
    assert document["generated"] == "2026-12-05T21:00:00+00:00"
    (host,) = document["hosts"]
    assert host["host"] == "email.cacert.test"
    records = host["records"]
    assert {"name": "email.cacert.test.", "class": "IN", "type": "A",
            "value": "10.0.3.19"} in records
    assert {"name": "cacert.test.", "class": "IN", "type": "MX",
            "value": "10 email.cacert.test."} in records
    assert [r["type"] for r in records].count("SSHFP") == 2
    # Every zone-file line is one record, every comment one note: nothing is lost.
    assert len(records) == sum(not line.startswith(";") for line in lines)
    assert any("DKIM is not set up" in note for note in host["notes"])
    assert not any(note.startswith(";") for note in host["notes"])


def test_text_output_is_the_zone_file_lines():
    now = datetime.datetime(2026, 12, 5, 21, 0, tzinfo=datetime.timezone.utc)
    lines = ["; a note", "cacert.test.\tIN\tMX\t10 email.cacert.test."]
    assert dns.render([("email.cacert.test", lines)], as_json=False, now=now) == \
        "; 2026-12-05 21:00 UTC\n" + "\n".join(lines)
