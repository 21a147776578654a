"""A lost pack or a damaged object heals: the next run stores the content again when the
source still has it; what the source no longer has stays reported by verify as lost for good."""
import os

import pytest
from click.testing import CliRunner

from mailstore import backup
from mailstore.cli import main
from mailstore.backup.objects import pack_path
from mailstore.backup.repository import Repository

from tests.harness import flip_bit, locate_message, make_tree, snapshot_tree


@pytest.fixture(params=["plain", "encrypted"])
def first(request, tmp_path):
    """(repo, key, src, first snapshot id): small packs, so that losing one loses a few
    messages, not all."""
    key = str(tmp_path / "key") if request.param == "encrypted" else None
    repo, src = str(tmp_path / "repo"), tmp_path / "src"
    backup.init(repo, key_file=key, pack_size=2048)
    make_tree(src)
    snap = backup.run(repo, src, key_file=key)["id"]
    return repo, key, src, snap


def _messages_in_pack(repo, key, pack):
    with Repository(repo, key_file=key) as r:
        return r.db.execute(
            "SELECT DISTINCT m.user, m.folder, m.subdir, m.name, o.id FROM messages m"
            " JOIN objects o ON o.id = m.object WHERE o.pack = ? ORDER BY m.user, m.name",
            (pack,)).fetchall()


def _files_in_pack(repo, key, pack):
    """Objects of the pack that hold files (control files...), not messages."""
    with Repository(repo, key_file=key) as r:
        return {row[0] for row in r.db.execute(
            "SELECT DISTINCT f.object FROM files f JOIN objects o ON o.id = f.object"
            " WHERE o.pack = ?", (pack,))}


def _path(src, user, folder, subdir, name):
    return os.path.join(str(src), user, "Maildir", folder, subdir, name)


def _healed(repo, key, src, tmp_path, snap):
    """The new snapshot reads back clean and restores bit-exact."""
    result = backup.verify(repo, key_file=key, snapshot=snap, read_data=True)
    assert result["ok"] and not result["damaged"], result
    dst = tmp_path / ("dst-" + snap)
    assert not backup.restore(repo, snap, dst, key_file=key)["errors"]
    assert snapshot_tree(dst) == snapshot_tree(src)


def test_a_lost_pack_is_stored_again_by_the_next_run(first, tmp_path):
    repo, key, src, snap1 = first
    _n, _oid, pack, _o, _l = locate_message(repo, key, "bob", "M7P101")
    in_pack = _messages_in_pack(repo, key, pack)
    assert len(in_pack) >= 2
    # which control files share the pack depends on the order objects are written in
    files = _files_in_pack(repo, key, pack)
    # one message of the lost pack is gone from the source too: that one is lost for good
    gone = in_pack[0]
    os.unlink(_path(src, *gone[:4]))
    os.unlink(pack_path(os.path.join(repo, "packs"), pack))
    result = backup.verify(repo, key_file=key)
    assert not result["ok"] and result["missing_packs"] == [pack]
    assert {d["object"] for d in result["damaged"]} == {m[4] for m in in_pack} | files
    assert all(d["lost_at"] is None for d in result["damaged"])
    # the nightly run (incremental scan) reads the lost messages again
    run = backup.run(repo, src, key_file=key)
    assert not run["warnings"] and run["read_files"] >= len(in_pack) - 1
    assert run["restored_lost"] == len(in_pack) - 1 + len(files)
    assert run["lost_for_good"] == 1
    snap2 = run["id"]
    _healed(repo, key, src, tmp_path, snap2)
    # the same content has the same id: the first snapshot is whole again, but for the
    # message the source no longer has, which verify names as lost for good
    result = backup.verify(repo, key_file=key, read_data=True)
    assert not result["ok"]
    assert result["missing_packs"] == [pack]      # still holds the lost-for-good object
    (damaged,) = result["damaged"]
    assert damaged["object"] == gone[4] and damaged["lost_at"] == snap2
    assert [u["snapshots"] for u in damaged["uses"]] == [[snap1]]
    # and the next run neither reuses nor complains about it
    snap3 = backup.run(repo, src, key_file=key)["id"]
    _healed(repo, key, src, tmp_path, snap3)


def test_a_lost_pack_is_stored_again_even_without_a_verify_first(first, tmp_path):
    repo, key, src, snap1 = first
    _n, _oid, pack, _o, _l = locate_message(repo, key, "alice", "M0P100")
    os.unlink(pack_path(os.path.join(repo, "packs"), pack))
    snap2 = backup.run(repo, src, key_file=key, full_scan=True)["id"]
    _healed(repo, key, src, tmp_path, snap2)
    result = backup.verify(repo, key_file=key, read_data=True)
    assert result["ok"] and not result["missing_packs"], result


def test_a_damaged_object_found_by_verify_is_stored_again_by_the_next_run(first, tmp_path):
    repo, key, src, snap1 = first
    _n, oid, pack, offset, length = locate_message(repo, key, "bob", "M7P101")
    flip_bit(pack_path(os.path.join(repo, "packs"), pack), offset + length // 2)
    assert backup.verify(repo, key_file=key)["ok"]       # the cheap check cannot see it
    result = backup.verify(repo, key_file=key, read_data=True)
    assert [d["object"] for d in result["damaged"]] == [oid]
    assert result["damaged"][0]["lost_at"] is None
    r = CliRunner().invoke(main, ["backup", "verify", repo, "--read-data"]
                           + (["--key-file", key] if key else []))
    assert r.exit_code == 1
    assert "M7P101" in r.output and "the next run stores it again" in r.output
    run = backup.run(repo, src, key_file=key)
    assert run["new_objects"] == 1 and not run["warnings"]
    _healed(repo, key, src, tmp_path, run["id"])
    # the content is the same, so the old snapshot reads back clean again too
    assert backup.verify(repo, key_file=key, read_data=True)["ok"]
