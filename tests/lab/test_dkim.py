"""DKIM in the lab: a mail submitted on 587 (alice, STARTTLS + AUTH) or sent on the host itself
to bob arrives signed, and the signature verifies (dkimpy) against the public key generated on
the server, published as the DNS report prints it and as the lab DNS serves it. Mail from
outside on port 25 is not signed. A re-deploy keeps the key and changes nothing of DKIM or
CRL."""
import json
import re
import subprocess
import sys
from pathlib import Path

import dkim
import pytest
from mailclients import deploy_failure, message, smtp_25, submission, wait_for_delivery

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from operations import dns_report  # noqa: E402
from operations import dkim as dkim_deploy  # noqa: E402
from operations.defaults import defaults  # noqa: E402

SELECTOR = defaults()["dkim_selector"]


# `deployed` (conftest): the container first (it makes the key), then the lab host (its DNS
# publishes the key).
DEPLOY = ("email", "infra02")


@pytest.fixture(scope="module")
def key_file(lab):
    return f"{dkim_deploy.KEY_ROOT}/{lab['domain']}/{SELECTOR}.private"


def published_record(lab, ssh, key_file):
    """The TXT value the DNS report prints for the key on the server (as a resolver returns
    it: the character-strings joined)."""
    pem = ssh(f"openssl pkey -in {key_file} -pubout").stdout
    line = dns_report.dkim_record(lab["domain"], SELECTOR, pem)
    name, _, rtype, value = line.split("\t")
    assert (name, rtype) == (f"{SELECTOR}._domainkey.{lab['domain']}.", "TXT")
    return "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', value)).encode()


def delivered(lab, ssh, user, marker):
    [path] = wait_for_delivery(ssh, lab, user, marker)
    return ssh(f"cat {path}").stdout.encode()


def dnsfunc_for(lab, record):
    wanted = f"{SELECTOR}._domainkey.{lab['domain']}."

    def lookup(name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        return record if name.rstrip(".") + "." == wanted else None
    return lookup


def test_submitted_mail_is_signed_and_verifies(deployed, lab, ssh, key_file, alice, bob):
    marker, msg = message(alice["email"], bob["email"], subject="dkim")
    with submission(lab, alice) as smtp:
        smtp.send_message(msg)
    raw = delivered(lab, ssh, bob["user"], marker)
    header = re.search(rb"^DKIM-Signature:.*?(?=^\S)", raw, re.M | re.S)
    assert header, raw.decode(errors="replace")[:2000]
    tags = dict(re.findall(rb"\b([a-z]+)=([^;]*)", re.sub(rb"\s+", b"", header.group(0))))
    assert tags[b"d"] == lab["domain"].encode() and tags[b"s"] == SELECTOR.encode()
    lookup = dnsfunc_for(lab, published_record(lab, ssh, key_file))
    assert dkim.verify(raw, dnsfunc=lookup)
    # The verification can fail: a changed body, or another key, does not verify.
    assert not dkim.verify(raw.replace(marker.encode(), b"T-forged", 1), dnsfunc=lookup)
    other = dns_report.dkim_record(lab["domain"], SELECTOR, _other_public_key())
    other_value = "".join(re.findall(r'"([^"]*)"', other.split("\t")[3])).encode()
    assert not dkim.verify(raw, dnsfunc=dnsfunc_for(lab, other_value))


def _other_public_key():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    return rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key() \
        .public_bytes(serialization.Encoding.PEM,
                      serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def lab_dns_txt(lab, name):
    """The TXT record `name` as the lab's DNS server on the bridge answers it (strings joined)."""
    bridge = lab["address"].rsplit(".", 1)[0] + ".1"
    answer = subprocess.run(["dig", "+short", "+time=2", "TXT", name, f"@{bridge}"],
                            capture_output=True, text=True, timeout=30, check=True).stdout
    return "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', answer)).encode()


def test_the_lab_dns_serves_the_key_and_the_signature_verifies_through_it(
        deployed, lab, ssh, key_file, alice, bob):
    name = f"{SELECTOR}._domainkey.{lab['domain']}"
    served = lab_dns_txt(lab, name)
    assert served == published_record(lab, ssh, key_file)
    marker, msg = message(alice["email"], bob["email"], subject="dkim via dns")
    with submission(lab, alice, port="smtps") as smtp:
        smtp.send_message(msg)
    raw = delivered(lab, ssh, bob["user"], marker)

    def via_lab_dns(queried, timeout=5):
        return lab_dns_txt(lab, queried.decode() if isinstance(queried, bytes) else queried)
    assert dkim.verify(raw, dnsfunc=via_lab_dns)


def test_mail_sent_on_the_host_is_signed(deployed, lab, ssh, key_file, bob):
    """Local mail (cron, monitoring, sendmail) goes through non_smtpd_milters: signed too."""
    marker, msg = message(f"root@{lab['domain']}", bob["email"], subject="local")
    ssh(f"/usr/sbin/sendmail -t -f root@{lab['domain']}", input=msg.as_string())
    raw = delivered(lab, ssh, bob["user"], marker)
    assert dkim.verify(raw, dnsfunc=dnsfunc_for(lab, published_record(lab, ssh, key_file)))


def test_mail_from_outside_is_not_signed(deployed, lab, ssh, bob):
    marker, msg = message("someone@example.net", bob["email"], subject="unsigned")
    with smtp_25(lab) as smtp:
        smtp.send_message(msg)
    assert b"DKIM-Signature:" not in delivered(lab, ssh, bob["user"], marker)


def test_the_dns_report_prints_the_servers_key(deployed, lab, ssh, key_file):
    txt = ssh(f"cat {dkim_deploy.KEY_ROOT}/{lab['domain']}/{SELECTOR}.txt").stdout
    genkey_p = "".join(re.findall(r'"([^"]*)"', txt)).split("p=")[1]
    assert published_record(lab, ssh, key_file).decode().endswith(f"p={genkey_p}")


def test_a_redeploy_keeps_the_key_and_changes_nothing(deployed, lab, ssh, run_deploy, key_file):
    before = ssh(f"sha256sum {key_file}").stdout
    result = run_deploy("--json")
    assert result.returncode == 0, deploy_failure(result)
    assert ssh(f"sha256sum {key_file}").stdout == before
    results = json.loads(result.stdout)["results"]
    mine = [op for op in results["operations"]
            if op["name"].startswith(("DKIM signing", "CRL refresh"))]
    assert len(mine) >= 10, [op["name"] for op in results["operations"]]
    assert [op["name"] for op in mine if op["success"]] == []
    assert ssh("systemctl is-active opendkim").stdout.strip() == "active"
