"""`python -m operations.upgrade inventories/lab.py cutover`, then `rollback`, in the lab, while
mail keeps arriving: the successor `email-next` (trixie, built by `prepare` as in
tests/lab/test_upgrade.py) takes the service at `email`'s address, and gives it back.

Before: the lab's mail is moved to the data volume (production's state before an upgrade;
the lab inventory reads CACERT_LAB_MAIL_ROOT), alice gets flags, a keyword, a folder, an
expunged message and a sieve script, bob a flag (mailclients.mark_up), and a backup is made (the gate's backup check reads its age). During each handover a thread
sends numbered mail over port 25 every 0.25 s (a refused connection is retried, as a sending
MTA would; a 5xx is a finding) and another logs in over IMAP every 0.5 s. After each: every
message delivered exactly once, no 5xx (how long delivery waited and IMAP was away are
printed: goals 60 s and 30 s), UIDVALIDITY, UIDs and flags unchanged, the SSH host key
fingerprints and the DKIM public key unchanged, mail over 25 read over IMAPS and POP3S,
submission, send-as refused and the sieve script filing mail; after the cut-over the
successor (trixie) answers on the old address and a table made in its cacertusers reaches the
old container with the rollback.

The lab lock is held for the whole module. At the end (also after a failure): a rollback if
the cut-over left `email-prev`, the successor destroyed, the mail moved back to
/home/mailboxes (tests/lab/test_zz_migration.py's restore).
The upgrade matters from bullseye (LAB_RELEASES); CACERT_LAB_ANY_RELEASE=1 runs it anywhere.
"""
import json
import os
import smtplib
import subprocess
import sys
import threading
import time
import uuid

import pytest

from conftest import REPO
from lab import lock
from lab import topology as t
from mailclients import (ManageSieve, deploy_failure, delivered, folder_state, imaps, mark_up,
                         message, pop3s, smtp_25, submission, wait_for)
from test_upgrade import MARKER, SUCCESSOR
from test_zz_migration import (NEW_ROOT, InDoubt, deliver_to_each, dovecot_reads, restore,
                               send)

LAB_RELEASES = ("bullseye",)
PREVIOUS = f"{t.CONTAINER}-prev"
# The lab inventory with the mail on the data volume, for every command of this module.
ENV = {**os.environ, "CACERT_LAB_MAIL_ROOT": NEW_ROOT,
       "CACERT_EMAIL_SECRETS": os.environ.get("CACERT_EMAIL_SECRETS",
                                              str(REPO / ".lab" / "secrets"))}
# The goals (delivery held at most 60 s, IMAP away at most 30 s) are figures, printed by
# the tests below, not assertions: a test asserts what users see happen.
PROBE_TABLE = "cutover_probe"
# trixie's client may have only MariaDB's own name.
MYSQL = "$(command -v mariadb || echo mysql)"


