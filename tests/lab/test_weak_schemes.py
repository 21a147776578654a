"""Older password hashes in the lab: a lab account whose row holds {SHA512-CRYPT} or
{MD5-CRYPT} (made by the container's `doveadm pw`) logs in over IMAPS with its lab password,
and afterwards its row holds {BLF-CRYPT} (Dovecot's post-login re-hash step). On trixie this
is Dovecot 2.4, which verifies {MD5-CRYPT} only because the inventory's
dovecot_allow_weak_schemes is True by default. The account's original hash is restored after
each case.

Passwords and hashes travel to the container on stdin, never on a command line."""
import json

import pytest
from mailclients import imaps, wait_for


def row_hash(ssh, login):
    return ssh("mariadb --batch --skip-column-names cacertusers",
               input=f"SELECT password FROM users WHERE login = '{login}';\n").stdout.strip()


def set_hash(ssh, login, hashed):
    assert "'" not in hashed and "\\" not in hashed
    ssh("mariadb cacertusers",
        input=f"UPDATE users SET password = '{hashed}' WHERE login = '{login}';\n")


def listed(ssh, login):
    rows = json.loads(ssh("mailstore account list --json").stdout)
    return next(row for row in rows if row["login"] == login)


@pytest.mark.parametrize("scheme, weak", [("SHA512-CRYPT", False), ("MD5-CRYPT", True)])
def test_an_older_hash_becomes_blf_crypt_at_the_first_imaps_login(ssh, lab, bob, scheme, weak):
    login = bob["email"].lower()
    original = row_hash(ssh, login)
    assert original.startswith("{BLF-CRYPT}")
    try:
        older = ssh(f"doveadm pw -s {scheme}",
                    input=f"{bob['password']}\n{bob['password']}\n").stdout.strip()
        assert older.startswith("{%s}" % scheme)
        set_hash(ssh, login, older)
        assert (listed(ssh, login)["scheme"], listed(ssh, login)["weak"]) == (scheme, weak)

        imap = imaps(lab, bob)
        try:
            assert imap.select("INBOX", readonly=True)[0] == "OK"
        finally:
            imap.logout()

        def changed():
            current = row_hash(ssh, login)
            return current if current != older else None

        # The step runs before the IMAP session starts: the row has changed by now.
        new = wait_for(changed, timeout=10, what=f"{login}'s row to change")
        assert new.startswith("{BLF-CRYPT}$2b$10$")
        assert listed(ssh, login)["scheme"] == "BLF-CRYPT"
        verified = ssh(f"doveadm pw -t '{new}'", input=f"{bob['password']}\n", check=False)
        assert "(verified)" in verified.stdout, verified.stderr
        imaps(lab, bob).logout()                        # the same password still logs in
        assert row_hash(ssh, login) == new
    finally:
        set_hash(ssh, login, original)
    assert row_hash(ssh, login) == original
