"""The core mail path in the lab, with real clients: SMTP in, submission, IMAP/POP3 out,
ManageSieve, aliases, transports, and the certificates each port serves."""
import base64
import hashlib
import imaplib
import poplib
import re
import smtplib
import socket
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from mailclients import (ManageSieve, SmtpSink, imaps, mail_log, message, pop3s,
                         served_certificate, smtp_25, submission, wait_for, wait_for_delivery)

REPO = Path(__file__).resolve().parents[2]
OUTSIDE = "someone@example.net"


def _alias(lab, send_as):
    return next(a for a in lab["aliases"] if a["send_as"] is send_as)


# --- receiving -----------------------------------------------------------------------------

def test_mail_over_25_lands_in_maildir_and_is_read_over_imaps_and_pop3s(lab, ssh, alice):
    marker, msg = message(OUTSIDE, alice["email"])
    with smtp_25(lab) as smtp:
        smtp.send_message(msg)
    [path] = wait_for_delivery(ssh, lab, alice["user"], marker)
    owner = ssh(f"stat -c %U {path}").stdout.strip()
    assert owner == "vmail"

    imap = imaps(lab, alice)
    try:
        imap.select("INBOX", readonly=True)
        typ, data = imap.search(None, "SUBJECT", marker)
        assert typ == "OK" and data[0].split(), f"{marker} not found over IMAPS"
        typ, fetched = imap.fetch(data[0].split()[-1], "(BODY.PEEK[])")
        assert marker.encode() in fetched[0][1]
    finally:
        imap.logout()

    pop = pop3s(lab, alice)
    try:
        count, _ = pop.stat()
        bodies = [b"\n".join(pop.retr(i)[1]) for i in range(max(1, count - 20), count + 1)]
        assert any(marker.encode() in body for body in bodies), f"{marker} not found over POP3S"
    finally:
        pop.quit()


def test_postmaster_reaches_its_owner(lab, ssh):
    postmaster = _alias(lab, send_as=False)
    owner = next(a for a in lab["accounts"] if a["email"] == postmaster["owner"])
    marker, msg = message(OUTSIDE, postmaster["alias"])
    with smtp_25(lab) as smtp:
        smtp.send_message(msg)
    wait_for_delivery(ssh, lab, owner["user"], marker)


def test_unknown_local_recipient_is_refused(lab):
    with smtp_25(lab) as smtp:
        smtp.mail(OUTSIDE)
        code, reply = smtp.rcpt(f"nobody-here@{lab['domain']}")
    assert code == 550, reply


def test_no_open_relay(lab):
    for starttls in (False, True):
        with smtp_25(lab, starttls=starttls) as smtp:
            smtp.mail(OUTSIDE)
            code, reply = smtp.rcpt("victim@example.org")
        assert code == 554 and b"Relay access denied" in reply, (code, reply)


# --- sending -------------------------------------------------------------------------------

@pytest.mark.parametrize("port", ["submission", "smtps"])
def test_submission_delivers(lab, ssh, alice, bob, port):
    marker, msg = message(alice["email"], bob["email"])
    with submission(lab, alice, port=port) as smtp:
        smtp.send_message(msg)
    wait_for_delivery(ssh, lab, bob["user"], marker)


def test_auth_before_starttls_on_587_is_refused(lab, alice):
    with smtplib.SMTP(lab["address"], lab["ports"]["submission"], timeout=30) as smtp:
        smtp.ehlo("tests.cacert.test")
        assert not smtp.has_extn("auth"), "AUTH offered before STARTTLS"
        token = base64.b64encode(f"\0{alice['email']}\0{alice['password']}".encode()).decode()
        code, reply = smtp.docmd("AUTH", f"PLAIN {token}")
    assert code >= 500 and code != 235, (code, reply)


def test_login_before_starttls_on_143_is_refused(lab, alice):
    imap = imaplib.IMAP4(lab["address"], lab["ports"]["imap"], timeout=30)
    try:
        assert "LOGINDISABLED" in imap.capabilities
        with pytest.raises(imaplib.IMAP4.error):
            imap.login(alice["email"], alice["password"])
    finally:
        imap.shutdown()


def test_pop3_password_before_stls_on_110_is_refused(lab, alice):
    pop = poplib.POP3(lab["address"], lab["ports"]["pop3"], timeout=30)
    try:
        assert "STLS" in pop.capa()
        with pytest.raises(poplib.error_proto):
            pop.user(alice["email"])
            pop.pass_(alice["password"])
    finally:
        pop.close()


