"""Repositories of format 1 (made by the mailstore before the catalog was authenticated, kept
in data/backup-format1.tar.gz): they keep working, and `backup upgrade` authenticates them
after checking them."""
import json
import os
import sqlite3

import pytest

from backup_fixtures import cli, extract_format1
from mailstore import backup

from tests.harness import snapshot_tree


@pytest.fixture(params=["enc", "plain"])
def old(request, tmp_path):
    """(repo, key or None, src) of a format 1 repository with two snapshots of src."""
    extract_format1(tmp_path)
    key = str(tmp_path / "key") if request.param == "enc" else None
    return str(tmp_path / request.param), key, str(tmp_path / "src")


def contents(root):
    """What each file holds (the tar kept the source's mtimes to the microsecond only)."""
    return {k: v[:2] for k, v in snapshot_tree(root).items()}


def version(repo):
    with open(os.path.join(repo, "config.json")) as f:
        return json.load(f)["version"]


def test_a_format_1_repository_keeps_working_until_upgraded(old, tmp_path):
    repo, key, src = old
    assert len(backup.list_snapshots(repo)) == 2
    result = backup.verify(repo, key_file=key, read_data=True)
    assert result["ok"] and result["catalog"] == "format 1, not authenticated"
    backup.restore(repo, "latest", tmp_path / "dst", key_file=key)
    assert contents(tmp_path / "dst") == contents(src)
    assert backup.run(repo, src, key_file=key)["id"]
    if key:
        assert backup.find(repo, key_file=key, subject="INBOX 1")
    assert version(repo) == 1


def test_upgrade_authenticates_a_format_1_repository(old, tmp_path):
    repo, key, src = old
    key_args = ("--key-file", key) if key else ()
    r = cli("upgrade", repo, *key_args)
    assert r.returncode == 0, r.stderr
    assert "to format 2: 2 snapshots authenticated" in r.stdout
    assert version(repo) == 2
    result = backup.verify(repo, key_file=key, read_data=True)
    assert result["ok"] and result["catalog"] == ("authenticated" if key else "checksums")
    backup.restore(repo, "latest", tmp_path / "dst", key_file=key)
    assert contents(tmp_path / "dst") == contents(src)
    if key:     # the headers were re-sealed, bound to their objects
        found = backup.find(repo, key_file=key, subject="INBOX 1")
        assert found and all("INBOX 1" in f["subject"] for f in found)
    assert backup.run(repo, src, key_file=key)["id"]
    assert backup.verify(repo, key_file=key)["ok"]
    # from now on, tampering is seen
    db = sqlite3.connect(os.path.join(repo, "catalog.sqlite"))
    with db:
        db.execute("UPDATE messages SET user = 'alicf' WHERE user = 'alice'")
    db.close()
    with pytest.raises(backup.CatalogDamaged):
        backup.verify(repo, key_file=key)
    r = cli("upgrade", repo, *key_args)
    assert r.returncode == 1 and "has format 2 already: nothing to upgrade" in r.stderr


def swap_alice_and_bob(repo):
    db = sqlite3.connect(os.path.join(repo, "catalog.sqlite"))
    (a, oa), = db.execute("SELECT id, object FROM messages WHERE user = 'alice' LIMIT 1")
    (b, ob), = db.execute("SELECT id, object FROM messages WHERE user = 'bob' LIMIT 1")
    with db:
        db.execute("UPDATE messages SET object = ? WHERE id = ?", (ob, a))
        db.execute("UPDATE messages SET object = ? WHERE id = ?", (oa, b))
    db.close()


def test_upgrade_refuses_a_repository_whose_rows_do_not_fit_their_objects(old):
    repo, key, _src = old
    swap_alice_and_bob(repo)
    r = cli("upgrade", repo, *(("--key-file", key) if key else ()))
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr
    assert "not upgraded, nothing changed" in r.stderr and "the catalog says" in r.stderr
    assert version(repo) == 1


def test_restore_of_format_1_never_writes_a_message_of_another_size(old, tmp_path):
    """The reproduction on an unauthenticated catalog: the restored content's size is
    compared with the catalog's."""
    repo, key, _src = old
    swap_alice_and_bob(repo)
    r = cli("restore", repo, "latest", tmp_path / "dst", "--user", "alice",
            *(("--key-file", key) if key else ()))
    assert r.returncode == 1
    assert "where the catalog says" in r.stderr and "not restored" in r.stderr
    for dirpath, _dirs, files in os.walk(str(tmp_path / "dst")):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                assert b"bob@" not in f.read()


def test_an_interrupted_upgrade_is_finished_by_running_it_again(old):
    repo, key, _src = old
    backup.upgrade(repo, key_file=key)
    # as if it had died before writing config.json: the version 1 file
    path = os.path.join(repo, "config.json")
    with open(path) as f:
        config = json.load(f)
    config["version"] = 1
    del config["mac"]
    with open(path, "w") as f:
        json.dump(config, f)
    with pytest.raises(backup.RepositoryError, match="an upgrade was interrupted"):
        backup.list_snapshots(repo)
    assert backup.upgrade(repo, key_file=key)["format"] == 2
    assert backup.verify(repo, key_file=key, read_data=True)["ok"]
