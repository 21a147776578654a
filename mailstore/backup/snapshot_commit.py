"""The end of a run: the snapshot's id, and the ONE catalog transaction that records it.

Everything a run learnt goes in together: the packs and objects it wrote, the message rows new
to the catalog, the snapshot row, which messages and files it holds, and the scan state the
next run's incremental scan relies on (scan.py). A run that dies before this COMMIT leaves no
snapshot and no catalog change behind.
"""
import secrets
import socket
import time

from mailstore.backup import catalog, index_cache, lost, scan


def new_snapshot_id(now):
    return time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime(now)) + "-" + secrets.token_hex(2)


def unused_snapshot_id(db, started):
    """A new id for a snapshot started at `started`, not yet in the catalog."""
    # Runs that start in the same second share the time part of the id; the random suffix
    # is short, so make sure (under the exclusive lock) that this one is not taken.
    snapshot_id = new_snapshot_id(started)
    while db.execute("SELECT 1 FROM snapshots WHERE id = ?", (snapshot_id,)).fetchone():
        snapshot_id = new_snapshot_id(started)
    return snapshot_id


def write_catalog(feed, source, finished, snapshot_id, index_written, rows_digest):
    """Record snapshot `snapshot_id` with what `feed` (a feed.Feed, all its work done)
    collected, in one transaction on `feed.db`. `index_written`: the future of the index
    cache's writer (its result: the digest recorded here); what it raised is raised before
    the COMMIT. `rows_digest`: the future of the snapshot's messages digest, hashed from the
    rows as written to the index cache (None for a repository without authentication)."""
    db = feed.db
    stats = feed.stats
    feed.objects.warm_catalog_pages()
    with catalog.transaction(db):
        catalog.insert_many(db, "INSERT INTO packs", 3, feed.objects.sealed)
        # OR REPLACE: a lost object stored anew (lost.py) gets its new place
        catalog.insert_many(db, "INSERT OR REPLACE INTO objects", 8, feed.objects.new_objects)
        feed.new_messages.flush()
        # in id order (they were numbered in the order they were recorded)
        db.execute("INSERT INTO messages SELECT * FROM temp.new_messages ORDER BY id")
        cur = db.execute(
            "INSERT INTO snapshots (id, started, finished, source, host, messages, bytes,"
            " new_objects, new_bytes, read_files, read_bytes, warnings)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (snapshot_id, feed.started, finished, source, socket.gethostname(),
             stats["messages"], stats["bytes"], stats["new_objects"],
             stats["new_bytes"], stats["read_files"], stats["read_bytes"],
             stats["warnings"]))
        seq = cur.lastrowid
        if feed.lost:
            lost.record_run(db, feed.lost, feed.lost & feed.objects.added, feed.missing_packs,
                            snapshot_id, finished)
        # which message rows it holds, as runs of ids (catalog.py)
        catalog.insert_runs(db, seq, feed.snapshot_messages)
        catalog.insert_many(db, "INSERT INTO files", 12, ((seq,) + row for row in feed.files))
        if rows_digest is not None:
            # the snapshot's digests and MAC, and the new manifest (auth.py)
            rows_digest = feed.repo.auth.seal_snapshot(db, seq, None, feed.files,
                                                       rows_digest.result())
        # what the next run's incremental scan may rely on (scan.py)
        db.execute("DELETE FROM scan_dirs")
        catalog.insert_many(db, "INSERT INTO scan_dirs", 4, feed.dir_state)
        db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (
            scan.META_KEY, scan.state_meta(snapshot_id, feed.scan_ns, feed.last_full_scan)))
        # raises what the index writer raised: no COMMIT
        index_cache.record(db, feed.repo.codec.key, snapshot_id, index_written.result(),
                           rows_digest)
