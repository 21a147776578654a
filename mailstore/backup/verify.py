"""`verify`: is every snapshot restorable?

Always (cheap, no object read): config.json, the list of snapshots and every checked
snapshot's rows match their authentication (auth.py; an error naming the damage ends the
check, recorded as failed; every damaged snapshot is named in it and recorded for the next
run and the monitoring, snapshot_damage.py); with the key of an encrypted repository,
every sealed From and Subject value decrypts for its object; every object a snapshot needs is
in the catalog, its pack is in the catalog and on disk with the recorded size, and its record
lies inside the pack. With `read_data`: every needed object is read back (a masked pack's
record header unmasked, objects.py), decrypted, decompressed and re-hashed;
each damaged object is reported with the messages/files that use it and the snapshots they
belong to. The result is recorded in the catalog for `status()`.
"""
import math
import os
import random
import sqlite3
import time

from mailstore import maildir
from mailstore.backup import catalog, index_cache, lost, offhost, sealed, snapshot_damage
from mailstore.backup.auth import CatalogDamaged, SnapshotDamaged
from mailstore.backup.catalog import from_db
from mailstore.backup.errors import BackupError
from mailstore.backup.objects import DamagedObject, pack_path
from mailstore.backup.repository import Repository
from mailstore.backup.restore import resolve_snapshot


def verify(repo_path, key_file=None, snapshot=None, read_data=False, sample=None, wait=0,
           progress=None, previous=None):
    """Check one snapshot (id or `latest`) or all; return a summary dict.

    `sample` (0 < fraction <= 1, with read_data): read only a random part of the objects, so
    that a weekly cron job can spread reading the whole repository over several weeks.

    Keys: ok (bool), catalog (how the catalog was checked: "authenticated" (MACs),
    "checksums" (unencrypted), "digests only (no key)" or "format 1, not authenticated"),
    snapshots (checked), objects (checked), damaged (list of dicts: object,
    problem, uses: [{"user", "path", "snapshots": [ids]}], lost_at: None while the next run
    may still store it anew from the source, else the id of the snapshot whose run no longer
    found its content there: lost for good), missing_packs (names), warnings (text: a
    damaged index cache, which leaves `ok` as it is: it is only a cache).

    Every damaged object found is recorded in the catalog: the next run does not reuse it
    but reads its messages again (lost.py).

    An off-host copy whose catalog is sealed (offhost.py) is checked without the key as far
    as that goes (`offhost.verify_copy`: `problems`, `sealed`, `packs`); with the key its
    catalog is decrypted and checked as above. `previous`: the copy made before this one:
    the sealed catalog must not be older than its (offhost.compare_previous).
    """
    if key_file is None and not read_data and offhost.is_sealed_copy(os.fspath(repo_path)):
        return offhost.verify_copy(repo_path, previous)
    # the key, when given, authenticates the catalog even for the cheap check
    with Repository(repo_path, key_file=key_file,
                    need_key=read_data or key_file is not None) as repo:
        repo.lock(exclusive=False, wait=wait)
        db = repo.db
        if snapshot is not None:
            seqs = [resolve_snapshot(db, snapshot)[0]]
        else:
            seqs = [r[0] for r in db.execute("SELECT seq FROM snapshots ORDER BY seq")]
        try:
            _check_snapshots(repo, seqs)
            if repo.key is not None:
                _check_values(repo)
        except CatalogDamaged:
            _record(db, snapshot, read_data, False, 0, 0)
            raise
        needed = _needed_objects(db, seqs)
        packs = dict(db.execute("SELECT name, size FROM packs"))
        disk_sizes, missing_packs = {}, []
        for name, size in packs.items():
            try:
                disk_sizes[name] = os.stat(pack_path(repo.packs_dir, name)).st_size
            except FileNotFoundError:
                missing_packs.append(name)
        damaged = {}
        located = {}
        for oid, pack, offset, length in _object_rows(db, needed):
            if pack is None:
                damaged[oid] = "not in the catalog"
            elif pack not in packs:
                damaged[oid] = "pack {} is not in the catalog".format(pack)
            elif pack in missing_packs:
                damaged[oid] = "pack {} is missing".format(pack)
            elif offset + length > disk_sizes[pack]:
                damaged[oid] = "pack {} is truncated".format(pack)
            else:
                located[oid] = (pack, offset, length)
        checked = 0
        if read_data:
            to_read = sorted(located.items(), key=lambda i: i[1])
            if sample is not None:
                if not 0 < sample <= 1:
                    raise BackupError("--sample must be a fraction above 0 and at most 1")
                to_read = sorted(random.sample(to_read, int(math.ceil(len(to_read) * sample))),
                                 key=lambda i: i[1])
            for oid, (pack, offset, length) in to_read:
                try:
                    repo.codec.decode(oid, repo.reader.record(repo.codec, pack, offset,
                                                              length))
                except DamagedObject as e:
                    damaged[oid] = str(e)
                except OSError as e:
                    damaged[oid] = "cannot read pack {}: {}".format(pack, e.strerror or e)
                checked += 1
                if progress and checked % 20000 == 0:
                    progress("{} of {} objects read".format(checked, len(to_read)))
        else:
            checked = len(needed)
        size_mismatch = [n for n in packs if n in disk_sizes and disk_sizes[n] != packs[n]]
        report = [_describe(db, oid, problem) for oid, problem in sorted(damaged.items())]
        lost_for_good = lost.lost_at(db, damaged)
        for d in report:
            d["lost_at"] = lost_for_good.get(d["object"])
        ok = not damaged and not size_mismatch
        warnings = [p for p in [index_cache.check(repo)] if p]
        problems = []
        if previous is not None and os.path.exists(sealed.path_of(repo.path)):
            problems, notes = offhost.compare_previous(repo.path, previous)
            warnings += notes
        ok = ok and not problems
        recorded = _record(db, snapshot, read_data, ok, len(damaged), checked, damaged)
        how = _catalog_check(repo)
    return {"ok": ok, "catalog": how, "snapshots": len(seqs), "objects": len(needed),
            "read": checked if read_data else 0, "damaged": report,
            "missing_packs": sorted(missing_packs), "pack_size_mismatch": sorted(size_mismatch),
            "recorded": recorded, "warnings": warnings, "problems": problems}


