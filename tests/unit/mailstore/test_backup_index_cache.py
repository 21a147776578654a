"""The index cache (REPO/index/<id>.marshal) is only a cache: whatever happens to it, the next
run records every message with its own content, says in one warning line that it did not
trust the cache, and `verify` reports a damaged cache as a warning."""
import glob
import hashlib
import json
import marshal
import os
import sqlite3
import subprocess
import sys

import pytest

from mailstore import backup
from mailstore.backup import index_cache

from tests.harness import make_tree, snapshot_tree


@pytest.fixture(params=["plain", "encrypted"])
def two_runs(request, tmp_path):
    """(repo, key, src) after a first run and an incremental one (whose cache the tests
    damage)."""
    key = str(tmp_path / "key") if request.param == "encrypted" else None
    repo, src = str(tmp_path / "repo"), tmp_path / "src"
    backup.init(repo, key_file=key)
    make_tree(src)
    backup.run(repo, src, key_file=key)
    assert backup.run(repo, src, key_file=key)["scan"] == "incremental"
    return repo, key, src


def _cache_file(repo):
    found = glob.glob(os.path.join(repo, "index", "*.marshal"))
    assert len(found) == 1
    return found[0]


def _change_rows(repo, change):
    """Rewrite the cache with `change(rows)`: still a well-formed cache file."""
    path = _cache_file(repo)
    with open(path, "rb") as f:
        before = f.read()
    rows = index_cache.decode(before)
    change(rows)
    after = index_cache.encode(rows)
    with open(path, "wb") as f:
        f.write(after)
    return after


def _other_id(rows):
    # the id of another message: the snapshot would hold that one twice and row 0's not at all
    rows[0] = (rows[1][0],) + tuple(rows[0][1:])


def _other_object(rows):
    # another message's content under row 0's name
    rows[0] = tuple(rows[0][:12]) + (rows[1][12],)


def _dropped(rows):
    del rows[0]


# damage -> (change to the rows, whether row 0's message gets a flag change before the run:
# a message whose name changed is recorded from its cached row, object and all)
DAMAGE = {"another message's id": (_other_id, False),
          "another message's object": (_other_object, True),
          "a row dropped": (_dropped, False)}


def _flag_change(src, row):
    folder_dir = os.path.join(str(src), row[1], "Maildir", row[2])
    os.rename(os.path.join(folder_dir, row[3], row[4]),
              os.path.join(folder_dir, "cur", row[5] + ":2,FS"))


def _restores_the_source(repo, key, src, dst):
    assert not backup.restore(repo, "latest", dst, key_file=key)["errors"]
    assert snapshot_tree(dst) == snapshot_tree(src)


def _cache_warnings(warnings):
    return [w for w in warnings if "index cache" in w]


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_cache_costs_one_warning_never_a_message(two_runs, tmp_path, damage):
    repo, key, src = two_runs
    change, flag_change = DAMAGE[damage]
    with open(_cache_file(repo), "rb") as f:
        first = index_cache.decode(f.read())[0]
    _change_rows(repo, change)
    if flag_change:
        _flag_change(src, first)
    result = backup.run(repo, src, key_file=key)
    assert result["messages"] == 16
    _restores_the_source(repo, key, src, tmp_path / "dst")
    assert len(_cache_warnings(result["warnings"])) == 1 == len(result["warnings"]), result
    assert "read from the catalog instead" in result["warnings"][0]
    # that run wrote a good cache again: the next run trusts it and has nothing to say
    again = backup.run(repo, src, key_file=key)
    assert again["warnings"] == [] and again["messages"] == 16
    _restores_the_source(repo, key, src, tmp_path / "dst2")


def test_a_cache_whose_digest_was_forged_without_the_key_is_not_trusted(tmp_path):
    """On an encrypted repository the digest is keyed: rewriting the cache and its recorded
    digest (an unkeyed SHA-256, all one can compute without the key) is caught."""
    key, repo, src = str(tmp_path / "key"), str(tmp_path / "repo"), tmp_path / "src"
    backup.init(repo, key_file=key)
    make_tree(src)
    backup.run(repo, src, key_file=key)
    backup.run(repo, src, key_file=key)
    snapshot_id = os.path.basename(_cache_file(repo))[:-len(".marshal")]
    data = _change_rows(repo, _other_id)
    forged = hashlib.sha256(snapshot_id.encode() + b"\0" + data).hexdigest()
    db = sqlite3.connect(os.path.join(repo, "catalog.sqlite"))
    with db:
        db.execute("INSERT OR REPLACE INTO meta VALUES ('index_cache', ?)",
                   (json.dumps({"snapshot": snapshot_id, "digest": forged}),))
    db.close()
    result = backup.run(repo, src, key_file=key)
    _restores_the_source(repo, key, src, tmp_path / "dst")
    assert len(_cache_warnings(result["warnings"])) == 1 and result["messages"] == 16


