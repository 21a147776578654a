"""`prune`: forget snapshots the retention policy does not keep, and free their space.

Policy (decided by the pure function `plan`, like restic's): snapshots are taken newest first;
`keep_last` keeps the N newest; `keep_daily` keeps the newest snapshot of each of the N most
recent UTC days that have one; `keep_weekly` the same per ISO week, `keep_monthly` per month.
A snapshot kept by any rule stays. Times are the snapshot start times.

Freeing space: objects no remaining snapshot needs (including leftovers of interrupted runs)
are dropped. A pack holding only such objects is deleted; a pack holding some is rewritten
with just the live records (copied as they are, nothing decoded; the headers of a masked
pack's records are unmasked and masked anew for their new place, objects.py: that needs the
key). New packs are
made durable first, then one catalog transaction switches over, then old packs are unlinked;
a crash anywhere leaves either the old or the new state, plus garbage the next run removes;
a failure before the switch (ENOSPC, EIO) leaves the old state and unlinks the new packs
itself, so that a full disk gets its space back at once.
"""
import os
import sqlite3
import time

from mailstore.backup import catalog
from mailstore.backup.errors import BackupError, KeyFileError
from mailstore.backup.forget import drop_snapshots, removing_snapshots
from mailstore.backup.objects import PackWriter, pack_path

_PERIODS = (("daily", "%Y-%m-%d"), ("weekly", "%G-W%V"), ("monthly", "%Y-%m"))


def check_policy(keep_last=0, keep_daily=0, keep_weekly=0, keep_monthly=0):
    """Refuse a policy that keeps nothing (BackupError): it would forget every snapshot."""
    if min(keep_last, keep_daily, keep_weekly, keep_monthly) < 0:
        raise BackupError("--keep-* values must be 0 or more")
    if not (keep_last or keep_daily or keep_weekly or keep_monthly):
        raise BackupError("refusing to prune with every --keep-* at 0 (or none given): that "
                          "would forget every snapshot; give e.g. --keep-daily 7")


def plan(snapshots, keep_last=0, keep_daily=0, keep_weekly=0, keep_monthly=0):
    """Decide which snapshots stay. `snapshots`: iterable of (id, unix time).

    Returns (keep, remove): keep maps id -> list of reasons ("last", "daily 2026-11-25", ...);
    remove is the list of ids to forget, newest first.
    """
    counts = {"daily": keep_daily, "weekly": keep_weekly, "monthly": keep_monthly}
    check_policy(keep_last, keep_daily, keep_weekly, keep_monthly)
    ordered = sorted(snapshots, key=lambda s: (s[1], s[0]), reverse=True)
    keep = {}
    for sid, _t in ordered[:keep_last]:
        keep.setdefault(sid, []).append("last")
    for rule, pattern in _PERIODS:
        n = counts[rule]
        seen = []
        for sid, t in ordered:
            if len(seen) >= n:
                break
            period = time.strftime(pattern, time.gmtime(t))
            if not seen or seen[-1] != period:
                seen.append(period)
                keep.setdefault(sid, []).append("{} {}".format(rule, period))
    remove = [sid for sid, _t in ordered if sid not in keep]
    return keep, remove


