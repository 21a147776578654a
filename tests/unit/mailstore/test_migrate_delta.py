"""The cut-over's per-directory message state (mailstore.migrate_delta) and the scan it
builds on (maildir.scan_user_skeleton): what may be reused, what must be listed again."""
import os

from mailstore import maildir

import _migrate_trees as trees

MSGS = [("", "new", "1.M1.h,S=3", "", b"abc", 1_500_000_000_000_000_000),
        ("", "cur", "2.M2.h,S=5", "S", b"hello", 1_500_000_001_000_000_000),
        (".Sent", "cur", "3.M3.h", "RS", b"", 1_500_000_002_000_000_000)]


def test_skeleton_scan_is_scan_without_messages(tmp_path):
    root = str(tmp_path)
    md = trees.make_user(root, "alice", MSGS)
    trees.write(os.path.join(md, "tmp", "99.delivering"), b"half")
    os.symlink("/etc/shadow", os.path.join(md, "cur", "evil:2,S"))
    full = maildir.scan_user(root, "alice")
    skel = maildir.scan_user_skeleton(root, "alice")
    assert skel.messages == []
    # the symlink in cur/ is an anomaly only a listing of cur/ finds
    assert [a.relpath for a in full.anomalies] == ["Maildir/cur/evil:2,S"]
    assert skel.anomalies == []
    assert skel._replace(scanned_ns=0) == full._replace(messages=[], anomalies=[],
                                                         scanned_ns=0)
    assert [e.relpath for e in skel.tmp_files] == ["Maildir/tmp/99.delivering"]