def _check_snapshots(repo, seqs):
    """The list of snapshots, then each of `seqs` on its own: every damaged one is recorded
    (snapshot_damage.py) and named in the one CatalogDamaged raised, each intact one's record
    is cleared."""
    if not repo.check_catalog():
        return      # format 1: nothing to check
    found, intact = {}, []
    for seq in seqs:
        try:
            repo.check_catalog([seq])
            intact.append(repo.db.execute("SELECT id FROM snapshots WHERE seq = ?",
                                          (seq,)).fetchone()[0])
        except SnapshotDamaged as e:
            found[e.snapshot] = e.problem
    try:
        with catalog.transaction(repo.db):
            snapshot_damage.record(repo.db, found, intact, time.time())
    except sqlite3.Error:
        pass        # a read-only copy, a full disk: the check itself still counts
    if found:
        raise SnapshotDamaged(
            "catalog of {} damaged or tampered with: {} (restore refuses {}; the next run "
            "builds on the newest intact snapshot; remove {} with `mailstore backup forget "
            "{} SNAPSHOT`)".format(
                repo.path, "; ".join("snapshot {}: {}".format(sid, problem)
                                     for sid, problem in found.items()),
                "it" if len(found) == 1 else "them", "it" if len(found) == 1 else "them",
                repo.path), None, None, None)


def _record(db, snapshot, read_data, ok, damaged_count, checked, damaged=None):
    """Record the result for status() (and the monitoring check); False if it cannot be."""
    snapshot_id = resolve_snapshot(db, snapshot)[1] if snapshot is not None else None
    try:
        with catalog.transaction(db):
            db.execute("INSERT INTO verifications VALUES (?, ?, ?, ?, ?, ?)",
                       (time.time(), snapshot_id, int(bool(read_data)), int(ok),
                        damaged_count, checked))
            # for the next run, which stores these anew if the source still has them
            lost.record_damaged(db, damaged or {}, time.time())
        return True
    except sqlite3.Error:
        return False    # e.g. a full disk: the check itself still counts


def _catalog_check(repo):
    if repo.sealed_only:
        return "sealed, opened with the key"
    if repo.auth is None:
        return "format 1, not authenticated"
    if not repo.encrypted:
        return "checksums"
    return "authenticated" if repo.authenticated else "digests only (no key)"


def _check_values(repo):
    """Every sealed From/Subject value decrypts as its own object's (CatalogDamaged)."""
    for oid, h_from, h_subject in repo.db.execute(
            "SELECT id, hdr_from, hdr_subject FROM objects WHERE hdr_from IS NOT NULL"
            " OR hdr_subject IS NOT NULL"):
        try:
            repo.codec.unseal(h_from, oid, "from")
            repo.codec.unseal(h_subject, oid, "subject")
        except DamagedObject as e:
            raise CatalogDamaged("catalog of {} damaged or tampered with: {}".format(
                repo.path, e)) from None


def _needed_objects(db, seqs):
    needed = set()
    for seq in seqs:
        needed.update(r[0] for r in db.execute(
            "SELECT DISTINCT m.object FROM snapshot_messages s JOIN messages m ON m.id ="
            " s.message WHERE s.snapshot = ?", (seq,)))
        needed.update(r[0] for r in db.execute(
            "SELECT DISTINCT object FROM files WHERE snapshot = ? AND object IS NOT NULL",
            (seq,)))
    return needed


def _object_rows(db, ids):
    ids = sorted(ids)
    found = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        for row in db.execute("SELECT id, pack, offset, length FROM objects WHERE id IN ({})"
                              .format(",".join("?" * len(chunk))), chunk):
            found[row[0]] = row
    for oid in ids:
        yield found.get(oid, (oid, None, 0, 0))


def _describe(db, oid, problem):
    """Who uses a damaged object: messages and files, each with the snapshots holding it."""
    snapshot_ids = dict(db.execute("SELECT seq, id FROM snapshots"))
    uses = []
    for mid, user, folder, subdir, name in db.execute(
            "SELECT id, user, folder, subdir, name FROM messages WHERE object = ?", (oid,)):
        seqs = [r[0] for r in db.execute(
            "SELECT snapshot FROM snapshot_messages WHERE message = ? ORDER BY snapshot",
            (mid,))]
        if seqs:
            folder, name = from_db(folder), from_db(name)
            uses.append({"user": user, "path": maildir.message_relpath(folder, subdir, name),
                         "folder": maildir.folder_display(folder),
                         "snapshots": [snapshot_ids[s] for s in seqs]})
    by_path = {}
    for seq, user, path in db.execute(
            "SELECT snapshot, user, path FROM files WHERE object = ? ORDER BY snapshot", (oid,)):
        by_path.setdefault((user, from_db(path)), []).append(snapshot_ids[seq])
    for (user, path), snaps in sorted(by_path.items(), key=lambda i: (i[0][0] or "", i[0][1])):
        uses.append({"user": user, "path": path, "folder": None, "snapshots": snaps})
    return {"object": oid, "problem": problem, "uses": uses}
