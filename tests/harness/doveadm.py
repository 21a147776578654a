"""Through Dovecot's eyes: doveadm on a Maildir tree, and what an IMAP client sees there.

doveadm runs as the mail owner (`nobody` here, never root; no server running) with USER/HOME
set and ``-o mail_location=maildir:ROOT/alice/Maildir`` (docs/architecture.md), so a test can
make a mailbox the way Dovecot does (save, create, flags, expunge) and read back UIDs,
UIDVALIDITY and flags after mailstore has copied, backed up or restored it.
"""
import os
import shutil
import subprocess

import pytest

from tests.harness.nobody import NOBODY, become_nobody, public_tmpdir

DOVEADM = shutil.which("doveadm")

# pytestmark for a module whose tests run doveadm
NEEDS_DOVEADM = [
    pytest.mark.skipif(DOVEADM is None, reason="doveadm (dovecot-core) not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run doveadm as nobody"),
]


@pytest.fixture(name="base")
def dovecot_base():
    """The fixture `base` for a test module that imports this: a directory nobody can traverse,
    with a minimal dovecot.conf and a base_dir (run/) that nobody owns; removed afterwards."""
    base = public_tmpdir("mailstore-doveadm-")
    run = os.path.join(base, "run")
    os.mkdir(run)
    os.chown(run, NOBODY, NOBODY)
    with open(os.path.join(base, "dovecot.conf"), "w") as f:
        f.write("ssl = no\nlog_path = /dev/stderr\nbase_dir = %s\n" % run)
    try:
        yield base
    finally:
        shutil.rmtree(base)


def doveadm_cmd(base, root, *args):
    """The argv of doveadm ARGS for the user alice whose Maildir is ROOT/alice/Maildir."""
    home = os.path.join(root, "alice")
    return ["env", "-i", "PATH=/usr/bin:/bin", "USER=nobody", "HOME=" + home, DOVEADM,
            "-c", os.path.join(base, "dovecot.conf"),
            "-o", "mail_location=maildir:" + os.path.join(home, "Maildir")] + list(args)


def doveadm(base, root, *args, stdin=None):
    """Run doveadm ARGS as nobody; its stdout (it must succeed)."""
    proc = subprocess.run(doveadm_cmd(base, root, *args), input=stdin, cwd=base,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          preexec_fn=become_nobody)
    assert proc.returncode == 0, (args, proc.stderr)
    return proc.stdout.decode()


def doveadm_shell(base, root, *args, stdin=None):
    """A shell command (for a hook) that runs doveadm ARGS as nobody."""
    cmd = " ".join("'%s'" % a.replace("'", "'\\''") for a in doveadm_cmd(base, root, *args))
    cmd = "setpriv --reuid=%d --regid=%d --clear-groups %s" % (NOBODY, NOBODY, cmd)
    if stdin is not None:
        cmd = "printf '%s' | %s" % (stdin, cmd)
    return "cd %s && %s" % (base, cmd)


def imap_view(base, root):
    """What a client would see: per mailbox UIDVALIDITY/UIDNEXT/count, per message mailbox,
    UID, flags and GUID."""
    status = doveadm(base, root, "mailbox", "status", "uidvalidity uidnext messages", "*")
    fetched = doveadm(base, root, "-f", "tab", "fetch", "mailbox uid flags guid", "all")
    rows = []
    for line in fetched.splitlines()[1:]:
        mailbox, uid, flags, guid = line.split("\t")
        # \Recent belongs to the session that first sees a message, not to the mailbox
        flags = " ".join(sorted(f for f in flags.split() if f != "\\Recent"))
        rows.append((mailbox, int(uid), flags, guid))
    return sorted(status.splitlines()), sorted(rows)


def make_mailbox(base, root):
    """ROOT/alice/Maildir made by Dovecot: INBOX with UIDs 2-5 (1 expunged; 2 \\Seen \\Flagged,
    3 and 4 \\Seen), Sent and Archive.2024 with one message each."""
    os.makedirs(os.path.join(root, "alice"))
    os.chown(os.path.join(root, "alice"), NOBODY, NOBODY)
    for i in range(1, 6):
        doveadm(base, root, "save", "-m", "INBOX",
                stdin=b"Subject: m%d\r\nFrom: bob@example.org\r\n\r\nbody %d\r\n" % (i, i))
    doveadm(base, root, "mailbox", "create", "Sent", "Archive.2024")
    doveadm(base, root, "save", "-m", "Sent", stdin=b"Subject: s\r\n\r\nsent\r\n")
    doveadm(base, root, "save", "-m", "Archive.2024", stdin=b"Subject: a\r\n\r\nold\r\n")
    doveadm(base, root, "flags", "add", "\\Seen \\Flagged", "mailbox", "INBOX", "uid", "2")
    doveadm(base, root, "flags", "add", "\\Seen", "mailbox", "INBOX", "uid", "3:4")
    doveadm(base, root, "expunge", "mailbox", "INBOX", "uid", "1")