def prune(repo_path, key_file=None, keep_last=0, keep_daily=0, keep_weekly=0, keep_monthly=0,
          dry_run=False, wait=0):
    """Apply the policy (see module doc); return a summary dict.

    Keys: keep [{"id", "time", "reasons"}], remove [ids], objects_removed, bytes_freed,
    packs_deleted, packs_rewritten, dry_run.
    """
    # before the repository is even opened: a policy that keeps nothing touches nothing
    check_policy(keep_last, keep_daily, keep_weekly, keep_monthly)
    with removing_snapshots(repo_path, key_file, wait, "prune") as repo:
        db = repo.db
        snaps = db.execute("SELECT seq, id, started FROM snapshots").fetchall()
        keep, remove = plan([(s[1], s[2]) for s in snaps], keep_last, keep_daily, keep_weekly,
                            keep_monthly)
        times = {s[1]: s[2] for s in snaps}
        result = {"keep": [{"id": sid, "time": times[sid], "reasons": keep[sid]}
                           for sid in sorted(keep, key=lambda i: times[i], reverse=True)],
                  "remove": remove, "dry_run": dry_run}
        remaining = [s[0] for s in snaps if s[1] in keep]
        removed = [(s[0], s[1]) for s in snaps if s[1] not in keep]
        live = _live_objects(db, remaining)
        by_pack = {}
        for oid, pack, offset, length in db.execute(
                "SELECT id, pack, offset, length FROM objects"):
            by_pack.setdefault(pack, ([], []))[0 if oid in live else 1].append(
                (oid, offset, length))
        dead_packs = [p for p, (alive, _dead) in by_pack.items() if not alive]
        partial = [p for p, (alive, dead) in by_pack.items() if alive and dead]
        dead = [oid for _alive, d in by_pack.values() for oid, _o, _l in d]
        result["objects_removed"] = len(dead)
        result["bytes_freed"] = sum(l for _a, d in by_pack.values() for _o, _off, l in d)
        result["packs_deleted"] = len(dead_packs)
        result["packs_rewritten"] = len(partial)
        if dry_run:
            return result
        new_packs, moved = [], []
        try:
            _rewrite(repo, {p: by_pack[p][0] for p in partial}, new_packs, moved)
            with catalog.transaction(db):
                drop_snapshots(repo, removed)
                db.executemany("DELETE FROM objects WHERE id = ?", ((oid,) for oid in dead))
                db.executemany("UPDATE objects SET pack = ?, offset = ? WHERE id = ?", moved)
                db.executemany("INSERT INTO packs VALUES (?, ?, ?)", new_packs)
                db.executemany("DELETE FROM packs WHERE name = ?",
                               ((p,) for p in dead_packs + partial))
        except BaseException:
            # ENOSPC, EIO, a failed switch: the old state stands; give back the space the new
            # packs took (a full disk stays full otherwise until the next run's clean-up)
            _discard(repo, [name for name, _size, _t in new_packs])
            raise
        db.execute("VACUUM")
        # before the packs go: a sealed catalog (the off-host copy's) never names a pack
        # that is no longer there
        repo.seal()
        for name in dead_packs + partial:
            try:
                os.unlink(pack_path(repo.packs_dir, name))
            except FileNotFoundError:
                pass
    return result


def _live_objects(db, seqs):
    live = set()
    for seq in seqs:
        live.update(r[0] for r in db.execute(
            "SELECT m.object FROM snapshot_messages s JOIN messages m ON m.id = s.message"
            " WHERE s.snapshot = ?", (seq,)))
        live.update(r[0] for r in db.execute(
            "SELECT object FROM files WHERE snapshot = ? AND object IS NOT NULL", (seq,)))
    return live


def _rewrite(repo, keep_by_pack, new_packs, moved):
    """Copy the live records of partly dead packs into new packs (durable before returning).

    Appends (name, size, time) of each sealed pack to `new_packs` as it is sealed (so that a
    caller whose rewrite failed half-way knows which to discard) and (pack, offset, object)
    to `moved`."""

    def sealed(name, size, entries):
        new_packs.append((name, size, time.time()))
        moved.extend((name, off, oid) for oid, off, _length, _size, _h in entries)

    writer = PackWriter(repo.tmp_dir, repo.packs_dir, repo.pack_size, sealed, repo.codec)
    try:
        for pack in sorted(keep_by_pack):
            if repo.reader.masked(pack) and repo.key is None:
                raise KeyFileError("prune must rewrite pack {}, whose records are masked: "
                                   "give the repository's key (--key-file)".format(pack))
            for oid, offset, length in sorted(keep_by_pack[pack], key=lambda e: e[1]):
                writer.add(oid, repo.reader.record(repo.codec, pack, offset, length), 0)
        writer.seal()
    except BaseException:
        writer.abort()
        raise
    repo.reader.close()


def _discard(repo, names):
    """After a failure: unlink those new packs the catalog does not name. The catalog
    decides (a switch whose COMMIT raised may have committed): a pack it names stays, and if
    it cannot be asked, every pack stays for the next run's clean-up. Never raises."""
    repo.reader.close()
    try:
        stray = [n for n in names if repo.db.execute(
            "SELECT 1 FROM packs WHERE name = ?", (n,)).fetchone() is None]
    except sqlite3.Error:
        return
    for name in stray:
        try:
            os.unlink(pack_path(repo.packs_dir, name))
        except OSError:
            pass
