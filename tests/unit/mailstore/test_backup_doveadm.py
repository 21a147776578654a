"""Through Dovecot's eyes: a restore keeps UIDs, UIDVALIDITY and flags; --merge adds new UIDs.

The mailbox is made by Dovecot itself (doveadm as `nobody`, never root, no server running;
see docs/architecture.md), backed up by root, restored into an empty root and read back with
doveadm.
Index files are not in a backup, so the UIDs can only come from the restored dovecot-uidlist.
"""
import os
import shutil
import subprocess
import tempfile

import pytest

from mailstore import backup

DOVEADM = shutil.which("doveadm")
NOBODY = 65534

pytestmark = [
    pytest.mark.skipif(DOVEADM is None, reason="doveadm (dovecot-core) not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run doveadm as nobody"),
]


@pytest.fixture
def base():
    d = tempfile.mkdtemp(prefix="mailstore-backup-doveadm-")
    os.chmod(d, 0o755)
    os.mkdir(os.path.join(d, "run"))
    os.chown(os.path.join(d, "run"), NOBODY, NOBODY)
    with open(os.path.join(d, "dovecot.conf"), "w") as f:
        f.write("ssl = no\nlog_path = /dev/stderr\nbase_dir = %s\n" % os.path.join(d, "run"))
    yield d
    shutil.rmtree(d)


def _as_nobody():
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def doveadm(base, root, *args, stdin=None):
    home = os.path.join(root, "alice")
    cmd = ["env", "-i", "PATH=/usr/bin:/bin", "USER=nobody", "HOME=" + home, DOVEADM,
           "-c", os.path.join(base, "dovecot.conf"),
           "-o", "mail_location=maildir:" + os.path.join(home, "Maildir")] + list(args)
    proc = subprocess.run(cmd, input=stdin, cwd=base, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, preexec_fn=_as_nobody)
    assert proc.returncode == 0, (args, proc.stderr)
    return proc.stdout.decode()


def imap_view(base, root):
    """Per mailbox UIDVALIDITY/UIDNEXT/count, per message mailbox, UID, flags, GUID."""
    status = doveadm(base, root, "mailbox", "status", "uidvalidity uidnext messages", "*")
    rows = []
    for line in doveadm(base, root, "-f", "tab", "fetch", "mailbox uid flags guid",
                        "all").splitlines()[1:]:
        mailbox, uid, flags, guid = line.split("\t")
        flags = " ".join(sorted(f for f in flags.split() if f != "\\Recent"))
        rows.append((mailbox, int(uid), flags, guid))
    return sorted(status.splitlines()), sorted(rows)


def _make_mailbox(base, src):
    os.makedirs(os.path.join(src, "alice"))
    os.chown(os.path.join(src, "alice"), NOBODY, NOBODY)
    for i in range(1, 6):
        doveadm(base, src, "save", "-m", "INBOX",
                stdin=b"Subject: m%d\r\nFrom: bob@example.org\r\n\r\nbody %d\r\n" % (i, i))
    doveadm(base, src, "mailbox", "create", "Sent", "Archive.2024")
    doveadm(base, src, "save", "-m", "Sent", stdin=b"Subject: s\r\n\r\nsent\r\n")
    doveadm(base, src, "save", "-m", "Archive.2024", stdin=b"Subject: a\r\n\r\nold\r\n")
    doveadm(base, src, "flags", "add", "\\Seen \\Flagged", "mailbox", "INBOX", "uid", "2")
    doveadm(base, src, "flags", "add", "\\Seen", "mailbox", "INBOX", "uid", "3:4")
    doveadm(base, src, "expunge", "mailbox", "INBOX", "uid", "1")


def test_restore_keeps_uids_uidvalidity_and_flags(base):
    src, dst = os.path.join(base, "src"), os.path.join(base, "dst")
    _make_mailbox(base, src)
    expected = imap_view(base, src)
    repo = os.path.join(base, "repo")
    backup.init(repo, key_file=os.path.join(base, "key"))
    snap = backup.run(repo, src, key_file=os.path.join(base, "key"))
    assert not snap["warnings"]
    backup.restore(repo, "latest", dst, key_file=os.path.join(base, "key"))
    assert not [f for _d, _s, files in os.walk(dst) for f in files
                if f.startswith("dovecot.index") or f.startswith("dovecot.list.index")]
    assert imap_view(base, dst) == expected
    statuses, rows = expected
    assert len(rows) == 6 and ("INBOX", 2, "\\Flagged \\Seen", rows[1][3]) in rows


def test_merge_brings_back_an_expunged_message_with_a_new_uid(base):
    src = os.path.join(base, "src")
    _make_mailbox(base, src)
    repo = os.path.join(base, "repo")
    backup.init(repo)
    backup.run(repo, src)
    before_statuses, before = imap_view(base, src)
    doveadm(base, src, "expunge", "mailbox", "INBOX", "uid", "3")
    # the user goes on: a flag change after the backup must survive the merge
    doveadm(base, src, "flags", "add", "\\Answered", "mailbox", "INBOX", "uid", "5")
    _statuses, live = imap_view(base, src)
    result = backup.restore(repo, "latest", src, user="alice", folder="INBOX", merge=True)
    assert result["messages"] == 1
    _statuses, after = imap_view(base, src)
    assert set(live) <= set(after)                          # nothing that was there changed
    new = sorted(set(after) - set(live))
    lost_guid = [r[3] for r in before if r[:2] == ("INBOX", 3)][0]
    assert len(new) == 1 and new[0][3] == lost_guid          # the same message is back ...
    assert new[0][1] > max(r[1] for r in live if r[0] == "INBOX")   # ... with a new UID
