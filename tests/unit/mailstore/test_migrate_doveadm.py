"""Through Dovecot's eyes: UIDs, UIDVALIDITY and flags survive a migration (doveadm, no server).

doveadm runs as the mail owner (`nobody` here, never root) with USER/HOME set and
``-o mail_location=maildir:...`` (docs/architecture.md). The mailbox is made by Dovecot itself
(save, create, flags, expunge), changed again while the live copy is done (inside the quiesce hook,
i.e. after the live passes and before the final delta), migrated by root with --copy, then
read from the target; once more after deleting the target's index files, so that the UIDs
can only come from the migrated dovecot-uidlist.
"""
import os
import sys

from mailstore import migrate as migration
from tests.harness import NEEDS_DOVEADM, doveadm_shell, imap_view, make_mailbox
from tests.harness import dovecot_base  # noqa: F401  (the fixture `base`)

pytestmark = NEEDS_DOVEADM


def test_uids_uidvalidity_and_flags_survive_migration(base):
    src, dst = os.path.join(base, "src"), os.path.join(base, "dst")
    os.mkdir(dst)
    make_mailbox(base, src)

    # Changes between the live passes and the final delta, made by Dovecot itself.
    late = " && ".join([
        doveadm_shell(base, src, "flags", "add", "\\Answered", "mailbox", "INBOX", "uid", "2"),
        doveadm_shell(base, src, "flags", "remove", "\\Seen", "mailbox", "INBOX", "uid", "3"),
        doveadm_shell(base, src, "expunge", "mailbox", "INBOX", "uid", "4"),
        doveadm_shell(base, src, "save", "-m", "INBOX",
                      stdin="Subject: late\\r\\n\\r\\nlate\\r\\n"),
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