def test_a_cache_the_catalog_has_no_digest_for_is_not_trusted(two_runs, tmp_path):
    """A cache written by an older mailstore (no digest in the catalog) is not used: the run
    reads the catalog, as it must for a file nothing vouches for."""
    repo, key, src = two_runs
    db = sqlite3.connect(os.path.join(repo, "catalog.sqlite"))
    with db:
        db.execute("DELETE FROM meta WHERE key = 'index_cache'")
    db.close()
    _change_rows(repo, _other_id)
    result = backup.run(repo, src, key_file=key)
    assert result["messages"] == 16
    _restores_the_source(repo, key, src, tmp_path / "dst")


def test_an_intact_cache_is_used_and_the_catalog_rows_are_not_read(two_runs, monkeypatch):
    """The cache exists for speed: a good one must be trusted (a spy on the catalog query the
    run falls back to; no real component could tell)."""
    repo, key, src = two_runs

    def refuse(*args):
        raise AssertionError("the catalog's rows were read although the cache is intact")
    monkeypatch.setattr(index_cache, "catalog_rows", refuse)
    result = backup.run(repo, src, key_file=key)
    assert result["warnings"] == [] and result["messages"] == 16


def test_a_cache_of_many_chunks_is_used_whole(two_runs, tmp_path, monkeypatch):
    """The cache is written and read in chunks of rows (never the encoding of all rows at
    once); one spread over many chunks holds every row."""
    repo, key, src = two_runs
    monkeypatch.setattr(index_cache, "CHUNK_MIN", 3)
    monkeypatch.setattr(index_cache, "CHUNK_MAX", 3)
    backup.run(repo, src, key_file=key)      # writes a cache of chunks of 3 rows

    def refuse(*args):
        raise AssertionError("the catalog's rows were read although the cache is intact")
    monkeypatch.setattr(index_cache, "catalog_rows", refuse)
    result = backup.run(repo, src, key_file=key)
    assert result["warnings"] == [] and result["messages"] == 16 and result["read_files"] == 0
    _restores_the_source(repo, key, src, tmp_path / "dst")


def test_a_cache_in_the_older_single_marshal_format_is_not_used(two_runs, tmp_path):
    """An older mailstore wrote the whole list as one marshal: with its digest recorded as
    that mailstore did, the run reads the catalog instead, without a warning, and writes a
    cache of the current format."""
    from mailstore.backup import keys
    repo, key, src = two_runs
    path = _cache_file(repo)
    snapshot_id = os.path.basename(path)[:-len(".marshal")]
    with open(path, "rb") as f:
        older = marshal.dumps(index_cache.decode(f.read()))
    with open(path, "wb") as f:
        f.write(older)
    _set_meta(repo, {"snapshot": snapshot_id, "digest": index_cache.digest(
        keys.load_key_file(key) if key else None, snapshot_id, older)})
    result = backup.run(repo, src, key_file=key)
    assert result["warnings"] == [] and result["messages"] == 16 and result["read_files"] == 0
    with open(_cache_file(repo), "rb") as f:
        assert f.read().startswith(index_cache.MAGIC)
    _restores_the_source(repo, key, src, tmp_path / "dst")


def _verify_cli(repo, key, *args):
    cmd = [sys.executable, "-m", "mailstore", "backup", "verify", repo] + list(args)
    if key:
        cmd += ["--key-file", key]
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAILSTORE_REPOSITORY", "MAILSTORE_KEY_FILE")}
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=120, env=env)


@pytest.mark.parametrize("read_data", [False, True])
def test_verify_reports_a_damaged_cache_as_a_warning(two_runs, read_data):
    repo, key, _src = two_runs
    args = ["--read-data"] if read_data else []
    clean = _verify_cli(repo, key, *args)
    assert clean.returncode == 0 and "index cache" not in clean.stderr, clean.stderr
    _change_rows(repo, _other_id)
    r = _verify_cli(repo, key, *args)
    # only a cache: the snapshots are still fine, so verify still succeeds
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stderr.splitlines() if "index cache" in line]
    assert len(lines) == 1 and lines[0].startswith("mailstore backup: warning: "), r.stderr
    assert "next run" in lines[0]
    as_json = json.loads(_verify_cli(repo, key, "--json", *args).stdout)
    assert as_json["ok"] and len(_cache_warnings(as_json["warnings"])) == 1


def _meta(repo):
    db = sqlite3.connect(os.path.join(repo, "catalog.sqlite"))
    value, = db.execute("SELECT value FROM meta WHERE key = 'index_cache'").fetchone()
    db.close()
    return json.loads(value)


