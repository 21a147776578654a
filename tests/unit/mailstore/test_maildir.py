"""mailstore.maildir: name parsing, folders, Dovecot files, and hostile or broken trees."""
import os
import subprocess
import sys
import textwrap

import pytest

from mailstore import maildir
from mailstore.maildir import MaildirError, InvalidUserName


def write(path, data=b"x", mtime=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    if mtime is not None:
        os.utime(path, ns=(mtime, mtime))


def make_maildir(base):
    md = os.path.join(base, "Maildir")
    for folder in ("", ".Sent", ".A.B"):
        for sub in ("new", "cur", "tmp"):
            os.makedirs(os.path.join(md, folder, sub), exist_ok=True)
    return md


# -- name parsing -----------------------------------------------------------------------------
@pytest.mark.parametrize("name,expected", [
    ("1700000000.M1P2.host,S=1234,W=1260:2,RS",
     ("1700000000.M1P2.host,S=1234,W=1260", "2,RS", 1234, 1260)),
    ("1700000000.M1P2.host", ("1700000000.M1P2.host", "", None, None)),
    ("1700000000.M1P2.host:2,", ("1700000000.M1P2.host", "2,", None, None)),
    ("a,S=12:2,S", ("a,S=12", "2,S", 12, None)),
    ("a,S=x,W=:2,S", ("a,S=x,W=", "2,S", None, None)),   # malformed fields: still a message
    ("a:1,experimental", ("a", "1,experimental", None, None)),
    ("a:2,S:extra", ("a", "2,S:extra", None, None)),
])
def test_parse_name(name, expected):
    assert maildir.parse_name(name) == expected


def test_message_flags_property():
    m = maildir.Message("", "cur", "u:2,FS", "u", "2,FS", 1, 0, 0, 0, 0o600, 1)
    assert m.flags == "FS"
    assert m.key == ("", "u")
    assert m.relpath == "Maildir/cur/u:2,FS"
    assert m._replace(info="1,x").flags == ""


@pytest.mark.parametrize("name", ["alice", "bob.smith", "a-b_c", "x@example.org", "ünï"])
def test_valid_user_names(name):
    assert maildir.check_user_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", ".hidden", "a/b", "/etc", "a\0b", "a\nb",
                                  "x" * 256, "bad\udcff"])
def test_invalid_user_names(name):
    with pytest.raises(InvalidUserName):
        maildir.check_user_name(name)


def test_scan_user_refuses_traversal(tmp_path):
    (tmp_path / "root").mkdir()
    with pytest.raises(InvalidUserName):
        maildir.scan_user(str(tmp_path / "root"), "..")


def test_folder_display_roundtrip():
    for folder in ("", ".Sent", ".A.B"):
        assert maildir.folder_from_display(maildir.folder_display(folder)) == folder
    for bad in ("", "../x", ".x", "a/b"):
        with pytest.raises(MaildirError):
            maildir.folder_from_display(bad)


