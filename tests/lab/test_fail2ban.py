"""fail2ban (operations/fail2ban.py) against a real attacker.

An address on the lab bridge (a test-made network namespace, in no ignore list) fails IMAP
logins until fail2ban bans it: from there IMAPS is then refused while the lab host still logs
in; the test lifts the ban again (`fail2ban-client set dovecot unbanip`).
"""
import imaplib
import ssl
import time

import pytest

from tests.lab.netns import client

ATTACKER = "10.0.3.201"

# Run inside the namespace: N parallel IMAPS connections, each failing one LOGIN.
_FAIL_LOGINS = """
import concurrent.futures, imaplib, ssl, sys
address, user, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
context = ssl.create_default_context()
context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
def attempt(i):
    try:
        imap = imaplib.IMAP4_SSL(address, 993, ssl_context=context, timeout=20)
    except OSError as exc:
        return "no connection: " + type(exc).__name__
    try:
        imap.login(user, "not-the-password-%d" % i)
        return "LOGGED IN"
    except imaplib.IMAP4.error:
        return "failed"
    finally:
        try:
            imap.logout()
        except Exception:
            pass
with concurrent.futures.ThreadPoolExecutor(count) as pool:
    print(" ".join(r.replace(" ", "_") for r in pool.map(attempt, range(count))))
"""


def _banned(ssh, jail="dovecot"):
    status = ssh(f"fail2ban-client status {jail}").stdout
    return status.split("Banned IP list:")[1].split()


def _wait_for_ban(ssh, jail, address, seconds=30):
    deadline = time.monotonic() + seconds
    while address not in _banned(ssh, jail) and time.monotonic() < deadline:
        time.sleep(0.5)
    return address in _banned(ssh, jail)


@pytest.fixture
def attacker(ssh):
    ssh(f"fail2ban-client set dovecot unbanip {ATTACKER}", check=False)
    with client("cl-f2b", ATTACKER) as ns:
        yield ns
    ssh(f"fail2ban-client set dovecot unbanip {ATTACKER}", check=False)


def test_jails_are_running(ssh):
    status = ssh("fail2ban-client status").stdout
    for jail in ("sshd", "postfix", "postfix-sasl", "dovecot"):
        assert jail in status, status


def test_repeated_failed_imap_logins_get_the_address_banned_until_unbanned(lab, ssh, attacker):
    assert ATTACKER not in ssh("fail2ban-client get dovecot ignoreip").stdout
    maxretry = int(ssh("fail2ban-client get dovecot maxretry").stdout.split()[-1])
    user = lab["accounts"][0]
    assert attacker.probe(lab["address"], 993) == "open"

    results = attacker.python(_FAIL_LOGINS, lab["address"], user["email"], maxretry + 2,
                              timeout=120).split()
    assert "LOGGED_IN" not in results and results.count("failed") >= maxretry, results

    assert _wait_for_ban(ssh, "dovecot", ATTACKER), ssh("tail -n 30 /var/log/mail.log").stdout

    # Banned: IMAPS from there is refused (or silently dropped) ...
    assert attacker.probe(lab["address"], 993) in ("refused", "timeout")
    # ... while another client, the lab host, still logs in.
    context = ssl.create_default_context(cafile=lab["ca_cert"])
    context.check_hostname = False  # connected by address; the chain is still verified
    with imaplib.IMAP4_SSL(lab["address"], 993, ssl_context=context, timeout=20) as imap:
        assert imap.login(user["email"], user["password"])[0] == "OK"

    ssh(f"fail2ban-client set dovecot unbanip {ATTACKER}")
    assert ATTACKER not in _banned(ssh)
    assert attacker.probe(lab["address"], 993) == "open"


# Run inside the namespace: N parallel submissions (587, STARTTLS), each failing AUTH once.
_FAIL_SMTP_AUTH = """
import concurrent.futures, smtplib, ssl, sys
address, user, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
context = ssl.create_default_context()
context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
def attempt(i):
    try:
        smtp = smtplib.SMTP(address, 587, timeout=10)
        smtp.starttls(context=context)
    except OSError as exc:
        return "no connection: " + type(exc).__name__
    try:
        smtp.login(user, "not-the-password-%d" % i)
        return "LOGGED IN"
    except smtplib.SMTPAuthenticationError:
        return "failed"
    except (smtplib.SMTPException, OSError) as exc:  # e.g. cut off by the ban meanwhile
        return "interrupted: " + type(exc).__name__
    finally:
        try:
            smtp.quit()
        except Exception:
            pass
with concurrent.futures.ThreadPoolExecutor(count) as pool:
    print(" ".join(r.replace(" ", "_") for r in pool.map(attempt, range(count))))
"""
SASL_ATTACKER = "10.0.3.203"


def test_repeated_failed_smtp_auth_gets_the_address_banned_from_submission(lab, ssh):
    ssh(f"fail2ban-client set postfix-sasl unbanip {SASL_ATTACKER}", check=False)
    maxretry = int(ssh("fail2ban-client get postfix-sasl maxretry").stdout.split()[-1])
    try:
        with client("cl-sasl", SASL_ATTACKER) as ns:
            results = ns.python(_FAIL_SMTP_AUTH, lab["address"], lab["accounts"][1]["email"],
                                maxretry + 2, timeout=120).split()
            # smtplib tries two mechanisms per connection: the ban usually cuts the second.
            assert "LOGGED_IN" not in results and len(results) == maxretry + 2, results
            assert _wait_for_ban(ssh, "postfix-sasl", SASL_ATTACKER), \
                ssh("grep 'SASL' /var/log/mail.log | tail -n 10").stdout
            assert ns.probe(lab["address"], 587) in ("refused", "timeout")
            ssh(f"fail2ban-client set postfix-sasl unbanip {SASL_ATTACKER}")
            assert ns.probe(lab["address"], 587, banner=True).startswith("open 220 ")
    finally:
        ssh(f"fail2ban-client set postfix-sasl unbanip {SASL_ATTACKER}", check=False)


def test_a_jail_config_fail2ban_rejects_never_goes_live(ssh, tmp_path):
    from operations import fail2ban
    from tests.lab.broken_config import deploy_broken

    before = ssh(f"sha1sum {fail2ban.CONFIG}").stdout
    result = deploy_broken(tmp_path, fail2ban.CONFIG,
                           "[dovecot]\nenabled = true\nfilter = no-such-filter\n",
                           fail2ban.STAGE, fail2ban.CHECK)
    assert result.returncode != 0
    assert "Unable to read the filter 'no-such-filter'" in result.stdout + result.stderr
    assert ssh(f"sha1sum {fail2ban.CONFIG}").stdout == before
    assert ssh("systemctl is-active fail2ban").stdout.strip() == "active"
    assert "dovecot" in ssh("fail2ban-client status").stdout