def _lxc_state(name):
    result = subprocess.run(["lxc-info", "-n", name, "-s", "-H"], capture_output=True,
                            text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def _release(name):
    text = open(f"/var/lib/lxc/{name}/rootfs/etc/os-release").read()
    return next(line.split("=", 1)[1] for line in text.splitlines()
                if line.startswith("VERSION_CODENAME="))


def _upgrade(command, *args):
    """`python -m operations.upgrade --json inventories/lab.py COMMAND` (the caller holds
    the lab lock): (exit status, its JSON or None, the whole output)."""
    result = subprocess.run(
        [sys.executable, "-m", "operations.upgrade", "--json", "inventories/lab.py",
         command, *args], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=3600)
    try:
        report = json.loads(result.stdout)
    except ValueError:
        report = None
    return result.returncode, report, result.stdout + result.stderr[-6000:]


def _deploy_email():
    return subprocess.run(
        [str(REPO / ".venv" / "bin" / "pyinfra"), "-y", "inventories/lab.py", "deploy.py",
         "--limit", "email"], cwd=REPO, env=ENV, capture_output=True, text=True,
        timeout=1800)


def _destroy_successor():
    subprocess.run(["lxc-stop", "-n", SUCCESSOR, "-t", "60"], capture_output=True)
    subprocess.run(["lxc-destroy", "-n", SUCCESSOR], capture_output=True)


def _fingerprints():
    scan = subprocess.run(["ssh-keyscan", "-T", "10", t.CONTAINER_ADDRESS],
                          capture_output=True, text=True).stdout
    listed = subprocess.run(["ssh-keygen", "-lf", "-"], input=scan, capture_output=True,
                            text=True).stdout
    return sorted(line.split()[1] for line in listed.splitlines())


def _dkim_public_keys(ssh):
    return ssh("for k in /etc/opendkim/keys/*/*.private; do openssl pkey -in \"$k\" "
               "-pubout; done").stdout


# Files mail whose subject holds the token into its own folder: it must keep doing so on the
# successor and after the rollback.
SIEVE_TOKEN = f"sieve{uuid.uuid4().hex[:8]}"
SIEVE_SCRIPT = """require ["fileinto", "mailbox"];
if header :contains "subject" "{token}" {{
  fileinto :create "Sieved-{token}";
}}
"""


def _sieve(lab, account, script):
    """Upload and activate `script` for `account` over ManageSieve; None: remove it."""
    sieve = ManageSieve(lab)
    try:
        sieve.starttls()
        sieve.authenticate(account["email"], account["password"])
        if script is None:
            sieve.command('SETACTIVE ""')
            sieve.command('DELETESCRIPT "cutover"')
        else:
            sieve.putscript("cutover", script)
            sieve.command('SETACTIVE "cutover"')
    finally:
        sieve.close()


def _seen_over_imap(lab, account, folder, marker):
    def found():
        imap = imaps(lab, account)
        try:
            typ, _ = imap.select(f'"{folder}"', readonly=True)
            if typ != "OK":
                return False
            typ, data = imap.search(None, "SUBJECT", marker)
            return typ == "OK" and bool(data[0].split())
        finally:
            imap.logout()
    wait_for(found, timeout=60, what=f"{marker} in {account['user']}'s {folder}")


def _mail_path_works(lab, alice, bob):
    """What users do, on whichever container serves: mail over 25 read over IMAPS and POP3S,
    submission, send-as refused for another user's address, the sieve script filing mail.
    Subjects hold no run id of this module, so the mailbox comparisons above ignore them."""
    marker, msg = message("someone@example.net", alice["email"])
    with smtp_25(lab) as smtp:
        smtp.send_message(msg)
    _seen_over_imap(lab, alice, "INBOX", marker)
    pop = pop3s(lab, alice)
    try:
        count, _ = pop.stat()
        bodies = [b"\n".join(pop.retr(i)[1]) for i in range(max(1, count - 20), count + 1)]
        assert any(marker.encode() in body for body in bodies), f"{marker} not over POP3S"
    finally:
        pop.quit()
    marker, msg = message(alice["email"], bob["email"])
    with submission(lab, alice) as smtp:
        smtp.send_message(msg)
    _seen_over_imap(lab, bob, "INBOX", marker)
    _, msg = message(alice["email"], bob["email"])
    with submission(lab, bob) as smtp:
        with pytest.raises((smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused)):
            smtp.send_message(msg)
    marker, msg = message("someone@example.net", alice["email"],
                          subject=f"{SIEVE_TOKEN} filed")
    with smtp_25(lab) as smtp:
        smtp.send_message(msg)
    _seen_over_imap(lab, alice, f"Sieved-{SIEVE_TOKEN}", SIEVE_TOKEN)


class Sender(threading.Thread):
    """Numbered mail to alice and bob in turns every 0.25 s: `accepted` {n: (recipient,
    time)}; a refused connection or a 4xx is retried with the same number (a sending MTA
    retries); a 5xx is recorded in `rejected` and never retried; a connection lost after the
    final dot is recorded in `in_doubt` {n: recipient} (it may be queued: the next mail takes
    the next number, so that a second copy could not be told from a duplicate)."""

    def __init__(self, lab, run, recipients, interval=0.25):
        super().__init__(daemon=True)
        self.lab, self.run_id, self.recipients, self.interval = lab, run, recipients, interval
        self.stop = threading.Event()
        self.accepted, self.rejected, self.retried, self.in_doubt = {}, [], 0, {}

    def run(self):
        n = 0
        while not self.stop.is_set():
            recipient = self.recipients[n % len(self.recipients)]
            try:
                send(self.lab, recipient, f"during {self.run_id} {n}")
            except InDoubt:
                self.in_doubt[n] = recipient
                n += 1
            except (smtplib.SMTPResponseException, smtplib.SMTPRecipientsRefused) as exc:
                codes = ([exc.smtp_code] if isinstance(exc, smtplib.SMTPResponseException)
                         else [code for code, _ in exc.recipients.values()])
                if any(code >= 500 for code in codes):
                    self.rejected.append(f"{n}: {exc!r}")
                    n += 1
                else:
                    self.retried += 1
            except (OSError, smtplib.SMTPException):
                self.retried += 1     # not listening (the containers change): try again
            else:
                self.accepted[n] = (recipient, time.time())
                n += 1
            self.stop.wait(self.interval)


class ImapProbe(threading.Thread):
    """An IMAP login as alice every 0.5 s: `longest_gap`, the longest time between two
    successful logins."""

    def __init__(self, lab, account):
        super().__init__(daemon=True)
        self.lab, self.account = lab, account
        self.stop = threading.Event()
        self.longest_gap, self.failures = 0.0, 0

    def run(self):
        last = time.monotonic()
        while not self.stop.is_set():
            try:
                imaps(self.lab, self.account).logout()
            except Exception:    # noqa: BLE001 (unavailable: that is what is measured)
                self.failures += 1
            else:
                now = time.monotonic()
                self.longest_gap = max(self.longest_gap, now - last)
                last = now
            self.stop.wait(0.5)


def _during(lab, ssh, command, run):
    """`command` while mail flows and IMAP is probed: (exit status, report, output, sender,
    probe)."""
    alice, bob = lab["accounts"][:2]
    sender = Sender(lab, run, [alice["email"], bob["email"]])
    probe = ImapProbe(lab, alice)
    sender.start()
    probe.start()
    time.sleep(2)
    code, report, output = _upgrade(command)
    time.sleep(3)
    sender.stop.set()
    probe.stop.set()
    sender.join(timeout=60)
    probe.join(timeout=60)
    return code, report, output, sender, probe


def _inbox_subjects(lab, account, prefix):
    imap = imaps(lab, account)
    imap.select("INBOX", readonly=True)
    _, data = imap.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    imap.logout()
    subjects = [item[1].decode().split(":", 1)[1].strip() for item in data
                if isinstance(item, tuple)]
    return [s for s in subjects if s.startswith(prefix)]


def _check_delivery(lab, ssh, sender, run):
    """Every accepted mail in its recipient's INBOX exactly once, one in doubt at most once;
    the longest wait."""
    alice, bob = lab["accounts"][:2]
    users = {alice["email"]: alice, bob["email"]: bob}
    expected = {f"during {run} {n}": rcpt for n, (rcpt, _) in sender.accepted.items()}
    ssh("postqueue -f")

    def all_delivered():
        got = {}
        for account in users.values():
            got.update(delivered(ssh, NEW_ROOT, account["user"], f"during {run} "))
        return got if all(s in got for s in expected) else None
    got = wait_for(all_delivered, timeout=180, interval=2,
                   what=f"{len(expected)} messages sent during the {run}")
    seen = {}
    for email, account in users.items():
        for subject in _inbox_subjects(lab, account, f"during {run} "):
            seen.setdefault(subject, []).append(email)
    in_doubt = {f"during {run} {n}": rcpt for n, rcpt in sender.in_doubt.items()}
    wrong = {s: r for s, r in seen.items() if r != [expected.get(s) or in_doubt.get(s)]}
    assert not wrong, f"messages not seen exactly once, for their recipient: {wrong}"
    assert set(seen) - set(in_doubt) == set(expected)
    sent = {f"during {run} {n}": when for n, (_, when) in sender.accepted.items()}
    return max(max(got[s]) - sent[s] for s in sent)


@pytest.fixture(scope="module")
def upgrade_lab(lab, ssh):
    """The lab lock for the module; mail on the data volume; the successor prepared; the
    state before the cut-over recorded. Afterwards: rolled back if needed, the successor
    destroyed, the mail back in /home/mailboxes."""
    alice, bob = lab["accounts"][:2]
    run = f"U{uuid.uuid4().hex[:8]}"
    folder = f"Archive-{run}"
    with lock.held():
        try:
            if _lxc_state(SUCCESSOR) is not None and _lxc_state(PREVIOUS) is None:
                _destroy_successor()   # a leftover of an interrupted run
            # The serving container owns the volume (test_upgrade.py says why it is written).
            subprocess.run(["sh", "-c", f"[ -e {MARKER} ] || echo {t.CONTAINER} > {MARKER}"],
                           check=True)
            deliver_to_each(lab, ssh, (alice, bob), run)
            moved = _deploy_email()
            assert moved.returncode == 0, deploy_failure(moved)
            assert dovecot_reads(ssh, lab, NEW_ROOT)

            for account in (alice, bob):
                for i in range(4):
                    send(lab, account["email"], f"before {run} {i}")
            for account in (alice, bob):
                wait_for(lambda a=account: len(delivered(ssh, NEW_ROOT, a["user"],
                                                         f"before {run}")) == 4,
                         timeout=60, what=f"4 messages for {account['user']}")
            before = mark_up(lab, alice, bob, run, folder)
            _sieve(lab, alice, SIEVE_SCRIPT.format(token=SIEVE_TOKEN))
            # A fresh backup: the gate's status check reads its age.
            ssh("/usr/local/sbin/mailstore-backup-job")

            code, report, output = _upgrade("prepare", "--release", "trixie")
            assert code == 0, output
            yield {"run": run, "before": before, "fingerprints": _fingerprints(),
                   "dkim": _dkim_public_keys(ssh)}
        finally:
            problems = []
            if _lxc_state(PREVIOUS) is not None:
                code, _, output = _upgrade("rollback")
                if code != 0:
                    problems.append(f"rollback at the end failed:\n{output}")
            if _lxc_state(PREVIOUS) is None:
                _destroy_successor()
            try:
                _sieve(lab, alice, None)
            except Exception as exc:    # noqa: BLE001 (the clean-up goes on)
                problems.append(f"removing the sieve script: {exc!r}")
            try:
                restore(ssh, lab)
            except AssertionError as exc:
                problems.append(str(exc))
            assert not problems, "\n".join(problems)


def _print_window(name, handover, longest):
    """The handover's window as figures (bench/cutover.py reads this line): a test asserts
    what users see, the goals are not assertions."""
    sender, probe = handover["sender"], handover["probe"]
    print(f"\nwindow {name}: held {handover['report']['held_seconds']} s, IMAP away at most "
          f"{probe.longest_gap:.1f} s, longest wait {longest:.1f} s, {len(sender.accepted)} "
          f"mails, {sender.retried} retried sends, {len(sender.in_doubt)} in doubt")


def _same_mailbox_state(lab, upgrade_lab):
    accounts = {a["user"]: a for a in lab["accounts"]}
    for (user, box), (uidvalidity, messages) in upgrade_lab["before"].items():
        imap = imaps(lab, accounts[user])
        try:
            now_validity, now = folder_state(imap, box, upgrade_lab["run"])
        finally:
            imap.logout()
        assert now_validity == uidvalidity, f"{user} {box}: UIDVALIDITY changed"
        old = {uid: m for uid, m in now.items() if "during" not in m[0]}
        assert old == messages, f"{user} {box}: UIDs or flags changed"


def test_a_dry_cutover_lists_the_steps_and_changes_nothing(upgrade_lab):
    code, report, output = _upgrade("cutover", "--dry")
    assert code == 0, output
    names = [s["step"] for s in report["steps"]]
    assert "rename and configure" in names and names[-1] == "resume delivery on email"
    assert _lxc_state(SUCCESSOR) == "RUNNING" and _lxc_state(PREVIOUS) is None
    assert open(MARKER).read().strip() == t.CONTAINER


@pytest.fixture(scope="module")
def cut_over(lab, ssh, upgrade_lab):
    code, report, output, sender, probe = _during(lab, ssh, "cutover",
                                                  f"cutover-{upgrade_lab['run']}")
    return {"code": code, "report": report, "output": output, "sender": sender,
            "probe": probe, "run": f"cutover-{upgrade_lab['run']}"}


def test_cutover_succeeds_and_its_gate_passes(cut_over):
    assert cut_over["code"] == 0, cut_over["output"]
    steps = cut_over["report"]["steps"]
    for step in steps:
        print(f"{step['step']}: {step['seconds']} s")
    assert steps[0]["step"] == "checks before cut-over"
    assert steps[-1]["step"] == "status (gate)" and steps[-1]["ok"]
    print(f"held {cut_over['report']['held_seconds']} s, IMAP away at most "
          f"{cut_over['probe'].longest_gap:.1f} s")


def test_the_successor_serves_on_the_old_address(cut_over, ssh):
    assert cut_over["code"] == 0, cut_over["output"]
    # `ssh` reaches 10.0.3.19 with the lab's known host keys: the successor kept them.
    assert "VERSION_CODENAME=trixie" in ssh("cat /etc/os-release").stdout
    assert _lxc_state(t.CONTAINER) == "RUNNING" and _release(t.CONTAINER) == "trixie"
    assert _lxc_state(PREVIOUS) == "STOPPED" and _release(PREVIOUS) == "bullseye"
    assert "lxc.start.auto = 0" in open(f"/var/lib/lxc/{PREVIOUS}/config").read()
    assert open(MARKER).read().strip() == t.CONTAINER
    assert ssh("systemctl is-active dovecot icinga2").stdout.split() == ["active", "active"]


def test_no_mail_is_lost_or_doubled_during_the_cutover(cut_over, lab, ssh, upgrade_lab):
    assert cut_over["code"] == 0, cut_over["output"]
    sender, probe = cut_over["sender"], cut_over["probe"]
    assert not sender.rejected, f"5xx during the cut-over: {sender.rejected[:5]}"
    longest = _check_delivery(lab, ssh, sender, cut_over["run"])
    _print_window("cut-over", cut_over, longest)
    _same_mailbox_state(lab, upgrade_lab)


def test_host_keys_and_dkim_key_are_unchanged_after_the_cutover(cut_over, ssh, upgrade_lab):
    assert cut_over["code"] == 0, cut_over["output"]
    assert _fingerprints() == upgrade_lab["fingerprints"]
    assert _dkim_public_keys(ssh) == upgrade_lab["dkim"]


def test_the_mail_path_and_the_sieve_script_work_on_the_successor(cut_over, lab, alice, bob):
    assert cut_over["code"] == 0, cut_over["output"]
    _mail_path_works(lab, alice, bob)


def test_a_second_cutover_is_refused(cut_over):
    assert cut_over["code"] == 0, cut_over["output"]
    code, _, output = _upgrade("cutover")
    assert code == 2
    assert "already cut over: email is the successor, the old container is email-prev" \
        in output


@pytest.fixture(scope="module")
def rolled_back(lab, ssh, cut_over, upgrade_lab):
    assert cut_over["code"] == 0, cut_over["output"]
    # An account change on the successor after the cut-over: it must reach the old one.
    ssh(f"{MYSQL} cacertusers -e 'CREATE TABLE {PROBE_TABLE} (n INT); "
        f"INSERT INTO {PROBE_TABLE} VALUES (42)'")
    code, report, output, sender, probe = _during(lab, ssh, "rollback",
                                                  f"rollback-{upgrade_lab['run']}")
    return {"code": code, "report": report, "output": output, "sender": sender,
            "probe": probe, "run": f"rollback-{upgrade_lab['run']}"}


def test_rollback_gives_the_service_back_to_the_old_container(rolled_back, ssh):
    assert rolled_back["code"] == 0, rolled_back["output"]
    assert rolled_back["report"]["steps"][-1]["step"] == "status (gate)"
    assert "VERSION_CODENAME=bullseye" in ssh("cat /etc/os-release").stdout
    assert _lxc_state(t.CONTAINER) == "RUNNING" and _release(t.CONTAINER) == "bullseye"
    assert _lxc_state(SUCCESSOR) == "STOPPED" and _lxc_state(PREVIOUS) is None
    assert open(MARKER).read().strip() == t.CONTAINER
    probe = ssh(f"{MYSQL} -N cacertusers -e 'SELECT n FROM {PROBE_TABLE}; "
                f"DROP TABLE {PROBE_TABLE}'").stdout.split()
    assert probe == ["42"], "the successor's database change did not come back"


def test_no_mail_is_lost_or_doubled_during_the_rollback(rolled_back, cut_over, lab, ssh,
                                                        upgrade_lab):
    assert rolled_back["code"] == 0, rolled_back["output"]
    sender, probe = rolled_back["sender"], rolled_back["probe"]
    assert not sender.rejected, f"5xx during the rollback: {sender.rejected[:5]}"
    longest = _check_delivery(lab, ssh, sender, rolled_back["run"])
    _print_window("rollback", rolled_back, longest)
    _same_mailbox_state(lab, upgrade_lab)
    # The mail delivered by the successor too: it lives on the volume, which both read.
    _check_delivery(lab, ssh, cut_over["sender"], cut_over["run"])


def test_host_keys_and_dkim_key_are_unchanged_after_the_rollback(rolled_back, ssh,
                                                                  upgrade_lab):
    assert rolled_back["code"] == 0, rolled_back["output"]
    assert _fingerprints() == upgrade_lab["fingerprints"]
    assert _dkim_public_keys(ssh) == upgrade_lab["dkim"]


def test_the_mail_path_and_the_sieve_script_work_after_the_rollback(rolled_back, lab, alice,
                                                                     bob):
    assert rolled_back["code"] == 0, rolled_back["output"]
    _mail_path_works(lab, alice, bob)
