"""Snapshots and restores: bit-exact round trips, renames without reads, symlinks, merge."""
import os
import shutil
import sqlite3

import pytest

from mailstore import backup
from mailstore.backup.repository import Repository

from tests.harness import make_tree, message_bytes, message_paths, snapshot_tree, write


@pytest.fixture(params=["plain", "encrypted"])
def repo(request, tmp_path):
    """(repo path, key file or None), initialised."""
    key = tmp_path / "key" if request.param == "encrypted" else None
    backup.init(tmp_path / "repo", key_file=key)
    return str(tmp_path / "repo"), key


def _objects_on_disk(repo_path):
    total = 0
    for dirpath, _d, files in os.walk(os.path.join(repo_path, "packs")):
        total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    return total


def test_round_trip_is_bit_exact(tmp_path, repo):
    repo_path, key = repo
    make_tree(tmp_path / "src")
    before = snapshot_tree(tmp_path / "src")
    result = backup.run(repo_path, tmp_path / "src", key_file=key)
    assert result["messages"] == 16 and not result["warnings"]
    restored = backup.restore(repo_path, "latest", tmp_path / "dst", key_file=key)
    assert restored["messages"] == 16 and not restored["errors"]
    after = snapshot_tree(tmp_path / "dst")
    # bytes, names (flags), mode, owner, mtime of every file and directory; control files
    # included; index files are caches and deliberately not in the backup
    assert after == before
    assert not [p for p in after if "dovecot.index" in p]
    assert any(p.endswith("dovecot-uidlist") for p in after)
    if os.geteuid() == 0:
        assert {v[3] for v in after.values()} == {1234}


def test_unchanged_tree_reads_nothing_and_stores_nothing(tmp_path, repo):
    repo_path, key = repo
    make_tree(tmp_path / "src")
    backup.run(repo_path, tmp_path / "src", key_file=key)
    size = _objects_on_disk(repo_path)
    again = backup.run(repo_path, tmp_path / "src", key_file=key)
    assert (again["read_files"], again["new_objects"], again["new_bytes"]) == (0, 0, 0)
    assert again["messages"] == 16
    assert _objects_on_disk(repo_path) == size


def test_flag_renames_cost_no_read_and_no_object(tmp_path, repo):
    repo_path, key = repo
    make_tree(tmp_path / "src")
    first = backup.run(repo_path, tmp_path / "src", key_file=key)
    old_tree = snapshot_tree(tmp_path / "src")
    renamed = 0
    for path in message_paths(tmp_path / "src"):
        folder_dir, sub = os.path.split(os.path.dirname(path))
        name = os.path.basename(path)
        unique = name.split(":")[0]
        # what Dovecot does: flag changes rename in cur/, "seen by a client" moves new -> cur
        os.rename(path, os.path.join(folder_dir, "cur", unique + ":2,FS"))
        renamed += 1
    size = _objects_on_disk(repo_path)
    second = backup.run(repo_path, tmp_path / "src", key_file=key)
    assert renamed == 16
    assert second["read_files"] == 0 and second["read_bytes"] == 0
    assert second["new_objects"] == 0 and second["new_bytes"] == 0
    assert _objects_on_disk(repo_path) == size
    # both snapshots restore exactly what they saw
    backup.restore(repo_path, second["id"], tmp_path / "new", key_file=key)
    assert snapshot_tree(tmp_path / "new") == snapshot_tree(tmp_path / "src")
    backup.restore(repo_path, first["id"], tmp_path / "old", key_file=key)
    old_restored = snapshot_tree(tmp_path / "old")
    assert {k: v for k, v in old_restored.items() if v[0] == "file"} == \
        {k: v for k, v in old_tree.items() if v[0] == "file"}


def test_message_moved_to_another_folder_by_hardlink_is_not_stored_again(tmp_path, repo):
    """Dovecot's COPY/MOVE within one filesystem: a hard link under a new unique name. The
    run reads it (its inode alone cannot tell it from a new file on a reused inode, see
    test_backup_inode_reuse.py) but stores no new object: same content, same object."""
    repo_path, key = repo
    make_tree(tmp_path / "src")
    backup.run(repo_path, tmp_path / "src", key_file=key)
    src = message_paths(tmp_path / "src/alice/Maildir/cur")[0]
    dst = str(tmp_path / "src/alice/Maildir/.Archive.2024/cur/1799999999.M1P1.other:2,S")
    os.link(src, dst)
    os.unlink(src)
    result = backup.run(repo_path, tmp_path / "src", key_file=key)
    assert result["read_files"] == 1 and result["new_objects"] == 0


