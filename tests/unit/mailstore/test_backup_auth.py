"""An authenticated repository: tampering with or damage to the catalog and config.json is
seen by verify, restore and the next run, each naming the damage in one line; restore never
writes a message whose content does not fit its catalog row."""
import json
import os
import sqlite3

import pytest

from backup_fixtures import cli, one_error_line
from mailstore import backup
from mailstore.backup import catalog

from tests.harness import make_tree, snapshot_tree


@pytest.fixture(params=["encrypted", "plain"])
def two_snapshots(request, tmp_path):
    """A repository with two snapshots of the fixture tree; between them bob's INBOX message 1
    got the flag F (a new row in the second snapshot). (repo, key or None, src, ids)."""
    key = str(tmp_path / "key") if request.param == "encrypted" else None
    repo, src = str(tmp_path / "repo"), str(tmp_path / "src")
    backup.init(repo, key_file=key)
    make_tree(src)
    first = backup.run(repo, src, key_file=key)["id"]
    cur = os.path.join(src, "bob/Maildir/cur")
    seen, = [n for n in os.listdir(cur) if "M7P101" in n]
    os.rename(os.path.join(cur, seen), os.path.join(cur, seen[:-len(":2,S")] + ":2,FS"))
    second = backup.run(repo, src, key_file=key)["id"]
    return repo, key, src, (first, second)


def sql(repo, statement, args=()):
    db = sqlite3.connect(os.path.join(repo, "catalog.sqlite"))
    with db:
        db.execute(statement, args)
    db.close()


def latest_row(repo, user, like="%"):
    db = sqlite3.connect(os.path.join(repo, "catalog.sqlite"))
    row = db.execute("SELECT m.id FROM messages m JOIN snapshot_messages s ON s.message = m.id"
                     " WHERE s.snapshot = (SELECT max(seq) FROM snapshots) AND m.user = ?"
                     " AND m.name LIKE ? ORDER BY m.id LIMIT 1", (user, like)).fetchone()
    db.close()
    return row[0]


def change_latest_snapshot(repo, drop=(), add=()):
    """Rewrite the latest snapshot's runs of message ids without `drop` and with `add`, as
    someone with write access to the catalog could."""
    db = sqlite3.connect(os.path.join(repo, "catalog.sqlite"))
    with db:
        seq, = db.execute("SELECT max(seq) FROM snapshots").fetchone()
        ids = {r[0] for r in db.execute("SELECT message FROM snapshot_messages WHERE"
                                        " snapshot = ?", (seq,))}
        db.execute("DELETE FROM snapshot_runs WHERE snapshot = ?", (seq,))
        db.executemany("INSERT INTO snapshot_runs VALUES (?, ?, ?)",
                       [(seq, a, b) for a, b in catalog.id_runs((ids - set(drop)) | set(add))])
    db.close()


def swap_objects(repo):
    a, b = latest_row(repo, "alice"), latest_row(repo, "bob")
    sql(repo, "UPDATE messages SET object = CASE id WHEN ? THEN (SELECT object FROM messages"
        " WHERE id = ?) ELSE (SELECT object FROM messages WHERE id = ?) END"
        " WHERE id IN (?, ?)", (a, b, a, a, b))


def add_row(repo):
    # the first snapshot's row of bob's message before its rename, into the second as well
    old = sql_one(repo, "SELECT id FROM messages WHERE user = 'bob' AND name LIKE"
                  " '%M7P101%:2,S'")
    change_latest_snapshot(repo, add=[old])


def sql_one(repo, statement):
    db = sqlite3.connect(os.path.join(repo, "catalog.sqlite"))
    value = db.execute(statement).fetchone()[0]
    db.close()
    return value


def swap_ids(repo):
    first, second = sql_one(repo, "SELECT group_concat(id) FROM snapshots").split(",")
    sql(repo, "UPDATE snapshots SET id = 'moving' WHERE id = ?", (first,))
    sql(repo, "UPDATE snapshots SET id = ? WHERE id = ?", (first, second))
    sql(repo, "UPDATE snapshots SET id = ? WHERE id = 'moving'", (second,))


def reorder(repo):
    sql(repo, "UPDATE snapshots SET started = 3000000000 - started")