# -- scanning ---------------------------------------------------------------------------------
def test_scan_folders_messages_and_dovecot_files(tmp_path):
    root = tmp_path / "root"
    home = root / "alice"
    md = make_maildir(str(home))
    write(os.path.join(md, "new", "1.M1.h,S=3"), b"abc", mtime=1_600_000_000_000_000_000)
    write(os.path.join(md, "cur", "2.M2.h:2,S"), b"hello")
    write(os.path.join(md, ".Sent", "cur", "3.M3.h:2,RS"), b"")          # zero-byte message
    write(os.path.join(md, ".A.B", "new", "4.M4.h"), b"1234")
    write(os.path.join(md, "tmp", "5.M5.h"), b"partial")
    for name in ("dovecot-uidlist", "dovecot-keywords", "subscriptions",
                 "dovecot-uidvalidity", "dovecot-uidvalidity.5f000000"):
        write(os.path.join(md, name), b"c")
    write(os.path.join(md, ".Sent", "maildirfolder"), b"")
    write(os.path.join(md, ".Sent", "dovecot-uidlist"), b"3 V1 N2\n")
    for name in ("dovecot.index", "dovecot.index.log", "dovecot.index.cache",
                 "dovecot.list.index", "dovecot.list.index.log"):
        write(os.path.join(md, name), b"i")
    write(str(home / "sieve" / "main.sieve"), b"keep;")
    os.symlink("sieve/main.sieve", str(home / ".dovecot.sieve"))

    tree = maildir.scan_user(str(root), "alice")
    assert tree.user == "alice" and tree.path == str(home)
    msgs = {m.relpath: m for m in tree.messages}
    assert set(msgs) == {"Maildir/new/1.M1.h,S=3", "Maildir/cur/2.M2.h:2,S",
                         "Maildir/.Sent/cur/3.M3.h:2,RS", "Maildir/.A.B/new/4.M4.h"}
    m1 = msgs["Maildir/new/1.M1.h,S=3"]
    assert (m1.folder, m1.subdir, m1.unique, m1.info, m1.size) == ("", "new", "1.M1.h,S=3", "", 3)
    assert m1.mtime_ns == 1_600_000_000_000_000_000
    assert msgs["Maildir/.Sent/cur/3.M3.h:2,RS"].size == 0
    assert msgs["Maildir/.Sent/cur/3.M3.h:2,RS"].flags == "RS"
    assert tree.message_bytes == 3 + 5 + 0 + 4
    assert tree.folders == ["", ".A.B", ".Sent"]
    assert [e.relpath for e in tree.tmp_files] == ["Maildir/tmp/5.M5.h"]
    assert sorted(e.relpath for e in tree.control) == sorted(
        ["Maildir/dovecot-uidlist", "Maildir/dovecot-keywords", "Maildir/subscriptions",
         "Maildir/dovecot-uidvalidity", "Maildir/dovecot-uidvalidity.5f000000",
         "Maildir/.Sent/maildirfolder", "Maildir/.Sent/dovecot-uidlist"])
    assert len(tree.index) == 5
    assert [e.relpath for e in tree.other] == ["sieve/main.sieve"]
    assert [(e.relpath, e.link) for e in tree.symlinks] == [(".dovecot.sieve", "sieve/main.sieve")]
    assert "" in {d.relpath for d in tree.directories}
    assert tree.maildir_present
    assert tree.anomalies == [] and tree.non_utf8 == []


def test_symlink_in_cur_is_reported_not_followed(tmp_path):
    md = make_maildir(str(tmp_path / "root" / "alice"))
    os.symlink("/etc/shadow", os.path.join(md, "cur", "evil:2,S"))
    os.symlink("/etc", os.path.join(md, "new", "evildir"))
    tree = maildir.scan_user(str(tmp_path / "root"), "alice")
    assert tree.messages == []
    kinds = {(a.relpath, a.kind) for a in tree.anomalies}
    assert kinds == {("Maildir/cur/evil:2,S", "symlink"), ("Maildir/new/evildir", "symlink")}
    assert "/etc/shadow" in tree.anomalies[0].detail + tree.anomalies[1].detail


def test_directory_where_message_should_be(tmp_path):
    md = make_maildir(str(tmp_path / "root" / "alice"))
    os.makedirs(os.path.join(md, "cur", "1.M1.h:2,S", "inner"))
    write(os.path.join(md, "cur", "1.M1.h:2,S", "inner", "x"))
    tree = maildir.scan_user(str(tmp_path / "root"), "alice")
    assert tree.messages == []
    assert [(a.relpath, a.kind) for a in tree.anomalies] == [("Maildir/cur/1.M1.h:2,S", "directory")]


def test_special_file_is_reported(tmp_path):
    md = make_maildir(str(tmp_path / "root" / "alice"))
    os.mkfifo(os.path.join(md, "new", "fifo"))
    tree = maildir.scan_user(str(tmp_path / "root"), "alice")
    assert [(a.relpath, a.kind) for a in tree.anomalies] == [("Maildir/new/fifo", "special")]


def test_non_utf8_names_kept_byte_exact(tmp_path):
    md = make_maildir(str(tmp_path / "root" / "alice"))
    raw = b"1.M1.h\xff\xfe:2,S"
    with open(os.path.join(os.fsencode(md), b"cur", raw), "wb") as f:
        f.write(b"m")
    tree = maildir.scan_user(str(tmp_path / "root"), "alice")
    assert len(tree.messages) == 1
    m = tree.messages[0]
    assert os.fsencode(m.name) == raw
    assert m.info == "2,S" and m.size == 1
    assert tree.non_utf8 == [m.relpath]
    assert os.path.exists(os.path.join(md, "cur", m.name))


