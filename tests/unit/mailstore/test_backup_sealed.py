"""The off-host copy of an encrypted repository: what it is served (`backup.served_paths` /
`backup.export`, the list the server's forced command serves) reveals no user, folder or
file name, no From/Subject/Date, no owner and no content hash; with the key alone it
restores bit-exact; a damaged, cut or older sealed catalog is refused loudly; a copy made
before catalogs were sealed still restores."""
import hashlib
import os
import shutil
import sqlite3
import stat
import struct
import tempfile

import pytest
from click.testing import CliRunner

from mailstore import backup
from mailstore.backup import keys, sealed, sealed_rows, sealed_state, sealed_v1
from mailstore.cli import main

from tests.harness import flip_bit, make_tree, snapshot_tree
from tests.harness.maildir_trees import USERS, message_paths


def _served_copy(repo, copy):
    """What the backup host holds after a pull: the export view's files, read-only."""
    view = backup.export(repo)
    shutil.copytree(view, copy)
    shutil.rmtree(view)
    for top, dirs, files in os.walk(copy):
        for name in files:
            os.chmod(os.path.join(top, name), 0o444)
    return copy


def _make(tmp_path, key=True, messages=0):
    """A repository of make_tree's Maildirs (and `messages` small ones more) after a run."""
    src, repo = tmp_path / "src", tmp_path / "repo"
    key_file = str(tmp_path / "key") if key else None
    make_tree(src)
    _add_messages(src, 0, messages)
    backup.init(repo, key_file=key_file)
    backup.run(repo, src, key_file=key_file)
    return src, repo, key_file


def _needles(src):
    """What must not show in an encrypted repository's copy: user, folder and file names,
    header values, the Date, the source path, and the plain SHA-256 of every message."""
    found = {b"mail.cacert.test", b"sender0@example.org", b"Sender 1", b"R=C3=A9union",
             "Réunion".encode(), b"Nov 2026", str(src).encode(), b"dovecot-uidlist",
             b"subscriptions", b"dovecot-keywords"}
    for user, folders in USERS.items():
        found.add(user.encode())
        found.update(f.encode() for f in folders if f)
    for path in message_paths(str(src)):
        with open(path, "rb") as f:
            data = f.read()
        digest = hashlib.sha256(data)
        found.update({digest.hexdigest().encode(), digest.digest(),
                      os.path.basename(path).split(":")[0].encode()})
    return found


def _all_bytes(root):
    out = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            out[os.path.relpath(os.path.join(top, name), root)] = b""
        for name in files:
            with open(os.path.join(top, name), "rb") as f:
                out[os.path.relpath(os.path.join(top, name), root)] = f.read()
    return out


def test_the_served_copy_of_an_encrypted_repository_reveals_no_name_header_or_hash(tmp_path):
    src, repo, key = _make(tmp_path)
    paths = backup.served_paths(repo)
    assert "catalog.sqlite" not in paths and not [p for p in paths if p.startswith("index")]
    assert {"config.json", sealed.NAME} <= set(paths)
    assert [p for p in paths if p.startswith(sealed.DIR + "/")]
    copy = _served_copy(repo, tmp_path / "copy")
    files = _all_bytes(copy)
    assert sorted(p for p in files if os.path.isfile(copy / p)) == paths
    needles = _needles(src)
    # (the test is sound: the server's own catalog holds them)
    with open(repo / "catalog.sqlite", "rb") as f:
        clear = f.read()
    assert b"alice" in clear and b"mail.cacert.test" in clear
    for rel, data in files.items():
        for needle in needles:
            assert needle not in rel.encode() and needle not in data, (rel, needle)
    # nor where one object ends and the next begins: no record header in clear (magic, id,
    # codec, length), at its place or anywhere else
    db = sqlite3.connect(str(repo / "catalog.sqlite"))
    records = db.execute("SELECT id, pack, offset, length FROM objects").fetchall()
    db.close()
    assert len(records) > 20
    for oid, pack, offset, length in records:
        data = files[os.path.join("packs", pack[:2], pack + ".pack")]
        clear = struct.pack(">4s32sBI", b"MSB1", bytes.fromhex(oid), 0, length - 41)
        assert data[offset:offset + 41] not in (clear, clear[:-5] + b"\x01" + clear[-4:])
        for part in (b"MSB1", bytes.fromhex(oid), struct.pack(">I", length - 41)):
            assert part not in data, (pack, offset, part)


