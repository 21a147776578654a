"""Lab test: `python -m operations.rebuild` makes the container anew from a backup alone.

alice and bob get mail; IMAP sets flags, a keyword and a folder; alice uploads a sieve script
over ManageSieve; the nightly job takes a backup. UIDVALIDITY, UIDs and flags, the sieve
script, the DKIM public key and the SSH host keys are recorded, the backup repository is
copied to the lab host (Infra02 here), then the container is destroyed and the data volume
wiped. The rebuild runs from that copy while a sender thread offers alice a numbered mail
over port 25 every 0.5 s, as an MTA would: a mail answered 4xx (or not answered) is offered
again, the next one only after a 250. Afterwards: no reply was a 5xx, the hold was seen
(4xx), every accepted mail is in alice's Maildir exactly once, and everything recorded is
as it was.

(The rehearsal, `--rehearse`, is tested from the backup host's copy in
tests/lab/test_offhost_copy.py.)

The file sorts last: it destroys the lab's container. At the end the lab is as the deploy
leaves it: after a rebuild that failed, the container is made again by the deploy, with the
recorded host keys put back (so .lab/known_hosts stays true); the repository copy and the
saved keys are removed. It holds the lab lock while the container is missing.

Runs on the lab's trixie iteration only (LAB_RELEASES): the rebuild of today's server.
"""
import json
import os
import shutil
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
from mailclients import (ManageSieve, deploy_failure, delivered, folder_state, imaps, mark_up,
                         smtp_25, wait_for)

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from lab import lock  # noqa: E402  (the repository root is not always on sys.path)
from lab import topology as t  # noqa: E402
from operations import backup, dkim as dkim_deploy  # noqa: E402
from operations.defaults import defaults  # noqa: E402

LAB_RELEASES = ("trixie",)
ROOTFS = f"/var/lib/lxc/{t.CONTAINER}/rootfs"
REPOSITORY = defaults()["backup_repository"]
# The copy the rebuild starts from: on the lab host, which is Infra02 in the lab.
REPOSITORY_COPY = "/var/lib/cacert-lab/rebuild-repository"
SIEVE = """require ["fileinto", "mailbox"];
if header :contains "subject" "rebuild-sieve" {
  fileinto :create "Sieved";
}
"""
SEND_INTERVAL = 0.5


def _env():
    env = dict(os.environ)
    env.setdefault("CACERT_EMAIL_SECRETS", str(REPO / ".lab" / "secrets"))
    return env


def _pyinfra(limit):
    return subprocess.run(
        [str(REPO / ".venv" / "bin" / "pyinfra"), "-y", "inventories/lab.py", "deploy.py",
         "--limit", limit], cwd=REPO, env=_env(), capture_output=True, text=True,
        timeout=3600)


def host_keys():
    """{file name: public key line} of the container's SSH host keys, read in its rootfs."""
    etc = Path(ROOTFS) / "etc" / "ssh"
    return {p.name: p.read_text().split()[1] for p in sorted(etc.glob("ssh_host_*_key.pub"))}


class Sender(threading.Thread):
    """Offers alice "during <run> <n>" over port 25 every SEND_INTERVAL s; mail n+1 only
    once mail n got 250. `replies`: every (time, n, stage, code) seen; `accepted`: {n: time}
    of each 250 after DATA; `unanswered`: connections that failed (container down)."""

    def __init__(self, lab, recipient, run):
        super().__init__(daemon=True)
        self.lab, self.recipient, self.run_id = lab, recipient, run
        self.stop = threading.Event()
        self.replies, self.accepted, self.unanswered = [], {}, 0

    def _offer(self, n):
        smtp = smtplib.SMTP(timeout=10)
        try:
            code, _ = smtp.connect(self.lab["address"], self.lab["ports"]["smtp"])
            self.replies.append((time.time(), n, "banner", code))
            if code != 220:
                return False
            for stage, (code, _) in (("ehlo", smtp.ehlo("tests.cacert.test")),
                                     ("mail", smtp.mail("tests@example.org")),
                                     ("rcpt", smtp.rcpt(self.recipient))):
                self.replies.append((time.time(), n, stage, code))
                if code >= 300:
                    return False
            subject = f"during {self.run_id} {n}"
            code, _ = smtp.data(f"From: tests@example.org\r\nTo: {self.recipient}\r\n"
                                f"Subject: {subject}\r\nMessage-ID: <{uuid.uuid4().hex}"
                                f"@tests.cacert.test>\r\n\r\n{subject}\r\n")
            self.replies.append((time.time(), n, "data", code))
            return code == 250
        finally:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()

    def run(self):
        n = 0
        while not self.stop.is_set():
            try:
                if self._offer(n):
                    self.accepted[n] = time.time()
                    n += 1
            except (smtplib.SMTPException, OSError):
                self.unanswered += 1
            self.stop.wait(SEND_INTERVAL)