def test_new_mail_reads_only_the_new_messages(tmp_path, repo):
    repo_path, key = repo
    make_tree(tmp_path / "src")
    backup.run(repo_path, tmp_path / "src", key_file=key)
    data = message_bytes("bob", "", 99, b"new mail")
    write(str(tmp_path / "src/bob/Maildir/new/1800000000.M9P9.mail,S=5"), data,
          1_800_000_000_000_000_000)
    result = backup.run(repo_path, tmp_path / "src", key_file=key)
    assert result["read_files"] == 1 and result["read_bytes"] == len(data)
    assert result["new_objects"] == 1 and result["messages"] == 17


def test_identical_content_is_stored_once(tmp_path, repo):
    repo_path, key = repo
    make_tree(tmp_path / "src")
    data = message_bytes("x", "", 1, b"the same mailing-list post")
    for user in ("alice", "bob"):
        write(str(tmp_path / "src" / user / "Maildir/cur/1800000001.M1P1.x:2,S"), data,
              1_800_000_000_000_000_000)
    result = backup.run(repo_path, tmp_path / "src", key_file=key)
    with Repository(repo_path, key_file=key) as r:
        count, = r.db.execute("SELECT count(DISTINCT object) FROM messages").fetchone()
    assert count == 17 and result["messages"] == 18


def test_symlinks_in_the_source_are_never_followed(tmp_path, repo):
    repo_path, key = repo
    make_tree(tmp_path / "src")
    secret = tmp_path / "secret"
    secret.write_bytes(b"root's secret, not mail\n")
    os.symlink(secret, tmp_path / "src/alice/Maildir/cur/1800000000.M1P1.evil:2,S")
    os.symlink(tmp_path / "elsewhere", tmp_path / "src/mallory")
    (tmp_path / "elsewhere/Maildir/cur").mkdir(parents=True)
    (tmp_path / "elsewhere/Maildir/cur/1.M1P1.x:2,S").write_bytes(b"Subject: not ours\n\n")
    # Pigeonhole's normal layout: a link outside the message directories, kept as a link
    os.makedirs(tmp_path / "src/alice/sieve")
    (tmp_path / "src/alice/sieve/main.sieve").write_bytes(b'require "fileinto";\n')
    os.symlink("sieve/main.sieve", tmp_path / "src/alice/.dovecot.sieve")
    result = backup.run(repo_path, tmp_path / "src", key_file=key)
    assert result["messages"] == 16
    assert any("evil" in w and "symlink" in w for w in result["warnings"])
    assert any("mallory" in w for w in result["warnings"])
    with Repository(repo_path, key_file=key) as r:
        contents = [r.read_object(oid) for oid, in r.db.execute("SELECT id FROM objects")]
    assert secret.read_bytes() not in contents
    assert not [c for c in contents if b"not ours" in c]
    backup.restore(repo_path, "latest", tmp_path / "dst", key_file=key)
    assert os.readlink(tmp_path / "dst/alice/.dovecot.sieve") == "sieve/main.sieve"
    assert not os.path.lexists(tmp_path / "dst/mallory")
    assert not os.path.lexists(tmp_path / "dst/alice/Maildir/cur/1800000000.M1P1.evil:2,S")


def test_restore_one_user_one_folder_one_message(tmp_path, repo):
    repo_path, key = repo
    make_tree(tmp_path / "src")
    snap = backup.run(repo_path, tmp_path / "src", key_file=key)["id"]
    src = snapshot_tree(tmp_path / "src")

    backup.restore(repo_path, snap, tmp_path / "u", key_file=key, user="bob")
    assert snapshot_tree(tmp_path / "u") == {k: v for k, v in src.items()
                                             if k.startswith("bob")}

    backup.restore(repo_path, snap, tmp_path / "f", key_file=key, user="alice", folder="Sent")
    got = snapshot_tree(tmp_path / "f")
    sent = {k: v for k, v in src.items() if k.startswith("alice/Maildir/.Sent")}
    assert {k: v for k, v in got.items() if k.startswith("alice/Maildir/.Sent")} == sent
    assert not [k for k in got if "/cur/" in k and ".Sent" not in k]

    name = [os.path.basename(p) for p in message_paths(tmp_path / "src/alice/Maildir/cur")][0]
    unique = name.split(":")[0]
    r = backup.restore(repo_path, snap, tmp_path / "m", key_file=key, message=unique)
    assert r["messages"] == 1
    rel = "alice/Maildir/cur/" + name
    assert snapshot_tree(tmp_path / "m")[rel] == src[rel]
    assert len(message_paths(tmp_path / "m")) == 1

    with pytest.raises(backup.NotFoundError):
        backup.restore(repo_path, snap, tmp_path / "x", key_file=key, message="nope")
    with pytest.raises(backup.NotFoundError):
        backup.restore(repo_path, snap, tmp_path / "y", key_file=key, user="alice",
                       folder="NoSuchFolder")


