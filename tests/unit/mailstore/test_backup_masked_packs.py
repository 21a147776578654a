"""Masked packs (objects.py): an encrypted repository's new packs show no record header to
whoever holds them without the key, while the packs written before (clear headers, kept in
data/backup-format1.tar.gz) stay readable next to them; the key holder's verify, restore and
prune read both; a masked record read from another place than its own is refused; the
key-less check of an off-host copy still sees a damaged pack."""
import os
import shutil
import sqlite3

import pytest

from backup_fixtures import cli, extract_format1
from mailstore import backup
from mailstore.backup.objects import pack_path

from tests.harness import flip_bit, make_tree, snapshot_tree


def packs(repo):
    """{pack name: its first 4 bytes}."""
    out = {}
    for top, _dirs, files in os.walk(os.path.join(repo, "packs")):
        for name in files:
            with open(os.path.join(top, name), "rb") as f:
                out[name[:-len(".pack")]] = f.read(4)
    return out


@pytest.fixture
def mixed(tmp_path):
    """(repo, key, src): the stored encrypted repository of clear packs, then a run with new
    mail in the source: its new pack is masked."""
    extract_format1(tmp_path)
    repo, key, src = str(tmp_path / "enc"), str(tmp_path / "key"), str(tmp_path / "src")
    old = packs(repo)
    assert old and set(old.values()) == {b"MSB1"}
    new_dir = os.path.join(src, "carol")
    make_tree(str(tmp_path / "more"), users={"carol": {"": 3, ".Sent": 2}})
    shutil.copytree(str(tmp_path / "more" / "carol"), new_dir)
    assert cli("upgrade", repo, "--key-file", key).returncode == 0
    r = cli("run", repo, src, "--key-file", key)
    assert r.returncode == 0, r.stderr
    new = {n: head for n, head in packs(repo).items() if n not in old}
    assert new and set(new.values()) == {b"MSP1"}
    return repo, key, src


def test_clear_and_masked_packs_are_read_side_by_side(mixed, tmp_path):
    repo, key, src = mixed
    r = cli("verify", repo, "--read-data", "--key-file", key)
    assert r.returncode == 0 and "verify ok" in r.stdout, r.stderr
    assert cli("restore", repo, "latest", tmp_path / "dst", "--key-file", key).returncode == 0
    assert snapshot_tree(tmp_path / "dst") == snapshot_tree(src)
    # one of carol's messages expunged: prune rewrites the masked pack that held it with the
    # rest, masked anew at their new places
    inbox = os.path.join(src, "carol", "Maildir", "cur")
    os.unlink(os.path.join(inbox, sorted(os.listdir(inbox))[0]))
    assert cli("run", repo, src, "--key-file", key).returncode == 0
    before = packs(repo)
    r = cli("prune", repo, "--keep-last", "1", "--key-file", key)
    assert r.returncode == 0 and "1 objects" in r.stdout and "1 rewritten" in r.stdout, r
    rewritten = {n: head for n, head in packs(repo).items() if n not in before}
    assert list(rewritten.values()) == [b"MSP1"]
    r = cli("verify", repo, "--read-data", "--key-file", key)
    assert r.returncode == 0, r.stderr
    shutil.rmtree(tmp_path / "dst")
    assert cli("restore", repo, "latest", tmp_path / "dst", "--key-file", key).returncode == 0
    assert snapshot_tree(tmp_path / "dst") == snapshot_tree(src)


def test_the_off_host_copy_is_checked_without_the_key_and_read_with_it(mixed, tmp_path):
    repo, key, src = mixed
    view = backup.export(repo)
    copy = tmp_path / "copy"
    shutil.copytree(view, copy)
    shutil.rmtree(view)
    r = cli("verify", copy)
    assert r.returncode == 0 and "verify ok: sealed catalog" in r.stdout, r.stderr
    r = cli("verify", copy, "--read-data", "--key-file", key)
    assert r.returncode == 0, r.stderr
    masked = [n for n, head in packs(str(copy)).items() if head == b"MSP1"][0]
    flip_bit(pack_path(str(copy / "packs"), masked), 60)
    r = cli("verify", copy)
    assert r.returncode == 1 and "DAMAGED pack {}".format(masked[:2]) in r.stderr
    assert "do not match the checksum at its end" in r.stderr
    r = cli("verify", copy, "--read-data", "--key-file", key)
    assert r.returncode == 1 and "DAMAGED carol/" in r.stderr, r.stderr


def test_a_masked_record_read_from_another_pack_is_refused(mixed):
    """A pack copied under another name and the catalog pointed at it: the headers unmask
    with the other name's pads to garbage."""
    repo, key, _src = mixed
    masked = [n for n, head in packs(repo).items() if head == b"MSP1"][0]
    other = "ff" + masked[2:]
    os.makedirs(os.path.dirname(pack_path(os.path.join(repo, "packs"), other)), exist_ok=True)
    shutil.copy(pack_path(os.path.join(repo, "packs"), masked),
                pack_path(os.path.join(repo, "packs"), other))
    db = sqlite3.connect(os.path.join(repo, "catalog.sqlite"))
    with db:
        db.execute("INSERT INTO packs SELECT ?, size, created FROM packs WHERE name = ?",
                   (other, masked))
        db.execute("UPDATE objects SET pack = ? WHERE pack = ?", (other, masked))
    db.close()
    result = backup.verify(repo, key_file=key, read_data=True)
    assert not result["ok"]
    assert {d["problem"] for d in result["damaged"]} == {"record header damaged"}


def test_an_unencrypted_repository_keeps_clear_packs(tmp_path):
    repo, src = str(tmp_path / "repo"), str(tmp_path / "src")
    make_tree(src)
    backup.init(repo)
    backup.run(repo, src)
    assert set(packs(repo).values()) == {b"MSB1"}
