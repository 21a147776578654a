"""The known objects a run leaves for the next one (REPO/index/<snapshot>.known,
newobjects.KnownObjects): they are the catalog's, the next run uses them to tell new content
from stored content, and nothing a damaged, emptied or blocking file does costs a message:
at worst content is stored once more, and a restore gives back every message bit-exact."""
import array
import hashlib
import json
import os
import shutil

import pytest

from backup_fixtures import cli
from mailstore import backup
from mailstore.backup import catalog, newobjects

from tests.harness import make_tree, snapshot_tree


def known_path(repo):
    """(the newest snapshot's .known file, the prefixes of the catalog's object ids)"""
    db = catalog.connect(os.path.join(repo, "catalog.sqlite"), readonly=True)
    try:
        newest, = db.execute("SELECT id FROM snapshots ORDER BY seq DESC LIMIT 1").fetchone()
        prefixes = {int(oid[:16], 16) for oid, in db.execute("SELECT id FROM objects")}
    finally:
        db.close()
    return os.path.join(repo, "index", newest + newobjects.KNOWN_SUFFIX), prefixes


def copy_of_a_stored_message(src, n):
    """A message whose content the repository holds already (alice's first message),
    delivered to bob under a new name: content the run must not need to store again."""
    cur = os.path.join(src, "alice", "Maildir", "cur")
    first = sorted(os.listdir(cur))[0]
    shutil.copyfile(os.path.join(cur, first),
                    os.path.join(src, "bob", "Maildir", "new", "copy{}.mail.cacert.test".format(n)))


@pytest.fixture
def repo(tmp_path):
    repo, key, src = str(tmp_path / "repo"), str(tmp_path / "key"), str(tmp_path / "src")
    backup.init(repo, key_file=key)
    make_tree(src)
    backup.run(repo, src, key_file=key)
    return repo, key, src


def check_restore(repo, key, src, target):
    r = cli("verify", repo, "--read-data", "--key-file", key)
    assert r.returncode == 0, r.stderr
    backup.restore(repo, "latest", target, key_file=key)
    assert snapshot_tree(target) == snapshot_tree(src)


def test_a_run_leaves_the_catalogs_known_objects_for_its_snapshot_only(repo):
    repo, key, src = repo
    path, prefixes = known_path(repo)
    assert set(newobjects._read_known(path)) == prefixes
    with open(os.path.join(src, "bob", "Maildir", "new", "fresh.mail.cacert.test"), "w") as f:
        f.write("Subject: fresh\n\nnew content\n")
    first = path
    backup.run(repo, src, key_file=key)
    path, prefixes = known_path(repo)
    assert path != first and not os.path.exists(first)
    found = newobjects._read_known(path)
    assert list(found) == sorted(found) and set(found) == prefixes


def test_stored_content_is_not_stored_again(repo):
    repo, key, src = repo
    copy_of_a_stored_message(src, 1)
    assert backup.run(repo, src, key_file=key)["new_objects"] == 0


def test_a_file_that_knows_nothing_has_the_content_stored_again_and_costs_nothing(
        repo, tmp_path):
    repo, key, src = repo
    path, _ = known_path(repo)
    body = b""
    with open(path, "wb") as f:
        f.write(newobjects.KNOWN_MAGIC + "0 {}\n".format(hashlib.sha256(body).hexdigest())
                .encode() + body)
    copy_of_a_stored_message(src, 1)
    # the file was believed (its checksum holds): the known content went in once more
    assert backup.run(repo, src, key_file=key)["new_objects"] == 1
    check_restore(repo, key, src, tmp_path / "dst")


@pytest.mark.parametrize("damage", ["flipped byte", "cut short", "not ours", "fifo"])
def test_a_damaged_file_is_not_believed(repo, tmp_path, damage):
    repo, key, src = repo
    path, _ = known_path(repo)
    with open(path, "rb") as f:
        data = bytearray(f.read())
    if damage == "flipped byte":
        data[-3] ^= 0x01
    elif damage == "cut short":
        del data[-8:]
    elif damage == "not ours":
        data[:4] = b"xxxx"
    os.unlink(path)
    if damage == "fifo":
        os.mkfifo(path)
    else:
        with open(path, "wb") as f:
            f.write(bytes(data))
    copy_of_a_stored_message(src, 1)
    # the catalog was read instead: the copy's content is known, nothing stored again;
    # a FIFO there does not hang the run (cli's timeout would fail the test)
    r = cli("run", repo, src, "--key-file", key, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["new_objects"] == 0
    check_restore(repo, key, src, tmp_path / "dst")


def test_merging_keeps_the_prefixes_sorted_and_each_once():
    old = array.array("Q", [3, 5, 9, 12])
    assert list(newobjects._merged(old, [1, 5, 10, 13])) == [1, 3, 5, 9, 10, 12, 13]
    assert list(newobjects._merged(old, [])) == [3, 5, 9, 12]
    assert list(newobjects._merged(array.array("Q"), [2, 4])) == [2, 4]
    many = list(range(0, 2000, 3))
    assert list(newobjects._merged(array.array("Q", range(0, 2000, 2)), many)) == sorted(
        set(range(0, 2000, 2)) | set(many))