# (name, tampering, what the error line says)
TAMPERING = [
    ("swap objects", swap_objects, "message rows"),
    ("flip a byte in user", lambda r: sql(
        r, "UPDATE messages SET user = 'alicf' WHERE user = 'alice'"), "message rows"),
    ("flip a byte in folder", lambda r: sql(
        r, "UPDATE messages SET folder = '.Junk' WHERE id = ?", (latest_row(r, "alice"),)),
     "message rows"),
    ("flip a byte in name", lambda r: sql(
        r, "UPDATE messages SET name = replace(name, ':2,RS', ':2,RT')"), "message rows"),
    ("flip a byte in size", lambda r: sql(
        r, "UPDATE messages SET size = size + 1 WHERE id = ?", (latest_row(r, "alice"),)),
     "message rows"),
    ("drop a row", lambda r: change_latest_snapshot(r, drop=[latest_row(r, "bob")]),
     "message rows"),
    ("add a row", add_row, "message rows"),
    ("change a file row", lambda r: sql(
        r, "UPDATE files SET mode = 511 WHERE kind = 'control'"), "file rows"),
    ("reorder snapshots", reorder, "record (id, order, times or counts)"),
    ("swap snapshot ids", swap_ids, "list of snapshots"),
    ("drop a snapshot", lambda r: sql(r, "DELETE FROM snapshots WHERE seq = 2"),
     "list of snapshots"),
    ("drop the authentication", lambda r: sql(r, "DROP TABLE snapshot_auth"),
     "authentication records are missing"),
]


@pytest.mark.parametrize("name,tamper,says", TAMPERING, ids=[t[0] for t in TAMPERING])
def test_tampering_is_named_by_verify_and_restore(two_snapshots, tmp_path, name, tamper, says):
    repo, key, _src, _ids = two_snapshots
    tamper(repo)
    key_args = ("--key-file", key) if key else ()
    for args in (("verify", repo, "--read-data") + key_args, ("verify", repo) + key_args,
                 ("restore", repo, "latest", tmp_path / "dst") + key_args,
                 ("restore", repo, "latest", tmp_path / "dst", "--user", "alice") + key_args):
        err = one_error_line(cli(*args))
        assert "damaged or tampered with" in err and says in err, (args, err)
    assert not os.path.exists(tmp_path / "dst/alice")
    # the failed check is what the monitoring sees
    assert backup.status(repo)["last_verify"]["ok"] is False


def test_swapped_objects_no_longer_restore_bobs_mail_as_alices(two_snapshots, tmp_path):
    """The reproduction: one alice and one bob row's objects swapped in the catalog."""
    repo, key, _src, _ids = two_snapshots
    swap_objects(repo)
    with pytest.raises(backup.CatalogDamaged, match="message rows"):
        backup.verify(repo, key_file=key, read_data=True)
    with pytest.raises(backup.CatalogDamaged, match="message rows"):
        backup.restore(repo, "latest", tmp_path / "dst", key_file=key, user="alice")
    assert not os.path.exists(tmp_path / "dst/alice")


def test_user_alicf_is_not_restored(two_snapshots, tmp_path):
    """The reproduction: one flipped byte in the catalog ("alice" -> "alicf")."""
    repo, key, _src, _ids = two_snapshots
    sql(repo, "UPDATE messages SET user = 'alicf' WHERE id = ?", (latest_row(repo, "alice"),))
    with pytest.raises(backup.CatalogDamaged):
        backup.verify(repo, key_file=key)
    with pytest.raises(backup.CatalogDamaged):
        backup.restore(repo, "latest", tmp_path / "dst", key_file=key)
    assert not os.path.exists(tmp_path / "dst/alicf")


def test_an_untouched_repository_verifies_and_restores(two_snapshots, tmp_path):
    repo, key, src, _ids = two_snapshots
    result = backup.verify(repo, key_file=key, read_data=True)
    assert result["ok"]
    assert result["catalog"] == ("authenticated" if key else "checksums")
    if key:     # without the key: the digests (bit rot), not the MACs
        assert backup.verify(repo)["catalog"] == "digests only (no key)"
    backup.restore(repo, "latest", tmp_path / "dst", key_file=key)
    assert snapshot_tree(tmp_path / "dst") == snapshot_tree(src)
    backup.prune(repo, key_file=key, keep_last=1)
    assert backup.verify(repo, key_file=key)["ok"]
    assert backup.run(repo, src, key_file=key)["id"]
    assert backup.verify(repo, key_file=key, read_data=True)["ok"]