def test_an_unencrypted_repository_is_served_whole_as_before(tmp_path):
    src, repo, _key = _make(tmp_path, key=False)
    paths = backup.served_paths(repo)
    assert "catalog.sqlite" in paths and "config.json" in paths
    assert not os.path.exists(repo / sealed.NAME)
    assert not [p for p in paths if p == "lock" or p.startswith("tmp/")]


def test_a_sealed_copy_restores_a_user_bit_exact_with_the_key_alone(tmp_path):
    src, repo, key = _make(tmp_path)
    copy = _served_copy(repo, tmp_path / "copy")
    os.chmod(copy, 0o555)
    before = set(os.listdir(tempfile.gettempdir()))
    snaps = backup.list_snapshots(copy, key_file=key)
    assert [s["id"] for s in snaps] == [s["id"] for s in backup.list_snapshots(repo, key)]
    assert backup.find(copy, key_file=key, user="alice", subject="INBOX")
    assert backup.status(copy, key_file=key)["snapshots"] == 1
    checked = backup.verify(copy, key_file=key, read_data=True)
    assert checked["ok"] and checked["catalog"] == "sealed, opened with the key"
    result = backup.restore(copy, "latest", tmp_path / "dst", key_file=key, user="alice")
    assert not result["errors"]
    assert snapshot_tree(tmp_path / "dst" / "alice") == snapshot_tree(src / "alice")
    # nothing decrypted stays behind
    assert not [n for n in set(os.listdir(tempfile.gettempdir())) - before
                if n.startswith("mailstore-catalog-")]
    # without the key: one line that asks for it
    r = CliRunner().invoke(main, ["backup", "list", str(copy)], env={"MAILSTORE_KEY_FILE": ""})
    assert r.exit_code == 1 and r.output.count("\n") == 1, r.output
    assert "sealed" in r.output and "--key-file" in r.output
    # run and prune refuse it
    r = CliRunner().invoke(main, ["backup", "prune", str(copy), "--keep-last", "1",
                                  "--key-file", key])
    assert r.exit_code == 1 and "sealed" in r.output and r.output.count("\n") == 1, r.output


def test_without_the_key_verify_checks_the_framing_and_the_packs(tmp_path):
    src, repo, key = _make(tmp_path)
    copy = _served_copy(repo, tmp_path / "copy")
    r = CliRunner().invoke(main, ["backup", "verify", str(copy), "--snapshot", "latest"],
                           env={"MAILSTORE_KEY_FILE": ""})
    assert r.exit_code == 0, r.output
    assert r.output.startswith("mailstore backup: verify ok: sealed catalog generation ")
    pack = [p for p in backup.served_paths(repo) if p.startswith("packs/")][0]
    os.chmod(copy / pack, 0o644)
    with open(copy / pack, "r+b") as f:
        f.truncate(os.path.getsize(copy / pack) - 3)
    r = CliRunner().invoke(main, ["backup", "verify", str(copy)],
                           env={"MAILSTORE_KEY_FILE": ""})
    assert r.exit_code == 1 and "DAMAGED pack " in r.output and "truncated" in r.output


def _chunk(copy, index=0):
    """The path of the `index`th chunk file of the copy's sealed catalog, made writable."""
    names = sorted(os.listdir(copy / sealed.DIR))
    path = copy / sealed.DIR / names[index]
    os.chmod(path, 0o644)
    return path