def test_user_dir_symlink_refused(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    os.symlink("/etc", str(root / "mallory"))
    with pytest.raises(MaildirError, match="symbolic link"):
        maildir.scan_user(str(root), "mallory")
    users, anomalies = maildir.list_users(str(root))
    assert users == [] and [(a.relpath, a.kind) for a in anomalies] == [("mallory", "symlink")]


def test_list_users_skips_dot_entries_and_reports_bad(tmp_path):
    root = tmp_path / "root"
    for d in ("alice", "bob", ".mailstore-migrate"):
        (root / d).mkdir(parents=True)
    (root / "stray-file").write_bytes(b"")
    os.mkdir(os.path.join(os.fsencode(str(root)), b"bad\xff"))
    users, anomalies = maildir.list_users(str(root))
    assert users == ["alice", "bob"]
    assert sorted(a.kind for a in anomalies) == ["bad-user-name", "special"]
    assert [t.user for t in maildir.iter_users(str(root))] == ["alice", "bob"]


def test_lost_and_found_of_a_data_volume_is_not_a_user(tmp_path):
    # The root of the ext4 data volume holds root's 0700 lost+found: a check running as vmail
    # must not go UNKNOWN on it, and the migration must not try to move it.
    root = tmp_path / "root"
    (root / "lost+found").mkdir(parents=True, mode=0o700)
    (root / "alice" / "Maildir").mkdir(parents=True)
    users, anomalies = maildir.list_users(str(root))
    assert users == ["alice"] and anomalies == []


def test_missing_user(tmp_path):
    with pytest.raises(MaildirError, match="no such user"):
        maildir.scan_user(str(tmp_path), "nobody-here")


@pytest.fixture
def nobody_tmp():
    """A directory `nobody` can reach (pytest's own tmp_path is private to root)."""
    import pathlib
    import shutil
    import tempfile
    d = tempfile.mkdtemp(prefix="mailstore-test-")
    os.chmod(d, 0o755)
    yield pathlib.Path(d)
    for dirpath, dirnames, filenames in os.walk(d):
        os.chmod(dirpath, 0o755)
    shutil.rmtree(d)


NOBODY_SCAN = textwrap.dedent("""
    import json, os, sys
    from mailstore import maildir   # import first: the interpreter may live under /root
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
    t = maildir.scan_user(sys.argv[1], "alice")
    print(json.dumps({"messages": sorted(m.relpath for m in t.messages),
                      "anomalies": [list(a) for a in t.anomalies]}))
""")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to nobody")
def test_unreadable_folder_reported_as_nobody(nobody_tmp):
    """As root chmod 000 means nothing: scan as `nobody` in a subprocess for real."""
    tmp_path = nobody_tmp
    root = tmp_path / "root"
    md = make_maildir(str(root / "alice"))
    write(os.path.join(md, "cur", "1.M1.h:2,S"))
    write(os.path.join(md, ".Sent", "cur", "2.M2.h:2,S"))
    for dirpath, dirnames, filenames in os.walk(str(tmp_path)):
        os.chown(dirpath, 65534, 65534)
        for f in filenames:
            os.chown(os.path.join(dirpath, f), 65534, 65534)
    os.chmod(os.path.join(md, ".Sent", "cur"), 0)
    out = subprocess.run([sys.executable, "-c", NOBODY_SCAN, str(root)], check=True,
                         stdout=subprocess.PIPE, cwd=os.path.dirname(os.path.dirname(
                             os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
    import json
    result = json.loads(out.stdout)
    assert result["messages"] == ["Maildir/cur/1.M1.h:2,S"]
    assert result["anomalies"] == [["Maildir/.Sent/cur", "unreadable", "Permission denied"]]


# -- rescans ----------------------------------------------------------------------------------
OLD = 1_500_000_000_000_000_000


def _age_dirs(path):
    for dirpath, dirnames, filenames in os.walk(path):
        os.utime(dirpath, ns=(OLD, OLD))


def _same(a, b):
    return (sorted(a.messages), sorted(a.control), sorted(a.directories)) == \
        (sorted(b.messages), sorted(b.control), sorted(b.directories))


def test_rescan_equals_scan_after_changes(tmp_path):
    root = str(tmp_path / "root")
    md = make_maildir(os.path.join(root, "alice"))
    for i in range(5):
        write(os.path.join(md, "cur", "%d.M.h:2,S" % i), b"m%d" % i)
    write(os.path.join(md, "new", "9.M.h"), b"new")
    _age_dirs(root)
    first = maildir.scan_user(root, "alice")
    assert _same(maildir.rescan_user(root, "alice", first), first)
    os.rename(os.path.join(md, "new", "9.M.h"), os.path.join(md, "cur", "9.M.h:2,S"))
    os.rename(os.path.join(md, "cur", "1.M.h:2,S"), os.path.join(md, "cur", "1.M.h:2,FS"))
    os.unlink(os.path.join(md, "cur", "2.M.h:2,S"))
    write(os.path.join(md, ".Sent", "new", "10.M.h"), b"sent")
    again = maildir.rescan_user(root, "alice", first)
    assert _same(again, maildir.scan_user(root, "alice"))
    assert len(again.messages) == 6


def test_rescan_takes_renamed_messages_from_the_listing_and_stats_what_is_in_doubt(
        tmp_path, monkeypatch):
    """A message renamed by a flag change (in cur/, or from new/ to cur/) is recognised by
    its unique name and the inode the listing gives, with no lstat; a file that took a
    deleted message's unique name (another inode), and a forced name, are stat'ed, so the
    rescan still equals a full scan."""
    root = str(tmp_path / "root")
    md = make_maildir(os.path.join(root, "alice"))
    for i in range(6):
        write(os.path.join(md, "cur", "%d.M.h,S=2:2,S" % i), b"m%d" % i, OLD + i)
    write(os.path.join(md, "new", "9.M.h,S=3"), b"new", OLD)
    _age_dirs(root)
    first = maildir.scan_user(root, "alice")
    os.rename(os.path.join(md, "cur", "1.M.h,S=2:2,S"), os.path.join(md, "cur", "1.M.h,S=2:2,FS"))
    os.rename(os.path.join(md, "new", "9.M.h,S=3"), os.path.join(md, "cur", "9.M.h,S=3:2,S"))
    os.rename(os.path.join(md, "cur", "4.M.h,S=2:2,S"), os.path.join(md, "cur", "4.M.h,S=2:2,RS"))
    # delivered again under a deleted message's unique name: written before the old file goes,
    # so it cannot get its inode; a new mtime and mode
    write(os.path.join(md, "tmp", "x"), b"m2 again", OLD + 50)
    os.chmod(os.path.join(md, "tmp", "x"), 0o640)
    os.unlink(os.path.join(md, "cur", "2.M.h,S=2:2,S"))
    os.rename(os.path.join(md, "tmp", "x"), os.path.join(md, "cur", "2.M.h,S=2:2,T"))
    stated = []
    real = os.lstat

    def spy(path, *a, **k):
        stated.append(os.path.basename(os.fsdecode(path)))
        return real(path, *a, **k)
    monkeypatch.setattr(os, "lstat", spy)
    again = maildir.rescan_user(root, "alice", first, force=["Maildir/cur/4.M.h,S=2:2,RS"])
    monkeypatch.setattr(os, "lstat", real)
    assert _same(again, maildir.scan_user(root, "alice"))
    assert sorted(n for n in stated if ".M.h" in n) == ["2.M.h,S=2:2,T", "4.M.h,S=2:2,RS"]
    got = {m.name: m for m in again.messages}
    assert got["2.M.h,S=2:2,T"].mode == 0o640 and got["2.M.h,S=2:2,T"].size == 8
    assert got["9.M.h,S=3:2,S"].subdir == "cur" and got["9.M.h,S=3:2,S"].info == "2,S"


def test_rescan_trusts_old_directory_mtime_and_honours_force(tmp_path):
    root = str(tmp_path / "root")
    md = make_maildir(os.path.join(root, "alice"))
    msg = os.path.join(md, "cur", "1.M.h:2,S")
    write(msg, b"m")
    os.chmod(msg, 0o600)
    _age_dirs(root)
    first = maildir.scan_user(root, "alice")
    # an in-place change leaves the directory's mtime alone: only `force` sees it
    os.chmod(msg, 0o640)
    assert maildir.rescan_user(root, "alice", first).messages[0].mode == 0o600
    forced = maildir.rescan_user(root, "alice", first, force=["Maildir/cur/1.M.h:2,S"])
    assert forced.messages[0].mode == 0o640
    # a directory whose mtime is recent is listed again even if the mtime looks unchanged
    recent = first._replace(scanned_ns=0)
    write(os.path.join(md, "cur", "2.M.h:2,S"), b"x")
    os.utime(os.path.join(md, "cur"), ns=(OLD, OLD))
    assert len(maildir.rescan_user(root, "alice", first).messages) == 1      # trusted
    assert len(maildir.rescan_user(root, "alice", recent).messages) == 2     # not trusted
