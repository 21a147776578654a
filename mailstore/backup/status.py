"""`status()`: a cheap summary of a repository for monitoring (`mailstore check backup`).

Reads config.json and the catalog only: no object is read, no lock taken, no key needed
(`key_file` is accepted for symmetry with every other command and ignored), except for an
off-host copy whose catalog is sealed (offhost.py): that one is opened with the key.
"""
import os
import sqlite3

from mailstore.backup import catalog, snapshot_damage
from mailstore.backup.errors import RepositoryError
from mailstore.backup.offhost import is_sealed_copy as sealed_copy
from mailstore.backup.repository import Repository, read_config


def status(repo_path, key_file=None):
    """Summarise the repository at `repo_path`.

    Returns a dict:
      snapshots         number of complete snapshots (int)
      last_complete     unix time the newest complete snapshot finished, or None
      last_snapshot_id  id of that snapshot, or None
      last_verify       None if never verified, else {"time": unix time, "ok": bool,
                        "damaged": int (damaged objects found), "read_data": bool,
                        "snapshot": id verified or None for all, "checked": int objects}
      damaged_snapshots the snapshots a verify or run found damaged (snapshot_damage.py)
                        and still there: [{"id", "problem", "found", "newest": bool}]
      encrypted         bool
      repository        the path given
    Raises RepositoryError if there is no readable repository at `repo_path`.
    """
    repo_path = os.fspath(repo_path)
    config = read_config(repo_path)
    try:
        if sealed_copy(repo_path):
            repo = Repository(repo_path, key_file=key_file, need_key=False)
            conn = repo.db
        else:
            conn = catalog.connect(os.path.join(repo_path, "catalog.sqlite"), readonly=True)
        try:
            count, = conn.execute("SELECT count(*) FROM snapshots").fetchone()
            last = conn.execute(
                "SELECT id, finished FROM snapshots ORDER BY seq DESC LIMIT 1").fetchone()
            verify = catalog.last_verification(conn)
            damaged = snapshot_damage.recorded(conn)
        finally:
            conn.close()
    except sqlite3.Error as e:
        raise RepositoryError("cannot read the catalog of {}: {}".format(repo_path, e))
    return {
        "repository": repo_path,
        "encrypted": config["encryption"] != "none",
        "snapshots": count,
        "last_complete": last[1] if last else None,
        "last_snapshot_id": last[0] if last else None,
        "last_verify": verify,
        "damaged_snapshots": damaged,
    }