def test_restore_refuses_a_non_empty_target_without_merge(tmp_path, repo):
    repo_path, key = repo
    make_tree(tmp_path / "src")
    backup.run(repo_path, tmp_path / "src", key_file=key)
    make_tree(tmp_path / "live", users={"alice": {"": 1}})
    before = snapshot_tree(tmp_path / "live")
    with pytest.raises(backup.RestoreConflict, match="--merge"):
        backup.restore(repo_path, "latest", tmp_path / "live", key_file=key, user="alice")
    assert snapshot_tree(tmp_path / "live") == before


def test_merge_into_a_live_maildir_adds_only_what_is_missing(tmp_path, repo):
    repo_path, key = repo
    make_tree(tmp_path / "src")
    backup.run(repo_path, tmp_path / "src", key_file=key)
    live = tmp_path / "src"
    msgs = message_paths(live / "alice/Maildir")
    deleted = msgs[:3]
    for p in deleted:
        os.unlink(p)
    # a flag changed since the backup: the message is present under another name
    kept = msgs[3]
    os.rename(kept, os.path.join(os.path.dirname(os.path.dirname(kept)), "cur",
                                 os.path.basename(kept).split(":")[0] + ":2,T"))
    # new mail and a rewritten uidlist since the backup: must stay exactly as they are
    write(str(live / "alice/Maildir/new/1900000000.M1P1.new"), b"Subject: new\n\nnew",
          1_900_000_000_000_000_000)
    write(str(live / "alice/Maildir/dovecot-uidlist"), b"3 V1 N99\n", 1_900_000_000_000_000_000)
    before = snapshot_tree(live)
    r = backup.restore(repo_path, "latest", live, key_file=key, user="alice", merge=True)
    assert r["messages"] == 3 and not r["errors"]
    after = snapshot_tree(live)
    for rel, value in before.items():
        if value[0] == "file":
            assert after[rel] == value, rel          # nothing that was there changed
    added = set(after) - set(before)
    assert {os.path.basename(p) for p in added} == {os.path.basename(p) for p in deleted}
    assert not [p for p in os.listdir(live / "alice/Maildir/tmp")]
    # merging again adds nothing
    again = backup.restore(repo_path, "latest", live, key_file=key, user="alice", merge=True)
    assert again["messages"] == 0 and again["present"] == 11


def test_restore_never_writes_outside_the_target(tmp_path, repo):
    repo_path, key = repo
    make_tree(tmp_path / "src")
    backup.run(repo_path, tmp_path / "src", key_file=key)
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "dst"
    target.mkdir()
    os.symlink(outside, target / "alice")
    with pytest.raises(backup.RestoreConflict, match="symbolic link"):
        backup.restore(repo_path, "latest", target, key_file=key, user="alice")
    assert os.listdir(outside) == []
    # a catalog entry with a hostile name (a tampered repository) is refused as well: the
    # catalog's authentication fails (the unsafe name would be refused too)
    db = sqlite3.connect(os.path.join(repo_path, "catalog.sqlite"))
    db.execute("UPDATE messages SET name = '../../../../escaped' WHERE id = 1")
    db.commit()
    db.close()
    with pytest.raises(backup.BackupError, match="tampered with: snapshot .*message rows"):
        backup.restore(repo_path, "latest", tmp_path / "dst2", key_file=key)
    assert not [p for p in os.listdir(tmp_path) if "escaped" in p]