def _tamper_cases(tmp_path, repo, key):
    """(name, copy, seen without the key) of copies whose sealed catalog was changed in one
    way each."""
    manifest = (repo / sealed.NAME).read_bytes()
    size = len(manifest)
    other = tmp_path / "other-repo"
    backup.init(other, key_file=key)
    other_chunk = sorted((other / sealed.DIR).iterdir())[0].read_bytes()
    cases = []
    for name, change, keyless in (
            ("a byte flipped in a chunk", lambda c: flip_bit(str(_chunk(c)), 20), True),
            ("a chunk swapped for another's", lambda c: shutil.copyfile(
                _chunk(c, 1), _chunk(c, 0)), True),
            ("a chunk missing", lambda c: os.unlink(_chunk(c, 1)), True),
            ("another repository's chunk", lambda c: _chunk(c).write_bytes(other_chunk), True),
            ("a byte flipped in the manifest's body", lambda c: flip_bit(
                str(c / sealed.NAME), size - 20), False),
            ("a byte flipped in the header", lambda c: flip_bit(
                str(c / sealed.NAME), manifest.index(b'"generation"') + 2), True),
            ("truncated", lambda c: os.truncate(c / sealed.NAME, size - 10), True),
            ("cut after the header", lambda c: os.truncate(
                c / sealed.NAME, manifest.index(b"]]") + manifest[manifest.index(b"]]"):]
                .index(b"}") + 1), True)):
        copy = _served_copy(repo, tmp_path / name.replace(" ", "-").replace("'", ""))
        os.chmod(copy / sealed.NAME, 0o644)
        change(copy)
        cases.append((name, copy, keyless))
    return cases


def _refused_in_one_line(tmp_path, copy, key, name, keyless, problems=1):
    for args in (["restore", str(copy), "latest", str(tmp_path / "out"), "--user",
                  "alice", "--key-file", key],
                 ["verify", str(copy), "--key-file", key],
                 ["list", str(copy), "--key-file", key]):
        r = CliRunner().invoke(main, ["backup"] + args)
        assert r.exit_code == 1, (name, args, r.output)
        assert r.output.count("\n") == 1 and r.output.startswith(
            "mailstore backup: error: sealed catalog "), (name, r.output)
        assert "tampered" in r.output or "fails authentication" in r.output, r.output
    assert not os.path.exists(tmp_path / "out")
    if keyless:      # framing and the chunk files' lengths and SHA-256: seen without the key
        r = CliRunner().invoke(main, ["backup", "verify", str(copy)],
                               env={"MAILSTORE_KEY_FILE": ""})
        assert r.exit_code == 1 and "DAMAGED sealed catalog" in r.output, (name, r.output)
        damaged = [line for line in r.output.splitlines()
                   if line.startswith("mailstore backup: DAMAGED")]
        # (one line per chunk file missing or changed)
        assert (len(damaged) == problems if problems else damaged) and all(
            "tampered" in line for line in damaged), (name, r.output)


def test_a_damaged_or_cut_sealed_catalog_is_refused_in_one_line(tmp_path):
    src, repo, key = _make(tmp_path, messages=1500)
    assert len(os.listdir(repo / sealed.DIR)) >= 2      # (else no chunk to swap)
    for name, copy, keyless in _tamper_cases(tmp_path, repo, key):
        _refused_in_one_line(tmp_path, copy, key, name, keyless)