def seed(lab, ssh, alice, bob, run):
    """Mail, flags, a keyword, a folder and a sieve script; the recorded IMAP state."""
    for account in (alice, bob):
        for i in range(4):
            with smtp_25(lab) as smtp:
                smtp.sendmail("tests@example.org", [account["email"]],
                              f"From: tests@example.org\r\nTo: {account['email']}\r\n"
                              f"Subject: before {run} {i}\r\n\r\nbefore {run} {i}\r\n")
    for account in (alice, bob):
        wait_for(lambda a=account: len(delivered(ssh, lab["mail_root"], a["user"], run)) == 4,
                 timeout=60, what=f"4 messages for {account['user']}")
    folder = f"Kept-{run}"
    state = mark_up(lab, alice, bob, run, folder)
    sieve = ManageSieve(lab)
    try:
        sieve.starttls()
        sieve.authenticate(alice["email"], alice["password"])
        sieve.putscript(f"rebuild-{run}", SIEVE)
        sieve.command(f'SETACTIVE "rebuild-{run}"')
    finally:
        sieve.close()
    return state


def sieve_state(ssh, alice):
    home = ssh(f"doveadm user -f home {alice['email']}").stdout.strip()
    return ssh(f"readlink {home}/.dovecot.sieve; cat {home}/sieve/*.sieve").stdout


def dkim_public_key(ssh, lab):
    key = f"{dkim_deploy.KEY_ROOT}/{lab['domain']}/{defaults()['dkim_selector']}.private"
    return ssh(f"openssl pkey -in {key} -pubout").stdout


def put_back_lab(saved_keys):
    """The lab as the deploy leaves it, whatever state the rebuild left: the container made
    (again) by the deploy with the recorded SSH host keys, then deployed."""
    problems = []
    if not Path(ROOTFS).is_dir():
        made = _pyinfra("infra02")
        if made.returncode != 0:
            return ["the deploy that makes the container again failed:\n" + deploy_failure(made)]
    if host_keys() != {p.name: p.read_text().split()[1]
                       for p in sorted(Path(saved_keys).glob("ssh_host_*_key.pub"))}:
        subprocess.run(f"cp -p {saved_keys}/ssh_host_* {ROOTFS}/etc/ssh/ && lxc-attach -n "
                       f"{t.CONTAINER} -- systemctl restart ssh", shell=True, check=False)
    for limit in ("infra02", "email"):
        result = _pyinfra(limit)
        if result.returncode != 0:
            problems.append(f"deploy --limit {limit} failed:\n" + deploy_failure(result))
    return problems