def test_snapshot_with_a_vanished_source_user_is_a_clear_error(tmp_path, repo):
    repo_path, key = repo
    with pytest.raises(backup.BackupError, match="not a directory"):
        backup.run(repo_path, tmp_path / "missing", key_file=key)
    assert backup.status(repo_path)["snapshots"] == 0


def test_wrong_key_cannot_read_anything(tmp_path):
    backup.init(tmp_path / "repo", key_file=tmp_path / "key")
    make_tree(tmp_path / "src")
    backup.run(tmp_path / "repo", tmp_path / "src", key_file=tmp_path / "key")
    backup.init(tmp_path / "other", key_file=tmp_path / "key2")
    for call in (lambda k: backup.run(tmp_path / "repo", tmp_path / "src", key_file=k),
                 lambda k: backup.restore(tmp_path / "repo", "latest", tmp_path / "d",
                                          key_file=k),
                 lambda k: backup.verify(tmp_path / "repo", key_file=k, read_data=True),
                 lambda k: backup.find(tmp_path / "repo", key_file=k)):
        with pytest.raises(backup.KeyFileError, match="wrong key"):
            call(tmp_path / "key2")
        with pytest.raises(backup.KeyFileError, match="--key-file"):
            call(None)
    assert not os.path.exists(tmp_path / "d")
    # the plaintext of a message appears nowhere in an encrypted repository
    needle = message_bytes("alice", "", 0)[:60]
    for dirpath, _d, files in os.walk(tmp_path / "repo"):
        for f in files:
            assert needle not in open(os.path.join(dirpath, f), "rb").read()


def test_a_message_renamed_between_scan_and_read_is_still_backed_up(tmp_path, repo,
                                                                     monkeypatch):
    """Dovecot renames (flag change) at any moment; the run must follow the message."""
    repo_path, key = repo
    make_tree(tmp_path / "src")
    from mailstore.backup import reading
    real_read = reading.read_file
    moved = {}

    def racing_read(path):
        # the first time a message is about to be read, Dovecot renames it away
        if "/cur/" in path and not moved:
            unique = os.path.basename(path).split(":")[0]
            new = os.path.join(os.path.dirname(path), unique + ":2,FRS")
            os.rename(path, new)
            moved[path] = new
        return real_read(path)

    monkeypatch.setattr(reading, "read_file", racing_read)
    result = backup.run(repo_path, tmp_path / "src", key_file=key)
    assert moved and result["messages"] == 16 and not result["warnings"]
    backup.restore(repo_path, "latest", tmp_path / "dst", key_file=key)
    new_rel = os.path.relpath(list(moved.values())[0], tmp_path / "src")
    assert (tmp_path / "dst" / new_rel).read_bytes() == (tmp_path / "src" / new_rel).read_bytes()


def test_names_that_are_not_utf8_round_trip_byte_exact(tmp_path, repo):
    repo_path, key = repo
    make_tree(tmp_path / "src")
    src = os.fsencode(str(tmp_path / "src"))
    folder = os.path.join(src, b"alice/Maildir/.Caf\xe9")        # Latin-1 folder name
    for sub in (b"cur", b"new", b"tmp"):
        os.makedirs(os.path.join(folder, sub))
    name = b"1800000000.M1P1.h\xff,S=9:2,S"
    with open(os.path.join(folder, b"cur", name), "wb") as f:
        f.write(b"Subject: latin\n\nbody\n")
    first = backup.run(repo_path, tmp_path / "src", key_file=key)
    assert first["messages"] == 17 and not first["warnings"]
    # unchanged: still recognised without a read
    second = backup.run(repo_path, tmp_path / "src", key_file=key)
    assert second["read_files"] == 0
    backup.restore(repo_path, "latest", tmp_path / "dst", key_file=key)
    assert snapshot_tree(tmp_path / "dst") == snapshot_tree(tmp_path / "src")
    restored = os.path.join(os.fsencode(str(tmp_path / "dst")), b"alice/Maildir/.Caf\xe9/cur",
                            name)
    assert open(restored, "rb").read() == b"Subject: latin\n\nbody\n"
    hits = backup.find(repo_path, key_file=key, subject="latin")
    assert len(hits) == 1 and os.fsencode(hits[0]["message"]) == name.split(b":")[0]


