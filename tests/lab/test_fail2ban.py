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


def _banned(ssh):
    status = ssh("fail2ban-client status dovecot").stdout
    return status.split("Banned IP list:")[1].split()


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

    deadline = time.monotonic() + 30
    while ATTACKER not in _banned(ssh) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ATTACKER in _banned(ssh), ssh("tail -n 30 /var/log/mail.log").stdout

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
