"""A damaged newest snapshot does not block the nightly runs: the run builds on the newest
intact snapshot (or scans afresh), says which snapshot it left out in one warning line and
exits 1; verify names every damaged snapshot; the monitoring check is CRITICAL while the
newest is damaged; `forget` removes one deliberately."""
import json
import os
import sqlite3

import pytest

from backup_fixtures import cli, one_error_line
from check_fixtures import check
from mailstore import backup

from tests.harness import make_tree, snapshot_tree


def sql(repo, statement, args=()):
    db = sqlite3.connect(os.path.join(repo, "catalog.sqlite"))
    with db:
        db.execute(statement, args)
    db.close()


@pytest.fixture(params=["encrypted", "plain"])
def two(request, tmp_path):
    """Two snapshots of the fixture tree; between them bob's INBOX message 1 got the flag F,
    so its new row is held by the second snapshot only. (repo, key args, src, ids)."""
    key = str(tmp_path / "key") if request.param == "encrypted" else None
    repo, src = str(tmp_path / "repo"), str(tmp_path / "src")
    backup.init(repo, key_file=key)
    make_tree(src)
    first = backup.run(repo, src, key_file=key)["id"]
    cur = os.path.join(src, "bob/Maildir/cur")
    seen, = [n for n in os.listdir(cur) if "M7P101" in n]
    os.rename(os.path.join(cur, seen), os.path.join(cur, seen[:-len(":2,S")] + ":2,FS"))
    second = backup.run(repo, src, key_file=key)["id"]
    return repo, ("--key-file", key) if key else (), src, (first, second)


def damage_newest_row(repo):
    """Bit rot in the row only the second snapshot holds (the index cache still vouches for
    the rows as recorded: only a check of the catalog's rows sees it)."""
    sql(repo, "UPDATE messages SET size = size + 1 WHERE name LIKE '%:2,FS'")


def run_ok_but_warned(repo, key, src, damaged, says):
    """`backup run`: exit 1, one warning line naming `damaged` and `says`, a snapshot
    recorded; its id."""
    r = cli("run", repo, src, *key)
    assert r.returncode == 1, (r.stdout, r.stderr)
    warnings = [line for line in r.stderr.splitlines() if damaged in line]
    assert len(warnings) == 1 and warnings[0].startswith("mailstore backup: warning: snapshot "
                                                         "{} is damaged".format(damaged))
    assert says in warnings[0] and "mailstore backup forget" in warnings[0], warnings
    return r.stdout.split()[-1]


def restores_the_source(repo, key, snapshot, src, dst):
    r = cli("restore", repo, snapshot, dst, *key)
    assert r.returncode == 0, r.stderr
    assert snapshot_tree(dst) == snapshot_tree(src)


def test_verify_names_it_the_run_builds_around_it_and_forget_removes_it(two, tmp_path):
    repo, key, src, (first, second) = two
    damage_newest_row(repo)
    err = one_error_line(cli("verify", repo, *key))
    assert "snapshot {}: its message rows".format(second) in err and first not in err
    assert "mailstore backup forget" in err
    code, line, _m = check("backup", "--repo", repo)
    assert code == 2 and "newest snapshot {} is damaged".format(second) in line
    r = cli("status", repo)
    assert r.returncode == 0 and r.stdout.rstrip().endswith(
        "; DAMAGED snapshots: {} (the newest)".format(second)), r.stdout

    third = run_ok_but_warned(repo, key, src, second,
                              "this run took snapshot {} as its base".format(first))
    assert [s["id"] for s in backup.list_snapshots(repo)] == [first, second, third]
    restores_the_source(repo, key, third, src, tmp_path / "dst")
    assert cli("verify", repo, "--snapshot", third, "--read-data", *key).returncode == 0
    # the damaged one is no longer the newest, but still there
    code, line, _m = check("backup", "--repo", repo)
    assert code == 1 and "damaged snapshot(s) {}".format(second) in line

    r = cli("forget", repo, second, "--dry-run", *key)
    assert r.returncode == 0 and "would remove snapshot {} (damaged: its message rows".format(
        second) in r.stdout, r
    assert len(backup.list_snapshots(repo)) == 3
    r = cli("forget", repo, second, "--json", *key)
    assert r.returncode == 0 and r.stderr == "", r
    out = json.loads(r.stdout)
    assert out["id"] == second and "message rows" in out["damaged"] and out["remaining"] == 2
    assert [s["id"] for s in backup.list_snapshots(repo)] == [first, third]
    r = cli("verify", repo, "--read-data", *key)
    assert r.returncode == 0, r.stderr
    assert check("backup", "--repo", repo)[0] == 0
    # its objects were left for prune; the next run builds on the intact newest again
    r = cli("prune", repo, "--keep-last", "1", *key)
    assert r.returncode == 0, r.stderr
    r = cli("run", repo, src, *key)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    restores_the_source(repo, key, "latest", src, tmp_path / "dst2")


