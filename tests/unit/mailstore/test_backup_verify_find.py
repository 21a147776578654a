"""verify (catalog and --read-data), find, and the database dump / config path extras."""
import os
import sys

import pytest

from mailstore import backup
from mailstore.backup.objects import pack_path

from tests.harness import flip_bit, locate_message, make_tree, message_paths, snapshot_tree


@pytest.fixture
def two_snapshots(tmp_path):
    backup.init(tmp_path / "repo", key_file=tmp_path / "key")
    make_tree(tmp_path / "src")
    first = backup.run(tmp_path / "repo", tmp_path / "src", key_file=tmp_path / "key")["id"]
    # rename one message so the two snapshots hold it under different names: a flag change
    # (bob's INBOX message 1 is flagged), same file, same object, a new name in the second
    cur = tmp_path / "src/bob/Maildir/cur"
    seen, = [n for n in os.listdir(cur) if "M7P101" in n]
    assert seen.endswith(":2,S")
    os.rename(cur / seen, cur / (seen[:-len(":2,S")] + ":2,FS"))
    second = backup.run(tmp_path / "repo", tmp_path / "src", key_file=tmp_path / "key")["id"]
    return str(tmp_path / "repo"), str(tmp_path / "key"), first, second


def test_verify_read_data_names_the_damaged_message_and_its_snapshots(two_snapshots):
    repo_path, key, first, second = two_snapshots
    assert backup.verify(repo_path, key_file=key, read_data=True)["ok"]
    name, oid, pack, offset, length = locate_message(repo_path, key, "bob", "M7P101%:2,FS")
    old_name = name[:-len(":2,FS")] + ":2,S"
    path = pack_path(os.path.join(repo_path, "packs"), pack)
    flip_bit(path, offset + length - 5)
    # the cheap check cannot see a flipped bit; reading the data does
    assert backup.verify(repo_path, key_file=key)["ok"]
    result = backup.verify(repo_path, key_file=key, read_data=True)
    assert not result["ok"]
    assert [d["object"] for d in result["damaged"]] == [oid]
    # one damaged object, both of its names, each with the snapshot that holds it
    uses = result["damaged"][0]["uses"]
    assert sorted((u["user"], u["path"], u["snapshots"]) for u in uses) == [
        ("bob", "Maildir/cur/" + name, [second]), ("bob", "Maildir/cur/" + old_name, [first])]
    st = backup.status(repo_path)
    assert st["last_verify"]["ok"] is False and st["last_verify"]["damaged"] == 1
    # restore goes on with everything else and names what it could not restore
    r = backup.restore(repo_path, "latest", os.path.join(os.path.dirname(repo_path), "dst"),
                       key_file=key)
    assert len(r["errors"]) == 1 and name in r["errors"][0]
    assert r["messages"] == 15


def test_verify_without_data_finds_a_missing_or_truncated_pack(two_snapshots):
    repo_path, key, first, second = two_snapshots
    _name, _oid, pack, _offset, _length = locate_message(repo_path, key, "alice", "M0P100")
    path = pack_path(os.path.join(repo_path, "packs"), pack)
    os.truncate(path, 100)
    result = backup.verify(repo_path)       # no key needed for the catalog check
    assert not result["ok"] and result["damaged"]
    assert all("truncated" in d["problem"] for d in result["damaged"])
    os.unlink(path)
    result = backup.verify(repo_path, snapshot=first)
    assert not result["ok"] and result["missing_packs"] == [pack]


