"""The index cache: REPO/index/<id>.marshal, the newest snapshot's message rows in one file.

The next run reads the previous snapshot's rows from it in one sequential read; the same rows
in the catalog are scattered over it, slow when the cache is cold at night. Only a cache: the
catalog stays the truth, and a missing or damaged file costs speed, nothing else.
"""
import marshal
import os


def index_path(repo, snapshot_id):
    return os.path.join(repo.path, "index", snapshot_id + ".marshal")


def previous_rows(repo, seq, snapshot_id, count):
    """The message rows (id, user, folder, subdir, name, uniq, size, mtime_ns, uid, gid, mode,
    ino, object) of snapshot `seq`.

    Read from REPO/index/<id>.marshal, a cache the run that made the snapshot wrote (one
    sequential read; the same rows from the catalog are scattered over it, slow when the
    cache is cold at night). The catalog stays the truth: a missing, unreadable (another
    Python's marshal format) or inconsistent cache file means the join is used instead.
    """
    try:
        with open(index_path(repo, snapshot_id), "rb") as f:
            rows = marshal.loads(f.read())     # one read: marshal.load(f) reads piecemeal
        if isinstance(rows, list) and len(rows) == count:
            return rows
    except (OSError, ValueError, EOFError, TypeError):
        pass
    return repo.db.execute(
        "SELECT m.id, m.user, m.folder, m.subdir, m.name, m.uniq, m.size, m.mtime_ns, m.uid,"
        " m.gid, m.mode, m.ino, m.object FROM snapshot_messages s JOIN messages m"
        " ON m.id = s.message WHERE s.snapshot = ?", (seq,)).fetchall()


def write_index(repo, snapshot_id, rows):
    """Write the cache previous_rows reads (before the catalog commit)."""
    directory = os.path.join(repo.path, "index")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = index_path(repo, snapshot_id)
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(marshal.dumps(rows))
    # No fsync: after a power cut a short or empty file fails the length check and the
    # catalog is read instead; the rename only keeps readers from seeing a file being written.
    os.rename(path + ".tmp", path)


def drop_stale_indexes(repo, keep_id):
    """Remove index caches of every snapshot but `keep_id` (the newest)."""
    directory = os.path.join(repo.path, "index")
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        if name != "{}.marshal".format(keep_id):
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass
