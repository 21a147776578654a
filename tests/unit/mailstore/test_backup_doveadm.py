"""Through Dovecot's eyes: a restore keeps UIDs, UIDVALIDITY and flags; --merge adds new UIDs.

The mailbox is made by Dovecot itself (doveadm as `nobody`, never root, no server running;
see docs/architecture.md), backed up by root, restored into an empty root and read back with
doveadm.
Index files are not in a backup, so the UIDs can only come from the restored dovecot-uidlist.
"""
import os

from mailstore import backup
from tests.harness import NEEDS_DOVEADM, doveadm, imap_view, make_mailbox
from tests.harness import dovecot_base  # noqa: F401  (the fixture `base`)

pytestmark = NEEDS_DOVEADM


def test_restore_keeps_uids_uidvalidity_and_flags(base):
    src, dst = os.path.join(base, "src"), os.path.join(base, "dst")
    make_mailbox(base, src)
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
    make_mailbox(base, src)
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