def test_the_index_cache_is_only_a_cache(tmp_path, repo):
    """The newest snapshot's message list is cached in REPO/index/; a damaged or missing cache
    changes nothing but speed (a damaged one is named in a warning)."""
    repo_path, key = repo
    make_tree(tmp_path / "src")
    first = backup.run(repo_path, tmp_path / "src", key_file=key)
    index_dir = os.path.join(repo_path, "index")
    # the newest snapshot's only (with the known objects, newobjects.py)
    assert sorted(os.listdir(index_dir)) == [first["id"] + ".known", first["id"] + ".marshal"]
    second = backup.run(repo_path, tmp_path / "src", key_file=key)
    assert sorted(os.listdir(index_dir)) == [second["id"] + ".known",
                                             second["id"] + ".marshal"]
    for damage in (b"garbage", b""):
        with open(os.path.join(index_dir, second["id"] + ".marshal"), "wb") as f:
            f.write(damage)
        again = backup.run(repo_path, tmp_path / "src", key_file=key)
        assert again["read_files"] == 0 and again["new_objects"] == 0
        assert len(again["warnings"]) == 1 and "index cache" in again["warnings"][0]
        second = again
    os.unlink(os.path.join(index_dir, second["id"] + ".marshal"))
    again = backup.run(repo_path, tmp_path / "src", key_file=key)
    assert again["read_files"] == 0 and again["new_objects"] == 0 and again["warnings"] == []
    backup.restore(repo_path, "latest", tmp_path / "dst", key_file=key)
    assert snapshot_tree(tmp_path / "dst") == snapshot_tree(tmp_path / "src")


def test_runs_in_the_same_second_get_distinct_snapshot_ids(tmp_path, repo, monkeypatch):
    # The id is the start second plus a short random suffix: a repeated suffix within one
    # second must not make the second run fail on the catalog's unique id.
    from mailstore.backup import snapshot_commit
    ids = iter(["2026-11-25T120000Z-abcd", "2026-11-25T120000Z-abcd", "2026-11-25T120000Z-ef01"])
    monkeypatch.setattr(snapshot_commit, "new_snapshot_id", lambda started: next(ids))
    repo_path, key = repo
    make_tree(tmp_path / "src")
    first = backup.run(repo_path, tmp_path / "src", key_file=key, now=lambda: 1790000000.0)
    second = backup.run(repo_path, tmp_path / "src", key_file=key, now=lambda: 1790000000.0)
    assert first["id"].endswith("-abcd") and second["id"].endswith("-ef01")
    assert [s["id"] for s in backup.list_snapshots(repo_path, key_file=key)] == \
        [first["id"], second["id"]]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand the tree to nobody")
def test_one_unreadable_message_is_a_warning_and_the_snapshot_is_recorded(tmp_path):
    """A real unreadable file: mode 000, read by an unprivileged process (as root, mode 000
    stops nothing, so the run is made as `nobody`, who owns the tree and the repository).
    A message that vanishes between scan and read is another case: normal, not a warning."""
    from click.testing import CliRunner
    from mailstore.cli import main
    from tests.harness import NOBODY, as_nobody, public_tmpdir
    base = public_tmpdir("mailstore-unreadable-")
    try:
        src, repo_path, dst = (os.path.join(base, n) for n in ("src", "repo", "dst"))
        make_tree(src, owner=(NOBODY, NOBODY))
        os.chown(base, NOBODY, NOBODY)
        victim = sorted(message_paths(os.path.join(src, "bob/Maildir")))[0]
        os.chmod(victim, 0)

        def night():
            backup.init(repo_path)
            r = CliRunner().invoke(main, ["backup", "run", repo_path, src])
            return r.exit_code, r.output
        code, output = as_nobody(night)
        # skipped and named, the night still fails (cron and the job see exit 1) ...
        assert code == 1, output
        assert "warning: {}: cannot read (Permission denied); skipped".format(victim) in output
        # ... but everybody else's mail is in the snapshot, whose id ends the summary
        snapshot_id = output.strip().splitlines()[-1].split()[-1]
        snaps = backup.list_snapshots(repo_path)
        assert [s["id"] for s in snaps] == [snapshot_id]
        assert snaps[0]["messages"] == 15 and snaps[0]["warnings"] == 1
        backup.restore(repo_path, snapshot_id, dst)
        restored = snapshot_tree(dst)
        expected = snapshot_tree(src)
        victim_rel = os.path.relpath(victim, src)
        assert victim_rel not in restored
        del expected[victim_rel]
        assert restored == expected
    finally:
        shutil.rmtree(base)
