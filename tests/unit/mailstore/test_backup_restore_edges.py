"""restore's edges: what is already in the target (directories, a different file under a
message's name, a symbolic link), a damaged non-message file, an existing file without
--merge, an ambiguous --message. Never overwrite, never follow a link, name what is skipped."""
import json
import os
import shutil
import stat

import pytest

from mailstore import backup
from mailstore.backup.objects import pack_path
from mailstore.backup.repository import Repository

from tests.harness import flip_bit, make_tree, message_paths, snapshot_tree, write
from test_backup_cli import cli


@pytest.fixture
def backed_up(tmp_path):
    """(repo, source root) with one snapshot of the fixture tree, unencrypted."""
    repo, src = str(tmp_path / "repo"), tmp_path / "src"
    make_tree(src)
    backup.init(repo)
    backup.run(repo, src)
    return repo, src


def test_merge_keeps_the_metadata_of_existing_directories(tmp_path, backed_up):
    repo, src = backed_up
    live = src
    inbox_cur = live / "alice/Maildir/cur"
    os.unlink(message_paths(inbox_cur)[0])
    os.chmod(inbox_cur, 0o750)
    shutil.rmtree(live / "alice/Maildir/.Sent")
    r = backup.restore(repo, "latest", live, user="alice", merge=True)
    assert r["messages"] == 4 and r["conflicts"] == 0 and not r["errors"]
    # there before: its own mode stays; created again: the snapshot's mode and mtime
    assert stat.S_IMODE(os.stat(inbox_cur).st_mode) == 0o750
    sent = os.stat(live / "alice/Maildir/.Sent")
    assert stat.S_IMODE(sent.st_mode) == 0o700
    assert sent.st_mtime_ns == 1_650_000_000_000_000_000


def test_merge_skips_and_names_a_message_present_with_other_content(tmp_path, backed_up):
    repo, src = backed_up
    live = src
    first, second = message_paths(live / "alice/Maildir/cur")[:2]
    write(str(first), b"Subject: not what was backed up\n\n", 1_900_000_000_000_000_000)
    os.unlink(second)
    before = snapshot_tree(live)
    r = backup.restore(repo, "latest", live, user="alice", merge=True)
    assert r["messages"] == 1 and r["conflicts"] == 1 and r["present"] == 9 == r["skipped"]
    entry, = r["conflict_entries"]
    assert entry["path"] == str(first) and "other content" in entry["reason"]
    assert snapshot_tree(live)[os.path.relpath(str(first), str(live))] == \
        before[os.path.relpath(str(first), str(live))]
    # the command line: one line for it, the count in the summary and the JSON, exit 3
    os.unlink(second)
    p = cli("restore", repo, "latest", live, "--user", "alice", "--merge")
    assert p.returncode == 3, p.stderr
    assert p.stderr.splitlines() == [
        "mailstore backup: skipped {}: {}".format(first, entry["reason"])]
    assert "1 SKIPPED" in p.stdout and "9 already present" in p.stdout
    p = cli("restore", repo, "latest", live, "--user", "alice", "--merge", "--json")
    assert p.returncode == 3
    doc = json.loads(p.stdout)
    assert (doc["conflicts"], doc["present"], doc["messages"]) == (1, 10, 0)
    # the dry run tells the same
    p = cli("restore", repo, "latest", live, "--user", "alice", "--merge", "--dry-run", "--json")
    assert p.returncode == 3 and json.loads(p.stdout)["conflicts"] == 1


def test_merge_never_follows_an_existing_symlink(tmp_path, backed_up):
    repo, src = backed_up
    live = src
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"keep me")
    # a message's name taken by a link, and a whole folder replaced by one
    msg = message_paths(live / "alice/Maildir/cur")[0]
    os.unlink(msg)
    os.symlink(str(outside / "victim"), str(msg))
    shutil.rmtree(live / "alice/Maildir/.Sent")
    os.symlink(str(outside), str(live / "alice/Maildir/.Sent"))
    deleted = message_paths(live / "alice/Maildir/.Archive.2024")[0]
    os.unlink(deleted)
    r = backup.restore(repo, "latest", live, user="alice", merge=True)
    assert sorted(os.listdir(outside)) == ["victim"]
    assert (outside / "victim").read_bytes() == b"keep me"
    assert os.path.islink(msg)
    # the other folders are still merged
    assert r["messages"] == 1 and os.path.isfile(deleted)
    reasons = {e["path"]: e["reason"] for e in r["conflict_entries"]}
    assert "symbolic link" in reasons[str(msg)]
    assert "symbolic link" in reasons[str(live / "alice/Maildir/.Sent")]
    assert r["conflicts"] == 2


def test_a_damaged_non_message_file_is_named_and_the_rest_restored(tmp_path, backed_up):
    repo, src = backed_up
    with Repository(repo) as r:
        pack, offset, length = r.db.execute(
            "SELECT o.pack, o.offset, o.length FROM files f JOIN objects o ON o.id = f.object"
            " WHERE f.user = 'alice' AND f.path = 'Maildir/subscriptions'").fetchone()
    path = pack_path(os.path.join(repo, "packs"), pack)
    flip_bit(path, offset + length - 3)
    p = cli("restore", repo, "latest", tmp_path / "dst", "--json")
    assert p.returncode == 1
    doc = json.loads(p.stdout)
    assert len(doc["errors"]) == 1 and "alice/Maildir/subscriptions" in doc["errors"][0]
    assert doc["messages"] == 16
    assert not (tmp_path / "dst/alice/Maildir/subscriptions").exists()
    assert (tmp_path / "dst/bob/Maildir/subscriptions").exists()
    assert p.stderr.startswith("mailstore backup: error: alice/Maildir/subscriptions")


def test_an_existing_file_without_merge_refuses_and_writes_nothing(tmp_path, backed_up):
    repo, src = backed_up
    dst = tmp_path / "dst"
    write(str(dst / "bob/Maildir/subscriptions"), b"mine\n", 1_900_000_000_000_000_000)
    before = snapshot_tree(dst)
    p = cli("restore", repo, "latest", dst, "--user", "bob")
    assert p.returncode == 1
    assert p.stderr.splitlines() == [
        "mailstore backup: error: {} already exists; restore into an empty target, or use "
        "--merge".format(dst / "bob/Maildir/subscriptions")]
    assert snapshot_tree(dst) == before


def test_an_ambiguous_message_names_every_place_and_restores_nothing(tmp_path):
    repo, src = str(tmp_path / "repo"), tmp_path / "src"
    make_tree(src)
    name = os.path.basename(message_paths(src / "alice/Maildir/cur")[0])
    shutil.copy2(str(src / "alice/Maildir/cur" / name), str(src / "alice/Maildir/.Sent/cur"))
    backup.init(repo)
    backup.run(repo, src)
    unique = name.split(":")[0]
    p = cli("restore", repo, "latest", tmp_path / "dst", "--message", unique)
    assert p.returncode == 1
    assert p.stderr.splitlines() == [
        "mailstore backup: error: message {} is in several folders or users (alice:INBOX, "
        "alice:Sent); narrow it with --user/--folder".format(unique)]
    assert not (tmp_path / "dst").exists()
    p = cli("restore", repo, "latest", tmp_path / "dst", "--message", unique, "--folder", "Sent")
    assert p.returncode == 0, p.stderr
    assert [os.path.relpath(str(m), str(tmp_path / "dst")) for m in message_paths(tmp_path / "dst")] \
        == ["alice/Maildir/.Sent/cur/" + name]