def test_find_answers_the_deleted_last_week_question(tmp_path):
    backup.init(tmp_path / "repo")
    make_tree(tmp_path / "src")
    first = backup.run(tmp_path / "repo", tmp_path / "src")["id"]
    victim = [p for p in message_paths(tmp_path / "src/alice/Maildir/.Sent")][0]
    victim_bytes = open(victim, "rb").read()
    os.unlink(victim)
    backup.run(tmp_path / "repo", tmp_path / "src")
    # subjects are RFC 2047 encoded in the files; find searches the decoded text
    hits = backup.find(tmp_path / "repo", user="alice", subject="réunion sent")
    assert len(hits) == 3
    gone = [h for h in hits if h["snapshots"] == 1]
    assert len(gone) == 1 and gone[0]["snapshot"] == first
    assert gone[0]["folder"] == "Sent"
    assert gone[0]["from"].startswith("Sender ")
    assert backup.find(tmp_path / "repo", sender="sender1@example.org", user="bob")
    assert backup.find(tmp_path / "repo", subject="no such subject") == []
    # dates: the Date header (1..28 Nov 2026 in the fixture)
    import calendar
    nov3 = calendar.timegm((2026, 11, 3, 0, 0, 0))
    early = backup.find(tmp_path / "repo", until=nov3)
    assert early and all(h["date"] < nov3 for h in early)
    # the id printed is what restore --message takes
    backup.restore(tmp_path / "repo", gone[0]["snapshot"], tmp_path / "back",
                   user="alice", message=gone[0]["message"])
    restored = message_paths(tmp_path / "back")
    assert len(restored) == 1 and open(restored[0], "rb").read() == victim_bytes


def test_find_in_an_encrypted_repository_keeps_headers_encrypted(tmp_path):
    backup.init(tmp_path / "repo", key_file=tmp_path / "key")
    make_tree(tmp_path / "src")
    backup.run(tmp_path / "repo", tmp_path / "src", key_file=tmp_path / "key")
    assert len(backup.find(tmp_path / "repo", key_file=tmp_path / "key",
                           subject="Réunion")) == 16
    catalog_bytes = open(tmp_path / "repo/catalog.sqlite", "rb").read()
    assert b"Sender 1" not in catalog_bytes and "Réunion".encode() not in catalog_bytes


def test_database_dump_and_config_paths_are_in_the_snapshot(tmp_path):
    backup.init(tmp_path / "repo")
    make_tree(tmp_path / "src")
    conf = tmp_path / "etc/postfix"
    conf.mkdir(parents=True)
    (conf / "main.cf").write_text("myhostname = email.cacert.test\n")
    os.chmod(conf / "main.cf", 0o640)
    os.symlink("main.cf", conf / "link.cf")
    dump = [sys.executable, "-c", "print('CREATE TABLE users (id int);')"]
    result = backup.run(tmp_path / "repo", tmp_path / "src", include=[str(tmp_path / "etc")],
                        mysql_dump="cacertusers", dump_command=dump)
    assert not result["warnings"]
    backup.restore(tmp_path / "repo", "latest", tmp_path / "x", extras=True)
    base = str(tmp_path / "x") + str(tmp_path)
    got = snapshot_tree(base + "/etc")
    assert got == snapshot_tree(tmp_path / "etc")
    assert open(tmp_path / "x/mysql/cacertusers.sql").read() == "CREATE TABLE users (id int);\n"


def test_a_failing_database_dump_fails_the_run_and_records_nothing(tmp_path):
    backup.init(tmp_path / "repo")
    make_tree(tmp_path / "src")
    dump = [sys.executable, "-c", "import sys; sys.stderr.write('Access denied'); sys.exit(2)"]
    with pytest.raises(backup.BackupError, match="Access denied"):
        backup.run(tmp_path / "repo", tmp_path / "src", mysql_dump="cacertusers",
                   dump_command=dump)
    assert backup.status(tmp_path / "repo")["snapshots"] == 0


def test_verify_can_read_a_random_sample(two_snapshots):
    repo_path, key, _first, _second = two_snapshots
    full = backup.verify(repo_path, key_file=key, read_data=True)
    part = backup.verify(repo_path, key_file=key, read_data=True, sample=0.25)
    # 16 messages + 10 distinct control files (empty maildirfolder files share one object)
    assert full["read"] == full["objects"] == 26
    assert part["read"] == 7 and part["ok"]          # ceil(26 / 4)
    assert backup.status(repo_path)["last_verify"]["checked"] == 7
    with pytest.raises(backup.BackupError, match="fraction"):
        backup.verify(repo_path, key_file=key, read_data=True, sample=1.5)