@pytest.mark.parametrize("two_snapshots", ["encrypted"], indirect=True)
def test_a_prune_without_the_key_of_an_encrypted_repository_is_refused(two_snapshots):
    repo, key, _src, ids = two_snapshots
    with pytest.raises(backup.KeyFileError, match="prune needs its key"):
        backup.prune(repo, keep_last=1)
    assert [s["id"] for s in backup.list_snapshots(repo)] == list(ids)


@pytest.mark.parametrize("two_snapshots", ["encrypted"], indirect=True)
def test_a_tampered_index_cache_is_not_built_upon(two_snapshots, tmp_path):
    repo, key, src, ids = two_snapshots
    from mailstore.backup import index_cache
    path = os.path.join(repo, "index", ids[1] + ".marshal")
    with open(path, "rb") as f:
        rows = index_cache.decode(f.read())
    alice = [i for i, r in enumerate(rows) if r[1] == "alice"][0]
    bob = [i for i, r in enumerate(rows) if r[1] == "bob"][0]
    a, b = list(rows[alice]), list(rows[bob])
    a[12], b[12] = b[12], a[12]
    rows[alice], rows[bob] = tuple(a), tuple(b)
    with open(path, "wb") as f:
        f.write(index_cache.encode(rows))
    # The cache's keyed digest no longer matches: the run builds on the catalog's
    # authenticated rows instead, says so, and its snapshot restores what the source holds.
    result = backup.run(repo, src, key_file=key)
    assert [w for w in result["warnings"] if "index cache" in w], result
    assert len(backup.list_snapshots(repo)) == 3
    assert backup.verify(repo, key_file=key, read_data=True)["ok"]
    backup.restore(repo, result["id"], tmp_path / "dst", key_file=key)
    assert snapshot_tree(tmp_path / "dst") == snapshot_tree(src)


@pytest.mark.parametrize("two_snapshots", ["encrypted"], indirect=True)
def test_moved_encrypted_values_are_named(two_snapshots):
    """The reproduction: encrypted From/Subject values moved between messages."""
    repo, key, _src, _ids = two_snapshots
    db = sqlite3.connect(os.path.join(repo, "catalog.sqlite"))
    (a, sa), (b, sb) = db.execute("SELECT id, hdr_subject FROM objects WHERE hdr_subject IS"
                                  " NOT NULL ORDER BY id LIMIT 2").fetchall()
    with db:
        db.execute("UPDATE objects SET hdr_subject = ? WHERE id = ?", (sb, a))
        db.execute("UPDATE objects SET hdr_subject = ? WHERE id = ?", (sa, b))
    db.close()
    with pytest.raises(backup.CatalogDamaged, match="subject of object ({}|{}) fails".format(
            a, b)):
        backup.find(repo, key_file=key, subject="union")
    err = one_error_line(cli("verify", repo, "--key-file", key))
    assert "subject of object {}".format(min(a, b)) in err
    err = one_error_line(cli("find", repo, "--key-file", key))
    assert "fails authentication" in err


# -- config.json --------------------------------------------------------------------------------
def rewrite_config(repo, change, reseal=False):
    path = os.path.join(repo, "config.json")
    with open(path) as f:
        config = json.load(f)
    change(config)
    if reseal:      # what an attacker who knows the format does: a valid public checksum
        from mailstore.backup import auth
        config["mac"] = auth.config_mac(config, auth.PUBLIC_KEY)
    with open(path, "w") as f:
        json.dump(config, f)


def downgrade(config):
    config["encryption"] = "none"
    config["key_check"] = None


@pytest.mark.parametrize("two_snapshots", ["encrypted"], indirect=True)
@pytest.mark.parametrize("reseal", [False, True], ids=["edited", "edited and resealed"])
def test_a_downgrade_to_no_encryption_is_refused_with_the_key(two_snapshots, reseal):
    """The reproduction: config.json edited to "encryption": "none"; the nightly job passes
    --key-file and would store new mail in plaintext."""
    repo, key, src, _ids = two_snapshots
    rewrite_config(repo, downgrade, reseal)
    for args in (("run", repo, src, "--key-file", key), ("verify", repo, "--key-file", key),
                 ("restore", repo, "latest", os.path.join(repo, "..", "dst"), "--key-file",
                  key)):
        err = one_error_line(cli(*args))
        assert ("downgrade" in err if reseal else "config.json is damaged or was changed"
                in err), (args, err)