def test_a_run_that_finds_its_base_damaged_takes_the_next_one(two, tmp_path):
    """No verify in between: the run's own check of the newest snapshot's record fails."""
    repo, key, src, (first, second) = two
    sql(repo, "UPDATE snapshots SET warnings = 3 WHERE id = ?", (second,))
    third = run_ok_but_warned(repo, key, src, second,
                              "this run took snapshot {} as its base".format(first))
    restores_the_source(repo, key, third, src, tmp_path / "dst")
    assert backup.status(repo)["damaged_snapshots"][0]["id"] == second
    # the next night is clean: it builds on the new snapshot, which is intact
    r = cli("run", repo, src, *key)
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_with_every_snapshot_damaged_the_run_scans_afresh(two, tmp_path):
    """A row both snapshots share is damaged: no base can be trusted."""
    repo, key, src, (first, second) = two
    sql(repo, "UPDATE messages SET mode = 511 WHERE id = (SELECT min(id) FROM messages)")
    for name in os.listdir(os.path.join(repo, "index")):
        os.unlink(os.path.join(repo, "index", name))    # the run reads the catalog's rows
    r = cli("run", repo, src, *key)
    assert r.returncode == 1, r.stderr
    warnings = [line for line in r.stderr.splitlines() if " is damaged " in line]
    assert len(warnings) == 2, r.stderr
    assert second in warnings[0] and first in warnings[1]
    assert "scanned everything afresh" in warnings[1]
    third = r.stdout.split()[-1]
    restores_the_source(repo, key, third, src, tmp_path / "dst")
    assert cli("verify", repo, "--snapshot", third, *key).returncode == 0


def test_forget_refuses_what_is_not_named_or_not_known(two):
    repo, key, _src, (first, second) = two
    assert "not `latest`" in one_error_line(cli("forget", repo, "latest", *key))
    assert "no snapshot 2000-01-01" in one_error_line(cli("forget", repo, "2000-01-01", *key))
    r = cli("forget", "--repo", repo, *key)       # no SNAPSHOT: a usage error
    assert r.returncode == 2 and "missing SNAPSHOT" in r.stderr and len(
        r.stderr.splitlines()) == 1, r.stderr
    if key:
        assert "forget needs its key" in one_error_line(cli("forget", repo, second))
    assert [s["id"] for s in backup.list_snapshots(repo)] == [first, second]


def test_forget_refuses_a_list_of_snapshots_that_was_tampered_with(two):
    repo, key, _src, (first, second) = two
    sql(repo, "UPDATE snapshots SET id = 'moving' WHERE id = ?", (first,))
    sql(repo, "UPDATE snapshots SET id = ? WHERE id = ?", (first, second))
    sql(repo, "UPDATE snapshots SET id = ? WHERE id = 'moving'", (second,))
    err = one_error_line(cli("forget", repo, second, *key))
    assert "list of snapshots" in err
    assert len(backup.list_snapshots(repo)) == 2


def test_forget_removes_an_intact_snapshot_when_named(two, tmp_path):
    repo, key, src, (first, second) = two
    r = cli("forget", repo, second, *key)
    assert r.returncode == 0 and "(it passed its check); 1 snapshots left" in r.stdout, r
    assert [s["id"] for s in backup.list_snapshots(repo)] == [first]
    assert cli("verify", repo, "--read-data", *key).returncode == 0
    r = cli("run", repo, src, *key)
    assert r.returncode == 0, r.stderr
    restores_the_source(repo, key, "latest", src, tmp_path / "dst")


def test_a_full_scan_checks_the_catalogs_rows_behind_the_index_cache(two, tmp_path):
    """No verify ran: the nightly incremental run trusts the index cache, but the weekly full
    scan (here asked for) checks the rows the catalog holds."""
    repo, key, src, (first, second) = two
    damage_newest_row(repo)
    r = cli("run", repo, src, "--full-scan", *key)
    assert r.returncode == 1 and "snapshot {} is damaged".format(second) in r.stderr, r.stderr
    third = r.stdout.split()[-1]
    restores_the_source(repo, key, third, src, tmp_path / "dst")
    assert cli("verify", repo, "--snapshot", third, *key).returncode == 0
