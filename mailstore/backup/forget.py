"""`forget`: remove one snapshot, named by its id, deliberately (a damaged one, typically).

A snapshot whose record or rows fail their check (snapshot_damage.py) cannot be restored and
is never a run's base again, but it stays in the list (and in `verify`'s findings, and the
monitoring's) until it is removed: `prune` removes only what its policy does not keep, so a
damaged newest snapshot would stay. `forget` removes exactly the snapshot named, damaged or
not, under the exclusive lock: its rows, its authentication, the message rows no snapshot
holds any more; the list of snapshots is authenticated anew (it must be authentic before:
a list that was tampered with is never signed again). Its objects stay until the next `prune`
frees whatever no snapshot needs (forget reads and writes no pack: quick, and nothing to
undo). `latest` is refused: the operator names what goes, after `verify` or the run named it.

`drop_snapshots` is what `prune` removes snapshots with too.
"""
import contextlib

from mailstore.backup import catalog, snapshot_damage
from mailstore.backup.auth import SnapshotDamaged
from mailstore.backup.errors import BackupError, KeyFileError, NotFoundError
from mailstore.backup.repository import Repository


@contextlib.contextmanager
def removing_snapshots(repo_path, key_file, wait, verb):
    """The repository opened to remove snapshots (`forget`, `prune`): with its key when it is
    encrypted (the list of snapshots it leaves is authenticated anew), under the exclusive
    lock, an interrupted run's leftovers cleaned up, and the list of snapshots checked first,
    so that one which was tampered with is never signed again."""
    with Repository(repo_path, key_file=key_file, need_key=key_file is not None) as repo:
        if repo.auth is not None and repo.auth.key is None:
            raise KeyFileError("repository {} is encrypted: {} needs its key (--key-file) "
                               "to authenticate the list of snapshots it leaves".format(
                                   repo.path, verb))
        repo.lock(exclusive=True, wait=wait)
        repo.clean_up()
        repo.check_catalog()
        yield repo


def forget(repo_path, snapshot, key_file=None, dry_run=False, wait=0):
    """Remove snapshot `snapshot` (its id); return {"id", "damaged": what its check found
    (None: it was intact), "remaining": snapshots left, "dry_run"}.

    NotFoundError for an id the repository does not hold, BackupError for `latest`,
    KeyFileError without the key of an encrypted repository, CatalogDamaged when the list of
    snapshots itself fails its check (then nothing is changed)."""
    if snapshot == "latest":
        raise BackupError("forget takes a snapshot's id, not `latest`: name the one to remove "
                          "(see `mailstore backup list` or `mailstore backup verify`)")
    with removing_snapshots(repo_path, key_file, wait, "forget") as repo:
        db = repo.db
        row = db.execute("SELECT seq FROM snapshots WHERE id = ?", (snapshot,)).fetchone()
        if row is None:
            raise NotFoundError("no snapshot {} in repository {} (see `mailstore backup list`)"
                                .format(snapshot, repo.path))
        seq = row[0]
        try:
            repo.check_catalog([seq])
            damaged = None
        except SnapshotDamaged as e:
            damaged = e.problem
        remaining = db.execute("SELECT count(*) FROM snapshots").fetchone()[0] - 1
        result = {"id": snapshot, "damaged": damaged, "remaining": remaining,
                  "dry_run": dry_run}
        if dry_run:
            return result
        with catalog.transaction(db):
            drop_snapshots(repo, [(seq, snapshot)])
        # the off-host copy's catalog (sealed.py) no longer lists it either
        repo.seal()
    return result


def drop_snapshots(repo, snapshots):
    """In a transaction of the caller: remove `snapshots` ((seq, id) pairs) and the message
    rows no snapshot holds any more; authenticate the list of snapshots left."""
    db = repo.db
    for seq, _sid in snapshots:
        db.execute("DELETE FROM snapshot_runs WHERE snapshot = ?", (seq,))
        db.execute("DELETE FROM files WHERE snapshot = ?", (seq,))
        db.execute("DELETE FROM snapshots WHERE seq = ?", (seq,))
        if repo.auth is not None:
            db.execute("DELETE FROM snapshot_auth WHERE seq = ?", (seq,))
    if repo.auth is not None:
        repo.auth.seal_manifest(db)
    catalog.drop_unreferenced_messages(db)
    snapshot_damage.forget(db, [sid for _seq, sid in snapshots])