def test_an_older_nights_sealed_catalog_is_refused_against_the_previous_copy(tmp_path):
    src, repo, key = _make(tmp_path)
    older = _served_copy(repo, tmp_path / "night1")
    (src / "alice" / "Maildir" / "new" / "1800000000.new.mail").write_bytes(b"Subject: x\n\n")
    backup.run(repo, src, key_file=key)
    newer = _served_copy(repo, tmp_path / "night2")
    assert backup.verify(newer, previous=str(older))["ok"]
    assert backup.verify(newer, key_file=key, previous=str(older))["ok"]
    # the second night's copy gets the first night's sealed catalog, its chunks too
    swapped = _served_copy(repo, tmp_path / "night2-swapped")
    os.chmod(swapped / sealed.NAME, 0o644)
    shutil.copyfile(older / sealed.NAME, swapped / sealed.NAME)
    os.chmod(swapped / sealed.DIR, 0o755)
    for chunk in (older / sealed.DIR).iterdir():
        if not (swapped / sealed.DIR / chunk.name).exists():
            shutil.copyfile(chunk, swapped / sealed.DIR / chunk.name)
    for extra in ([], ["--key-file", key]):
        r = CliRunner().invoke(main, ["backup", "verify", str(swapped), "--previous",
                                      str(newer)] + extra, env={"MAILSTORE_KEY_FILE": ""})
        assert r.exit_code == 1, r.output
        assert "older than the previous copy's" in r.output, r.output
    # the older night's manifest alone: its chunks that changed since are not there
    alone = _served_copy(repo, tmp_path / "night2-older-manifest")
    os.chmod(alone / sealed.NAME, 0o644)
    shutil.copyfile(older / sealed.NAME, alone / sealed.NAME)
    # (every group the night changed: its messages, its snapshot, its pack, the small tables)
    _refused_in_one_line(tmp_path, alone, key, "an older manifest", True, problems=None)
    for extra in ([], ["--key-file", key]):
        r = CliRunner().invoke(main, ["backup", "verify", str(alone), "--previous",
                                      str(newer)] + extra, env={"MAILSTORE_KEY_FILE": ""})
        assert r.exit_code == 1 and ("older than the previous copy's" in r.output or
                                     " is missing" in r.output), r.output
    # the same generation with other bytes: one of them was changed
    r = CliRunner().invoke(main, ["backup", "verify", str(newer), "--previous",
                                  str(older)], env={"MAILSTORE_KEY_FILE": ""})
    assert r.exit_code == 0, r.output
    other = _served_copy(repo, tmp_path / "night2-other")
    os.chmod(other / sealed.NAME, 0o644)
    flip_bit(str(other / sealed.NAME), os.path.getsize(other / sealed.NAME) - 20)
    r = CliRunner().invoke(main, ["backup", "verify", str(newer), "--previous", str(other)],
                           env={"MAILSTORE_KEY_FILE": ""})
    assert r.exit_code == 1 and "not the same file" in r.output, r.output
    # another repository's sealed catalog (the same key) in its place
    repo2 = tmp_path / "repo2"
    backup.init(repo2, key_file=key)
    shutil.copyfile(repo2 / sealed.NAME, swapped / sealed.NAME)
    r = CliRunner().invoke(main, ["backup", "list", str(swapped), "--key-file", key])
    assert r.exit_code == 1 and "belongs to repository" in r.output, r.output


def test_a_format_1_sealed_catalog_of_an_older_mailstore_still_opens_and_verifies(tmp_path):
    """Copies older mailstores made (one file, sealed_v1.py) stay on the backup host for
    weeks: they are read, checked and restored as before."""
    src, repo, key = _make(tmp_path)
    old = _served_copy(repo, tmp_path / "old")
    for path in (old, old / sealed.DIR):
        os.chmod(path, 0o755)
    shutil.rmtree(old / sealed.DIR)
    os.chmod(old / sealed.NAME, 0o644)
    generation = sealed.inspect(str(repo / sealed.NAME), _repo_id(repo))["generation"]
    sealed_v1.write(str(old / sealed.NAME), _repo_id(repo), keys.load_key_file(key),
                    str(repo / "catalog.sqlite"), generation)
    assert (old / sealed.NAME).read_bytes()[32:].index(b'"version":1') > 0
    r = CliRunner().invoke(main, ["backup", "verify", str(old)], env={"MAILSTORE_KEY_FILE": ""})
    assert r.exit_code == 0 and "verify ok: sealed catalog generation" in r.output, r.output
    assert backup.verify(old, key_file=key, read_data=True)["ok"]
    result = backup.restore(old, "latest", tmp_path / "dst", key_file=key, user="bob")
    assert not result["errors"]
    assert snapshot_tree(tmp_path / "dst" / "bob") == snapshot_tree(src / "bob")
    # the night after it, a format 2 copy: compared by generation as before
    backup.seal(repo, key_file=key)
    new = _served_copy(repo, tmp_path / "new")
    assert backup.verify(new, previous=str(old))["ok"]
    r = CliRunner().invoke(main, ["backup", "verify", str(old), "--previous", str(new)],
                           env={"MAILSTORE_KEY_FILE": ""})
    assert r.exit_code == 1 and "older than the previous copy's" in r.output, r.output
    # and a damaged one is refused as before: with the key a flipped bit, without it a cut
    flip_bit(str(old / sealed.NAME), os.path.getsize(old / sealed.NAME) - 40)
    r = CliRunner().invoke(main, ["backup", "list", str(old), "--key-file", key])
    assert r.exit_code == 1 and "fails authentication at chunk 0" in r.output, r.output
    os.truncate(old / sealed.NAME, os.path.getsize(old / sealed.NAME) - 100)
    r = CliRunner().invoke(main, ["backup", "verify", str(old)], env={"MAILSTORE_KEY_FILE": ""})
    assert r.exit_code == 1 and "DAMAGED sealed catalog" in r.output and "truncated" in \
        r.output, r.output


