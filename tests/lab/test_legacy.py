"""The lab's legacy server (lab/legacy) is a faithful stand-in for the live Puppet-era server:
its users log in with their old passwords, mail reaches the right Maildir through every kind
of address it knows, root logs in over SSH, and its LXC config carries the keys a deploy must
keep.

The container is brought up by the `legacy` fixture (tests/lab/conftest.py) through
`python -m lab container up legacy` (quick when it is up already), so CI needs no step of
its own. Adoption matters on bullseye, the live server's release: the module runs on the
lab's bullseye iteration only (LAB_RELEASES, tests/lab/conftest.py).
"""
import imaplib
import re
from pathlib import Path

import pytest

from mailclients import imaps, message, smtp_25, wait_for_delivery

LXC_CONFIG = Path("/var/lib/lxc/legacy/config")
LAB_RELEASES = ("bullseye",)


@pytest.mark.parametrize("user", ["alice", "bob", "carol"])
def test_an_active_user_logs_in_over_imaps_with_the_old_password(legacy, user):
    imap = imaps(legacy, legacy["accounts"][user])
    try:
        status, _ = imap.select("INBOX", readonly=True)
        assert status == "OK"
    finally:
        imap.logout()


def test_alices_old_mail_folders_and_flags_are_there(legacy):
    imap = imaps(legacy, legacy["accounts"]["alice"])
    try:
        _, folders = imap.list()
        assert any(line.decode().endswith(" Lists") or line.decode().endswith('"Lists"')
                   for line in folders), folders
        _, count = imap.select("INBOX", readonly=True)
        assert int(count[0]) >= 3
        _, flagged = imap.search(None, "FLAGGED")
        _, unseen = imap.search(None, "UNSEEN")
        assert flagged[0].split() and unseen[0].split()
        _, count = imap.select("Lists", readonly=True)
        assert int(count[0]) == 1
    finally:
        imap.logout()


def test_the_deactivated_user_is_refused(legacy):
    with pytest.raises(imaplib.IMAP4.error):
        imaps(legacy, legacy["accounts"]["dave"])


DELIVERIES = [
    ("alice@cacert.test", "alice"),        # a mailbox
    ("pr@cacert.test", "alice"),           # DB alias, send_as 1
    ("info@cacert.test", "bob"),           # DB alias, send_as 0
    ("postmaster@cacert.test", "alice"),   # /etc/aliases
    ("webmaster@cacert.test", "bob"),      # /etc/aliases
    ("arbitration-4711@cacert.test", "bob"),       # /etc/postfix/arbitration
    ("former.member+deleted@cacert.test", "alice"),  # /etc/postfix/arbitration
]


@pytest.mark.parametrize("recipient,user", DELIVERIES)
def test_mail_to_the_address_reaches_its_maildir(legacy, legacy_ssh, recipient, user):
    marker, msg = message("sender@example.net", recipient, subject="legacy delivery")
    with smtp_25(legacy) as smtp:
        smtp.send_message(msg)
    assert wait_for_delivery(legacy_ssh, legacy, user, marker)


def test_mail_to_alice_leaves_a_bcc_copy_at_bob(legacy, legacy_ssh):
    marker, msg = message("sender@example.net", "alice@cacert.test", subject="legacy bcc")
    with smtp_25(legacy) as smtp:
        smtp.send_message(msg)
    assert wait_for_delivery(legacy_ssh, legacy, "alice", marker)
    assert wait_for_delivery(legacy_ssh, legacy, "bob", marker)


def test_root_logs_in_over_ssh_and_mail_belongs_to_uid_2000(legacy_ssh):
    assert legacy_ssh("id -u").stdout.strip() == "0"
    owners = legacy_ssh("stat -c %u:%g /home/mailboxes/alice/Maildir "
                        "/home/mailboxes/dave/Maildir").stdout.split()
    assert owners == ["2000:2000", "2000:2000"]


def test_the_lxc_config_keeps_the_keys_a_deploy_does_not_manage(legacy, legacy_ssh):
    config = LXC_CONFIG.read_text()
    for line in ("lxc.cgroup2.memory.max = 2G", "lxc.start.order = 10",
                 "lxc.mount.entry = /srv/cacert-lab/legacy-spool var/spool/legacy-extra "
                 "none bind,create=dir 0 0"):
        assert line in config
    assert re.search(r"^lxc\.prlimit\.nofile = \d+$", config, re.M)
    assert "# Managed by Puppet" in config
    assert [f"lxc.net.{i}.name = eth{i}" in config for i in range(3)] == [True] * 3
    # The extra mount is live: a file made on the host is seen inside.
    marker = message("a@b", "c@d")[0]
    (Path("/srv/cacert-lab/legacy-spool") / marker).write_text("x")
    try:
        assert legacy_ssh(f"ls /var/spool/legacy-extra/{marker}", check=False).returncode == 0
    finally:
        (Path("/srv/cacert-lab/legacy-spool") / marker).unlink()
    addresses = legacy_ssh("ip -o -4 addr show").stdout
    for nic, address in legacy["addresses"].items():
        assert re.search(rf"\b{nic}\s+inet {re.escape(address)}/24", addresses), addresses
