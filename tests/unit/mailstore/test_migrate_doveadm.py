"""Through Dovecot's eyes: UIDs, UIDVALIDITY and flags survive a migration (doveadm, no server).

doveadm runs as the mail owner (`nobody` here, never root) with USER/HOME set and
``-o mail_location=maildir:...`` (docs/architecture.md). The mailbox is made by Dovecot itself
(save, create, flags, expunge), changed again while the live copy is done (inside the quiesce hook,
i.e. after the live passes and before the final delta), migrated by root with --copy, then
read from the target; once more after deleting the target's index files, so that the UIDs
can only come from the migrated dovecot-uidlist.
"""
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from mailstore import migrate as migration

DOVEADM = shutil.which("doveadm")
NOBODY = 65534

pytestmark = [
    pytest.mark.skipif(DOVEADM is None, reason="doveadm (dovecot-core) not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run doveadm as nobody"),
]


@pytest.fixture
def base():
    d = tempfile.mkdtemp(prefix="mailstore-doveadm-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d)


def _as_nobody():
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def doveadm_cmd(base, root, *args):
    home = os.path.join(root, "alice")
    return ["env", "-i", "PATH=/usr/bin:/bin", "USER=nobody", "HOME=" + home, DOVEADM,
            "-c", os.path.join(base, "dovecot.conf"),
            "-o", "mail_location=maildir:" + os.path.join(home, "Maildir")] + list(args)


def doveadm(base, root, *args, stdin=None):
    proc = subprocess.run(doveadm_cmd(base, root, *args), input=stdin, cwd=base,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          preexec_fn=_as_nobody)
    assert proc.returncode == 0, (args, proc.stderr)
    return proc.stdout.decode()


def imap_view(base, root):
    """What a client would see: per mailbox UIDVALIDITY/UIDNEXT/count, per message UID+flags."""
    status = doveadm(base, root, "mailbox", "status", "uidvalidity uidnext messages", "*")
    fetched = doveadm(base, root, "-f", "tab", "fetch", "mailbox uid flags guid", "all")
    rows = []
    for line in fetched.splitlines()[1:]:
        mailbox, uid, flags, guid = line.split("\t")
        # \Recent belongs to the session that first sees a message, not to the mailbox
        flags = " ".join(sorted(f for f in flags.split() if f != "\\Recent"))
        rows.append((mailbox, int(uid), flags, guid))
    return sorted(status.splitlines()), sorted(rows)


def _shell(base, root, *args, stdin=None):
    """A shell command (for a hook) that runs doveadm as nobody."""
    cmd = " ".join("'%s'" % a.replace("'", "'\\''") for a in doveadm_cmd(base, root, *args))
    cmd = "setpriv --reuid=%d --regid=%d --clear-groups %s" % (NOBODY, NOBODY, cmd)
    if stdin is not None:
        cmd = "printf '%s' | %s" % (stdin, cmd)
    return "cd %s && %s" % (base, cmd)


def test_uids_uidvalidity_and_flags_survive_migration(base):
    src, dst, run = (os.path.join(base, d) for d in ("src", "dst", "run"))
    for d in (src, dst, run, os.path.join(src, "alice")):
        os.mkdir(d)
    with open(os.path.join(base, "dovecot.conf"), "w") as f:
        f.write("ssl = no\nlog_path = /dev/stderr\nbase_dir = %s\n" % run)
    for d in (run, os.path.join(src, "alice")):
        os.chown(d, NOBODY, NOBODY)

    for i in range(1, 6):
        doveadm(base, src, "save", "-m", "INBOX",
                stdin=b"Subject: m%d\r\n\r\nbody %d\r\n" % (i, i))
    doveadm(base, src, "mailbox", "create", "Sent", "Archive.2024")
    doveadm(base, src, "save", "-m", "Sent", stdin=b"Subject: s\r\n\r\nsent\r\n")
    doveadm(base, src, "save", "-m", "Archive.2024", stdin=b"Subject: a\r\n\r\nold\r\n")
    doveadm(base, src, "flags", "add", "\\Seen \\Flagged", "mailbox", "INBOX", "uid", "2")
    doveadm(base, src, "flags", "add", "\\Seen", "mailbox", "INBOX", "uid", "3:4")
    doveadm(base, src, "expunge", "mailbox", "INBOX", "uid", "1")

    # Changes between the live passes and the final delta, made by Dovecot itself.
    late = " && ".join([
        _shell(base, src, "flags", "add", "\\Answered", "mailbox", "INBOX", "uid", "2"),
        _shell(base, src, "flags", "remove", "\\Seen", "mailbox", "INBOX", "uid", "3"),
        _shell(base, src, "expunge", "mailbox", "INBOX", "uid", "4"),
        _shell(base, src, "save", "-m", "INBOX", stdin="Subject: late\\r\\n\\r\\nlate\\r\\n"),
    ])
    result = migration.migrate(src, dst, force_copy=True, quiesce=late, resume="true",
                               hook_output=sys.stderr)
    assert result.ok, result.as_dict()
    alice = result.users[0]
    assert alice.renamed >= 2 and alice.deleted == 1      # flag changes were renames

    expected = imap_view(base, src)
    statuses, rows = expected
    assert len(rows) == 6 and any(r[1] == 6 and r[0] == "INBOX" for r in rows)
    assert imap_view(base, dst) == expected

    # UIDs must come from the migrated dovecot-uidlist alone, not from the copied indexes
    for dirpath, _dirs, files in os.walk(os.path.join(dst, "alice")):
        for name in files:
            if name.startswith("dovecot.index") or name.startswith("dovecot.list.index"):
                os.unlink(os.path.join(dirpath, name))
    assert imap_view(base, dst) == expected