def test_a_second_night_adds_few_chunk_files_and_keeps_the_others(tmp_path):
    """The off-host copy's nightly transfer follows the new mail, not the catalog's size:
    a chunk whose rows did not change keeps its file and name (the pull hard-links it)."""
    src, repo, key = _make(tmp_path, messages=4000)

    def chunks():
        return {p.name: p.stat().st_size for p in (repo / sealed.DIR).iterdir()}

    first = chunks()
    _add_messages(src, 4000, 40)
    backup.run(repo, src, key_file=key)
    second = chunks()
    new = set(second) - set(first)
    kept = set(second) & set(first)
    assert new and len(kept) > 2 * len(new), (len(kept), len(new))
    assert sum(second[n] for n in new) * 5 < sum(second.values())
    # the kept ones are the very files of the night before, not written again
    assert all(second[n] == first[n] for n in kept)
    # the chunks the catalog no longer uses are gone; the copy holds exactly the listed ones
    info = sealed.inspect(str(repo / sealed.NAME), _repo_id(repo))
    assert info["chunks"] == len(second)
    assert sorted(p for p in backup.served_paths(repo) if p.startswith(sealed.DIR + "/")) == \
        sorted(sealed.DIR + "/" + n for n in second)
    # and it is the same catalog: every table, row for row
    copy = _served_copy(repo, tmp_path / "copy")
    from mailstore.backup.repository import Repository
    with Repository(copy, key_file=key, readonly=True) as opened:
        clear = sqlite3.connect(str(repo / "catalog.sqlite"))
        try:
            assert _dump(opened.db) == _dump(clear)
        finally:
            clear.close()


def _dump(db):
    """Every table row for row, but the seal state's (the server's own, never sealed)."""
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                       "ORDER BY name") if r[0] not in sealed_state.LOCAL]
    out = {"schema": db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name")
           .fetchall(), "user_version": db.execute("PRAGMA user_version").fetchone()}
    for table in tables:
        out[table] = sorted(db.execute('SELECT * FROM "{}"'.format(table)).fetchall(),
                            key=repr)
    return out


def _add_messages(src, first, count):
    for i in range(first, first + count):
        folder = src / USERS_WITH_MAIL[i % len(USERS_WITH_MAIL)] / "Maildir" / "cur"
        (folder / "17000{:05d}.M{}P1.host:2,S".format(i, i)).write_text(
            "From: a{}@example.org\nSubject: message {}\n\nbody {}\n".format(i, i, i))


USERS_WITH_MAIL = ("alice", "bob")