@pytest.fixture(scope="module")
def rebuilt(lab, ssh, alice, bob):
    """The recorded state before, the rebuild's result, the sender; the lab put back."""
    run = f"R{uuid.uuid4().hex[:8]}"
    before = {"imap": seed(lab, ssh, alice, bob, run), "sieve": sieve_state(ssh, alice),
              "dkim": dkim_public_key(ssh, lab), "host_keys": host_keys()}
    ssh(backup.JOB, timeout=900)
    saved_keys = tempfile.mkdtemp(prefix="rebuild-host-keys-")   # 0700
    sender = Sender(lab, alice["email"], run)
    result = None
    with lock.held():
        try:
            subprocess.run(f"cp -p {ROOTFS}/etc/ssh/ssh_host_* {saved_keys}/ && "
                           f"rm -rf {REPOSITORY_COPY} && mkdir -p {REPOSITORY_COPY} && "
                           f"cp -a {ROOTFS}{REPOSITORY}/. {REPOSITORY_COPY}/",
                           shell=True, check=True)
            subprocess.run(["lxc-stop", "-n", t.CONTAINER, "-t", "60"], check=False)
            subprocess.run(["lxc-destroy", "-n", t.CONTAINER], check=True)
            subprocess.run(f"find {t.DATA_VOLUME_HOST_PATH} -mindepth 1 -maxdepth 1 "
                           "! -name lost+found -exec rm -rf {} +", shell=True, check=True)
            sender.start()
            started = time.monotonic()
            result = subprocess.run(
                [sys.executable, "-m", "operations.rebuild", "--json", "inventories/lab.py",
                 "--from", REPOSITORY_COPY], cwd=REPO, env=_env(), capture_output=True,
                text=True, timeout=3600)
            seconds = time.monotonic() - started
            if result.returncode == 0:
                # One more mail accepted after the rebuild: the hold is over.
                count = len(sender.accepted)
                wait_for(lambda: len(sender.accepted) > count + 1, timeout=60,
                         what="mail accepted after the rebuild")
            sender.stop.set()
            sender.join(timeout=60)
            print(f"\nrebuild took {seconds:.0f} s; {len(sender.accepted)} mails accepted, "
                  f"{sender.unanswered} connections unanswered")
            yield {"run": run, "before": before, "result": result, "sender": sender}
        finally:
            sender.stop.set()
            problems = []
            if result is None or result.returncode != 0:
                problems = put_back_lab(saved_keys)
            shutil.rmtree(saved_keys, ignore_errors=True)
            shutil.rmtree(REPOSITORY_COPY, ignore_errors=True)
            assert not problems, "\n".join(problems)


def test_the_rebuild_succeeds_and_says_what_it_restored(rebuilt):
    result = rebuilt["result"]
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["restored"]["users"] >= 2
    assert report["restored"]["messages"] >= 8
    assert report["restored"]["database_users"] >= 2
    assert report["restored"]["ssh_host_keys"] >= 1
    assert all("seconds" in step for step in report["steps"])


def test_no_sender_was_told_no_and_the_hold_was_seen(rebuilt):
    replies = rebuilt["sender"].replies
    assert not [r for r in replies if r[3] >= 500], "a 5xx during the rebuild"
    assert any(stage == "rcpt" and code == 450 for _, _, stage, code in replies), \
        "no RCPT was deferred: the sender never met the inbound hold"


def test_every_accepted_mail_is_delivered_exactly_once(rebuilt, ssh, lab, alice):
    run, sender = rebuilt["run"], rebuilt["sender"]
    expected = {f"during {run} {n}" for n in sender.accepted}
    assert expected, "no mail was accepted"
    ssh("postqueue -f")

    def all_delivered():
        found = delivered(ssh, lab["mail_root"], alice["user"], f"during {run} ")
        return found if expected <= set(found) else None
    got = wait_for(all_delivered, timeout=120, interval=2,
                   what=f"{len(expected)} mails sent during the rebuild")
    assert {s: len(times) for s, times in got.items() if s in expected} == \
        {s: 1 for s in expected}


def test_uids_uidvalidity_and_flags_are_as_they_were(rebuilt, lab, alice, bob):
    accounts = {"alice": alice, "bob": bob}
    for (user, folder), recorded in rebuilt["before"]["imap"].items():
        imap = imaps(lab, accounts[user])
        try:
            uidvalidity, messages = folder_state(imap, folder, rebuilt["run"])
            # The mail sent during the rebuild arrived after it, with UIDs of its own.
            before = {uid: m for uid, m in messages.items() if not m[0].startswith("during ")}
            assert (uidvalidity, before) == recorded, (user, folder)
        finally:
            imap.logout()


def test_sieve_dkim_and_host_keys_are_as_they_were(rebuilt, ssh, lab, alice):
    before = rebuilt["before"]
    assert sieve_state(ssh, alice) == before["sieve"]
    assert dkim_public_key(ssh, lab) == before["dkim"]
    assert host_keys() == before["host_keys"]


def test_the_hold_is_over_main_cf_is_the_usual_one(rebuilt, ssh):
    main_cf = ssh("postconf -n").stdout
    assert "soft_bounce" not in main_cf and "defer_transports" not in main_cf
    assert "smtpd_recipient_restrictions = permit_mynetworks" in main_cf