@pytest.mark.parametrize("two_snapshots", ["encrypted"], indirect=True)
def test_a_downgrade_keeping_the_key_check_is_refused(two_snapshots):
    repo, key, src, _ids = two_snapshots
    rewrite_config(repo, lambda c: c.update(encryption="none"), reseal=True)
    err = one_error_line(cli("run", repo, src, "--key-file", key))
    assert "says encryption 'none' but holds an encrypted repository's key check" in err


@pytest.mark.parametrize("two_snapshots", ["plain"], indirect=True)
def test_an_unencrypted_repository_still_ignores_a_key_file(two_snapshots, tmp_path):
    repo, key, src, _ids = two_snapshots
    other = tmp_path / "other"
    backup.init(tmp_path / "scratch", key_file=other)
    assert backup.run(repo, src, key_file=other)["id"]
    assert backup.verify(repo, key_file=tmp_path / "missing")["ok"]


@pytest.mark.parametrize("field,value", [("pack_size", 4096), ("compression", "small"),
                                         ("id", "another")])
def test_a_changed_config_json_is_named(two_snapshots, field, value):
    repo, key, _src, _ids = two_snapshots
    rewrite_config(repo, lambda c: c.update({field: value}))
    if key:
        err = one_error_line(cli("verify", repo, "--key-file", key))
        assert "config.json fails authentication with this key" in err
    else:
        err = one_error_line(cli("verify", repo))
        assert "config.json is damaged or was changed: it does not match its checksum" in err


def test_a_newer_format_is_refused(two_snapshots):
    repo, key, _src, _ids = two_snapshots
    rewrite_config(repo, lambda c: c.update(version=3))
    err = one_error_line(cli("list", repo))
    assert "has format version 3, newer than this mailstore knows (2)" in err


def test_a_config_json_made_format_1_again_is_refused(two_snapshots):
    repo, key, _src, _ids = two_snapshots
    rewrite_config(repo, lambda c: (c.update(version=1), c.pop("mac")))
    err = one_error_line(cli("verify", repo) if not key else cli("verify", repo, "--key-file",
                                                                  key))
    assert "says format 1 but the catalog" in err and "is authenticated" in err


# -- init and its key ---------------------------------------------------------------------------
def test_init_with_a_missing_key_file_needs_new_key(tmp_path):
    repo, key = tmp_path / "repo", tmp_path / "mistyped-key"
    err = one_error_line(cli("init", repo, "--key-file", key))
    assert "key file {} does not exist; to make a new key there, add --new-key".format(key) \
        in err
    assert not os.path.exists(repo) and not os.path.exists(key)
    r = cli("init", repo, "--key-file", key, "--new-key")
    assert r.returncode == 0, r.stderr
    assert "wrote a NEW key to {}".format(key) in r.stderr
    assert os.stat(key).st_mode & 0o777 == 0o600
    err = one_error_line(cli("init", tmp_path / "repo2", "--key-file", key, "--new-key"))
    assert "exists already" in err
    assert cli("init", tmp_path / "repo3", "--key-file", key).returncode == 0
    r = cli("init", tmp_path / "repo4", "--new-key")
    assert r.returncode == 2 and "--new-key needs --key-file" in r.stderr


@pytest.mark.parametrize("two_snapshots", ["encrypted"], indirect=True)
def test_a_downgrade_with_the_whole_catalog_resealed_is_refused_by_its_objects(two_snapshots):
    """An attacker who knows the format rewrites config.json and every checksum of an
    unencrypted repository: the objects still show the key encrypted them."""
    from mailstore.backup import auth
    repo, key, src, _ids = two_snapshots
    rewrite_config(repo, downgrade, reseal=True)
    with open(os.path.join(repo, "config.json")) as f:
        checksums = auth.Authenticator(repo, json.load(f)["id"], auth.PUBLIC_KEY, False)
    db = sqlite3.connect(os.path.join(repo, "catalog.sqlite"))
    with db:
        for (seq,) in db.execute("SELECT seq FROM snapshots").fetchall():
            checksums.seal_snapshot(db, seq, auth.message_rows(db, seq), auth.file_rows(db, seq))
    db.close()
    assert backup.verify(repo)["catalog"] == "checksums"    # a consistent plain repository
    err = one_error_line(cli("run", repo, src, "--key-file", key))
    assert "its objects are encrypted with this key" in err and "downgrade" in err