def test_every_run_and_prune_seals_a_newer_generation(tmp_path):
    src, repo, key = _make(tmp_path)
    first = sealed.inspect(str(repo / sealed.NAME), _repo_id(repo))["generation"]
    backup.run(repo, src, key_file=key)
    second = sealed.inspect(str(repo / sealed.NAME), _repo_id(repo))["generation"]
    backup.prune(repo, key_file=key, keep_last=1)
    third = sealed.inspect(str(repo / sealed.NAME), _repo_id(repo))["generation"]
    assert first < second < third
    assert stat.S_IMODE(os.stat(repo / sealed.NAME).st_mode) == 0o600
    copy = _served_copy(repo, tmp_path / "copy")
    assert len(backup.list_snapshots(copy, key_file=key)) == 1
    r = CliRunner().invoke(main, ["backup", "seal", str(repo), "--key-file", key])
    assert r.exit_code == 0 and "generation {}".format(third + 1) in r.output, r.output


def _repo_id(repo):
    from mailstore.backup.repository import read_config
    return read_config(str(repo))["id"]


def test_an_encrypted_repository_without_a_sealed_catalog_is_not_served(tmp_path):
    src, repo, key = _make(tmp_path)
    os.unlink(repo / sealed.NAME)      # as a repository last written by an older mailstore
    r = CliRunner().invoke(main, ["backup", "export", str(repo)])
    assert r.exit_code == 1 and r.output.count("\n") == 1, r.output
    assert "no sealed catalog" in r.output and "mailstore backup seal" in r.output
    assert not os.path.exists(repo / "offhost-view")


def test_a_copy_made_before_catalogs_were_sealed_still_restores(tmp_path):
    src, repo, key = _make(tmp_path)
    # what the pull served before: everything but the lock and tmp/ (no sealed catalog then)
    old = tmp_path / "old-copy"
    shutil.copytree(repo, old, ignore=shutil.ignore_patterns("lock", "tmp", sealed.NAME))
    assert (old / "catalog.sqlite").exists() and (old / "index").is_dir()
    assert backup.verify(old, snapshot="latest")["ok"]      # the key-less check as before
    result = backup.restore(old, "latest", tmp_path / "dst", key_file=key, user="bob")
    assert not result["errors"]
    assert snapshot_tree(tmp_path / "dst" / "bob") == snapshot_tree(src / "bob")
    # and a sealed copy after it compares with it as far as it can: a warning, no failure
    new = _served_copy(repo, tmp_path / "new-copy")
    checked = backup.verify(new, previous=str(old))
    assert checked["ok"] and "no sealed catalog" in checked["warnings"][0]



def test_a_sealed_copy_put_back_on_the_server_is_unsealed_and_backs_up_again(tmp_path):
    src, repo, key = _make(tmp_path)
    copy = _served_copy(repo, tmp_path / "copy")
    # the rebuild: the night copied back, made writable
    back = tmp_path / "back"
    shutil.copytree(copy, back)
    for top, dirs, files in os.walk(back):
        for name in files:
            os.chmod(os.path.join(top, name), 0o600)
    r = CliRunner().invoke(main, ["backup", "run", str(back), str(src), "--key-file", key])
    assert r.exit_code == 1 and "sealed" in r.output, r.output
    r = CliRunner().invoke(main, ["backup", "unseal", str(back), "--key-file", key])
    assert r.exit_code == 0 and "1 snapshots" in r.output, r.output
    assert stat.S_IMODE(os.stat(back / "catalog.sqlite").st_mode) == 0o600
    r = CliRunner().invoke(main, ["backup", "unseal", str(back), "--key-file", key])
    assert r.exit_code == 1 and "has a catalog.sqlite already" in r.output, r.output
    (src / "bob" / "Maildir" / "new" / "1800000001.after.mail").write_bytes(b"Subject: y\n\n")
    backup.run(back, src, key_file=key)
    assert len(backup.list_snapshots(back, key_file=key)) == 2
    result = backup.restore(back, "latest", tmp_path / "dst", key_file=key, user="bob")
    assert not result["errors"]
    assert snapshot_tree(tmp_path / "dst" / "bob") == snapshot_tree(src / "bob")


