"""Inode reuse: a message deleted, and another file that the filesystem puts on the freed
inode with the same size and mtime (a restore or a copy tool that keeps mtimes), is a new
message; the run reads it instead of taking it for the deleted one."""
import os
import shutil

import pytest

from mailstore import backup

from tests.harness import make_tree, message_paths, snapshot_tree
from mounts import small_ext4


def _file_on_inode(directory, inode, data, tries=2000):
    """A new file holding `data` in `directory` that the filesystem put on `inode` (ext4 and
    xfs hand a freed inode out again at once); the other attempts are removed."""
    made = []
    try:
        for i in range(tries):
            path = os.path.join(directory, "attempt.{}".format(i))
            with open(path, "wb") as f:
                f.write(data)
            if os.stat(path).st_ino == inode:
                return path
            made.append(path)
    finally:
        for path in made:
            os.unlink(path)
    raise AssertionError("no new file got the freed inode {} in {} tries: this test needs a "
                         "filesystem that reuses inodes (ext4, xfs) under {}".format(
                             inode, tries, directory))


@pytest.mark.parametrize("full_scan", [False, True], ids=["incremental", "full"])
def test_a_new_message_on_a_deleted_messages_inode_is_read_not_taken_for_it(tmp_path,
                                                                             full_scan):
    # On a private ext4: on a shared /tmp, other processes' files may take the freed inode.
    with small_ext4(tmp_path / "fs") as fs:
        _new_message_on_a_deleted_messages_inode(fs, full_scan)


def _new_message_on_a_deleted_messages_inode(tmp_path, full_scan):
    repo, src = str(tmp_path / "repo"), tmp_path / "src"
    backup.init(repo)
    make_tree(src)
    backup.run(repo, src)
    assert backup.run(repo, src)["scan"] == "incremental"
    maildir = src / "alice" / "Maildir"
    old = message_paths(maildir / "cur")[-1]
    st = os.stat(old)
    with open(old, "rb") as f:
        old_data = f.read()
    new_data = old_data.replace(b"Hello", b"Howdy")
    assert len(new_data) == len(old_data) and new_data != old_data
    os.unlink(old)
    # delivered through tmp/ like any message, under its own unique name
    landed = _file_on_inode(str(maildir / "tmp"), st.st_ino, new_data)
    new = str(maildir / "new" / "1800000000.M9P9.mail.cacert.test,S={}".format(len(new_data)))
    os.rename(landed, new)
    os.chown(new, st.st_uid, st.st_gid)
    os.chmod(new, st.st_mode & 0o7777)
    os.utime(new, ns=(st.st_mtime_ns, st.st_mtime_ns))
    now = os.stat(new)
    assert (now.st_ino, now.st_size, now.st_mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns)

    result = backup.run(repo, src, full_scan=full_scan)
    assert result["scan"] == ("full" if full_scan else "incremental")
    assert result["messages"] == 16 and result["read_files"] == 1
    dst = tmp_path / "dst"
    backup.restore(repo, "latest", dst)
    with open(os.path.join(str(dst), os.path.relpath(new, str(src))), "rb") as f:
        assert f.read() == new_data
    assert snapshot_tree(dst) == snapshot_tree(src)


def test_a_message_moved_to_another_folder_under_its_name_is_still_not_read(tmp_path):
    """What the inode match is for, and still does: a message moved (same inode, same unique
    name) to another folder costs no read."""
    repo, src = str(tmp_path / "repo"), tmp_path / "src"
    backup.init(repo)
    make_tree(src)
    backup.run(repo, src)
    backup.run(repo, src)
    maildir = src / "alice" / "Maildir"
    old = message_paths(maildir / "cur")[-1]
    shutil.move(old, str(maildir / ".Sent" / "cur" / os.path.basename(old)))
    result = backup.run(repo, src)
    assert result["scan"] == "incremental"
    assert (result["messages"], result["read_files"], result["new_objects"]) == (16, 0, 0)
    backup.restore(repo, "latest", tmp_path / "dst")
    assert snapshot_tree(tmp_path / "dst") == snapshot_tree(src)