def _set_meta(repo, meta):
    db = sqlite3.connect(os.path.join(repo, "catalog.sqlite"))
    with db:
        db.execute("INSERT OR REPLACE INTO meta VALUES ('index_cache', ?)", (json.dumps(meta),))
    db.close()


def _count_digests(monkeypatch):
    """A spy on auth.ordered_messages_digest (no real component can tell whether rows were
    hashed): the list of row counts it was called with."""
    from mailstore.backup import auth
    calls = []
    real = auth.ordered_messages_digest

    def counting(chunks):
        chunks = list(chunks)
        calls.append(sum(map(len, chunks)))
        return real(chunks)
    monkeypatch.setattr(auth, "ordered_messages_digest", counting)
    # the run's own digest is taken here too, not in a process of its own, to be counted
    # (rows_digest.py falls back to this thread when the process does not start)
    from mailstore.backup import rows_digest

    def no_process(cache):
        raise OSError("no process in this test")
    monkeypatch.setattr(rows_digest, "_start", no_process)
    return calls


def test_an_intact_cache_vouches_for_the_previous_snapshots_digest(two_runs, monkeypatch):
    """The cache's digest binds the snapshot's messages digest: a run built on an intact
    cache hashes only its own snapshot's rows, not the previous snapshot's again."""
    repo, key, src = two_runs
    assert _meta(repo)["rows"]
    calls = _count_digests(monkeypatch)
    result = backup.run(repo, src, key_file=key)
    assert result["warnings"] == [] and calls == [16]
    assert backup.verify(repo, key_file=key, read_data=True)["ok"]


def test_a_changed_rows_digest_is_not_trusted(two_runs, tmp_path, monkeypatch):
    """`rows` is part of what the cache's digest covers: changed, the cache is not used, the
    previous rows are read from the catalog and hashed."""
    repo, key, src = two_runs
    meta = _meta(repo)
    meta["rows"] = hashlib.sha256(b"other rows").hexdigest()
    _set_meta(repo, meta)
    calls = _count_digests(monkeypatch)
    result = backup.run(repo, src, key_file=key)
    assert len(_cache_warnings(result["warnings"])) == 1 and result["messages"] == 16
    assert calls == [16, 16]
    _restores_the_source(repo, key, src, tmp_path / "dst")


def test_a_cache_recorded_without_its_rows_digest_is_still_used(two_runs, tmp_path,
                                                                 monkeypatch):
    """What an older mailstore recorded (a digest of the file alone, no `rows`) is still
    trusted, and the previous rows are hashed as before; the run records the new kind."""
    from mailstore.backup import keys
    repo, key, src = two_runs
    path = _cache_file(repo)
    snapshot_id = os.path.basename(path)[:-len(".marshal")]
    with open(path, "rb") as f:
        data = f.read()
    older = index_cache.digest(keys.load_key_file(key) if key else None, snapshot_id, data)
    _set_meta(repo, {"snapshot": snapshot_id, "digest": older})

    def refuse(*args):
        raise AssertionError("the catalog's rows were read although the cache is intact")
    monkeypatch.setattr(index_cache, "catalog_rows", refuse)
    calls = _count_digests(monkeypatch)
    result = backup.run(repo, src, key_file=key)
    assert result["warnings"] == [] and calls == [16, 16]
    assert _meta(repo)["rows"]
    _restores_the_source(repo, key, src, tmp_path / "dst")


def test_a_forged_snapshot_digest_with_a_matching_rows_field_is_caught(tmp_path):
    """Without the key one can change a snapshot's recorded messages digest and the cache's
    `rows` alike, but not the snapshot's MAC: the run refuses to build on it (it builds on
    the one before and says so)."""
    key, repo, src = str(tmp_path / "key"), str(tmp_path / "repo"), tmp_path / "src"
    backup.init(repo, key_file=key)
    make_tree(src)
    first = backup.run(repo, src, key_file=key)["id"]
    second = backup.run(repo, src, key_file=key)["id"]
    forged = hashlib.sha256(b"other rows").hexdigest()
    meta = _meta(repo)
    meta["rows"] = forged
    _set_meta(repo, meta)
    db = sqlite3.connect(os.path.join(repo, "catalog.sqlite"))
    with db:
        db.execute("UPDATE snapshot_auth SET messages_digest = ?"
                   " WHERE seq = (SELECT max(seq) FROM snapshots)", (forged,))
    db.close()
    result = backup.run(repo, src, key_file=key)
    assert result["damaged_snapshots"] == [second]
    assert result["warnings"][0].startswith("snapshot {} is damaged (its record".format(second))
    assert "took snapshot {} as its base".format(first) in result["warnings"][0]
    assert len(backup.list_snapshots(repo)) == 3
    assert backup.verify(repo, key_file=key, snapshot=result["id"], read_data=True)["ok"]