def test_what_an_interrupted_seal_left_goes_with_the_next_run(tmp_path):
    src, repo, key = _make(tmp_path, messages=1500)
    listed = sorted(os.listdir(repo / sealed.DIR))
    # a seal killed after writing chunks, before (or while) replacing the manifest
    for name in ("0" * 32, "1" * 32 + ".tmp"):
        (repo / sealed.DIR / name).write_bytes(b"left over")
    (repo / (sealed.NAME + ".tmp")).write_bytes(b"left over")
    assert backup.served_paths(repo).count(sealed.DIR + "/" + "0" * 32) == 1
    backup.run(repo, src, key_file=key)
    after = sorted(os.listdir(repo / sealed.DIR))
    assert "0" * 32 not in after and "1" * 32 + ".tmp" not in after
    assert not os.path.exists(repo / (sealed.NAME + ".tmp"))
    # nothing the new manifest needs went, and what did not change is the same file
    assert sealed.inspect(str(repo / sealed.NAME), _repo_id(repo))["chunks"] == len(after)
    assert set(listed) & set(after)


def test_a_row_stream_that_is_not_a_whole_catalog_is_refused(tmp_path):
    """What the key authenticates is still read as data only: a stream cut short, rows that
    do not fit their table, or lines out of place are refused, never executed or guessed."""
    src, repo, key = _make(tmp_path)
    db = sqlite3.connect(str(repo / "catalog.sqlite"))
    stream = b"".join(sealed_rows.chunks(db))
    db.close()
    lines = stream.split(b"\n")[:-1]
    meta = lines.index(b'{"table":"meta","columns":["key","value"]}')
    cases = {
        "it ends early": lines[:-1],
        "it ends after": lines[:meta + 1] + [b'["extra","row"]'] + lines[meta + 1:],
        "rows of meta do not fit": lines[:meta + 1] + [b'["a","b","c"]'] + lines[meta + 1:],
        "rows of meta do not fit it": lines[:meta + 1] + [b'[["nested"],"b"]'] +
        lines[meta + 1:],
        "which its schema lacks": lines[:2] + [b'{"table":"other","columns":["x"]}'] +
        lines[2:],
        "not readable": lines[:3] + [b"\xff"] + lines[3:],
        "does not start with the schema": lines[1:],
    }
    for n, (text, case) in enumerate(cases.items()):
        loader = sealed_rows.Loader(str(tmp_path / "db{}".format(n)))
        try:
            with pytest.raises(sealed_rows.StreamError, match=text):
                loader.feed(b"\n".join(case) + b"\n")
                loader.finish()
        finally:
            loader.close()
    loader = sealed_rows.Loader(str(tmp_path / "whole"))
    loader.feed(stream)
    loader.finish()
    loader.close()


def _seal_json(repo, key):
    r = CliRunner().invoke(main, ["backup", "seal", str(repo), "--key-file", key, "--json"])
    assert r.exit_code == 0, r.output
    import json
    return json.loads(r.output)


def _unsealed_equals_catalog(repo, key):
    """The sealed catalog, opened with the key, holds catalog.sqlite's rows, every table."""
    conn, _generation = sealed.open_catalog(str(repo / sealed.NAME), _repo_id(repo),
                                            keys.load_key_file(key))
    clear = sqlite3.connect(str(repo / "catalog.sqlite"))
    try:
        return _dump(conn) == _dump(clear)
    finally:
        conn.close()
        clear.close()


# the chunks every seal encodes: the schema, the line of each table sealed in groups, and
# the small tables with the end
_ALWAYS = 2 + len(sealed_state.TRACKED)


def test_a_seal_encodes_only_the_groups_that_changed(tmp_path):
    """The seal's work follows what changed since the last one, not the catalog's size."""
    src, repo, key = _make(tmp_path, messages=4000)
    full = _seal_json(repo, key)        # an unchanged catalog: nothing but the small tables
    assert full["encoded"] == _ALWAYS and full["chunks"] > _ALWAYS + 4, full
    files = {p.name: p.stat().st_mtime_ns for p in (repo / sealed.DIR).iterdir()}
    _add_messages(src, 4000, 40)
    backup.run(repo, src, key_file=key)
    after = {p.name: p.stat().st_mtime_ns for p in (repo / sealed.DIR).iterdir()}
    written = [n for n in after if files.get(n) != after[n]]
    # the run's seal wrote the small tables, its snapshot's groups, its pack's and the last
    # messages' group: a handful, whatever the catalog's size
    sizes = {n: os.path.getsize(repo / sealed.DIR / n) for n in after}
    assert len(written) <= _ALWAYS + 4 and len(after) > len(written), (written, after)
    assert sum(sizes[n] for n in written) * 3 < sum(sizes.values()), (written, sizes)
    assert _unsealed_equals_catalog(repo, key)
    assert _seal_json(repo, key)["encoded"] == _ALWAYS