def test_only_the_owner_may_send_as_an_alias(lab, ssh, alice, bob):
    alias = _alias(lab, send_as=True)
    assert alias["owner"] == alice["email"]
    marker, msg = message(alias["alias"], bob["email"])
    with submission(lab, bob) as smtp:
        with pytest.raises((smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused)) as refused:
            smtp.send_message(msg)
    assert "not owned by user" in str(refused.value)
    with submission(lab, alice) as smtp:
        smtp.send_message(msg)
    wait_for_delivery(ssh, lab, bob["user"], marker)


def test_nobody_may_send_as_another_user(lab, alice, bob):
    _, msg = message(alice["email"], bob["email"])
    with submission(lab, bob) as smtp:
        with pytest.raises((smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused)):
            smtp.send_message(msg)


def test_lists_domain_goes_to_its_transport(lab, ssh, alice):
    """The transport map routes the lists domain to its own host (a sink on the lab host)."""
    dump = ssh("postmap -s hash:/etc/postfix/transport").stdout
    domain, nexthop = next(line.split() for line in dump.splitlines()
                           if line.startswith("lists."))
    found = re.match(r"smtp:\[([\d.]+)\]:(\d+)$", nexthop)
    assert found, f"the lab's transport for {domain} is not a lab address: {nexthop}"
    sink = SmtpSink(found.group(1), int(found.group(2)))
    try:
        # Mail deferred by an earlier run without a sink must not confuse us: flush first.
        ssh("postqueue -f", check=False)
        marker, msg = message(alice["email"], f"some-list@{domain}")
        with submission(lab, alice) as smtp:
            smtp.send_message(msg)
        wait_for(lambda: [r for r in sink.received if marker in r[2]], timeout=60,
                 what=f"{marker} at the {domain} transport {nexthop}")
    finally:
        sink.close()
    assert any(f"relay={found.group(1)}[{found.group(1)}]:{found.group(2)}" in line
               for line in mail_log(ssh, marker[2:]) + mail_log(ssh, "some-list@"))


# --- sieve ---------------------------------------------------------------------------------

SIEVE = """require ["fileinto", "mailbox"];
if header :contains "subject" "sieve-me" {
  fileinto :create "Filed";
}
"""


def test_sieve_script_uploaded_over_managesieve_files_mail(lab, ssh, alice):
    sieve = ManageSieve(lab)
    try:
        assert any(line.startswith('"STARTTLS"') for line in sieve.capabilities)
        sieve.starttls()
        sieve.authenticate(alice["email"], alice["password"])
        sieve.putscript("lab-test", SIEVE)
        sieve.command('SETACTIVE "lab-test"')
    finally:
        sieve.close()
    try:
        marker, msg = message(OUTSIDE, alice["email"], subject="sieve-me")
        with smtp_25(lab) as smtp:
            smtp.send_message(msg)
        wait_for_delivery(ssh, lab, alice["user"], marker, folder=".Filed")
    finally:
        sieve = ManageSieve(lab)
        sieve.starttls()
        sieve.authenticate(alice["email"], alice["password"])
        sieve.command('SETACTIVE ""')
        sieve.command('DELETESCRIPT "lab-test"')
        sieve.close()


def test_plaintext_authentication_on_managesieve_is_refused(lab, alice):
    sieve = ManageSieve(lab)
    try:
        with pytest.raises(Exception):
            sieve.authenticate(alice["email"], alice["password"])
    finally:
        sieve.sock.close()


# --- certificates --------------------------------------------------------------------------

def _leaf_of(pair):
    pem = (REPO / ".lab" / "secrets" / f"{pair}.chain.pem").read_bytes()
    return x509.load_pem_x509_certificates(pem)[0].public_bytes(Encoding.DER)


@pytest.mark.parametrize("service,pair,starttls", [
    ("smtp", "email", True), ("submission", "community", True), ("smtps", "community", False),
    ("imaps", "community", False), ("pop3s", "community", False)])
def test_each_port_serves_its_certificate(lab, service, pair, starttls):
    name = lab["hostnames"][pair]
    served = served_certificate(lab, lab["ports"][service], name, starttls)
    assert hashlib.sha256(served).hexdigest() == hashlib.sha256(_leaf_of(pair)).hexdigest()


def test_a_foreign_ca_is_not_accepted(lab):
    """The verification above can fail: the system CAs do not know the lab CA."""
    context = ssl.create_default_context()
    with pytest.raises(ssl.SSLCertVerificationError):
        with socket.create_connection((lab["address"], lab["ports"]["imaps"]), timeout=30) as raw:
            context.wrap_socket(raw, server_hostname=lab["hostnames"]["community"])