def test_a_prune_that_moves_objects_seals_their_packs_anew(tmp_path):
    src, repo, key = _make(tmp_path, messages=600)
    before = dict(sqlite3.connect(str(repo / "catalog.sqlite")).execute(
        "SELECT id, pack || offset FROM objects"))
    for path in sorted((src / "alice" / "Maildir" / "cur").iterdir())[::2]:
        path.unlink()
    backup.run(repo, src, key_file=key)
    result = backup.prune(repo, key_file=key, keep_last=1)
    assert result["packs_rewritten"] > 0, result
    after = dict(sqlite3.connect(str(repo / "catalog.sqlite")).execute(
        "SELECT id, pack || offset FROM objects"))
    assert any(before[i] != place for i, place in after.items())     # objects moved
    assert _unsealed_equals_catalog(repo, key)


def test_a_change_that_keeps_ids_and_lengths_is_sealed_anew(tmp_path):
    """A row deleted and its id used again, or changed in place to the same length: each is
    in the next sealed catalog (no count or sum of a group would tell)."""
    src, repo, key = _make(tmp_path, messages=300)
    db = sqlite3.connect(str(repo / "catalog.sqlite"), isolation_level=None)
    try:
        top = db.execute("SELECT * FROM messages ORDER BY id DESC LIMIT 1").fetchone()
        db.execute("DELETE FROM messages WHERE id = ?", (top[0],))
        db.execute("INSERT INTO messages VALUES ({})".format(", ".join("?" * len(top))),
                   top[:4] + (top[4].swapcase(),) + top[5:])
        db.execute("UPDATE messages SET mtime_ns = mtime_ns + 1 WHERE id = 1")
        db.execute("UPDATE objects SET size = size + 1 WHERE id = (SELECT MIN(id) FROM objects)")
    finally:
        db.close()
    _seal_json(repo, key)
    assert _unsealed_equals_catalog(repo, key)


def test_a_chunk_file_missing_or_cut_is_written_again_by_the_next_seal(tmp_path):
    src, repo, key = _make(tmp_path, messages=1500)
    names = sorted(sealed.chunk_files(str(repo)),
                   key=lambda n: -os.path.getsize(repo / sealed.DIR / n))
    os.unlink(repo / sealed.DIR / names[0])
    os.truncate(repo / sealed.DIR / names[1], 10)
    result = _seal_json(repo, key)
    assert result["encoded"] == _ALWAYS + 2, result
    assert sealed.inspect(str(repo / sealed.NAME), _repo_id(repo))["chunks"] == \
        result["chunks"]
    assert _unsealed_equals_catalog(repo, key)


def test_a_catalog_sealed_without_change_tracking_is_sealed_whole_once(tmp_path):
    """A repository last sealed by an older mailstore (no triggers, no seal state): the next
    seal encodes every group, and tracks changes from then on."""
    src, repo, key = _make(tmp_path, messages=300)
    db = sqlite3.connect(str(repo / "catalog.sqlite"), isolation_level=None)
    try:
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")\
                .fetchall():
            db.execute('DROP TRIGGER "{}"'.format(name))
        db.execute("UPDATE messages SET mtime_ns = mtime_ns + 1")     # unseen by any trigger
    finally:
        db.close()
    whole = _seal_json(repo, key)
    assert whole["encoded"] == whole["chunks"], whole
    assert _unsealed_equals_catalog(repo, key)
    assert _seal_json(repo, key)["encoded"] == _ALWAYS
