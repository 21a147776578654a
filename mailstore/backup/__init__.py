"""Maildir-aware backups: incremental, deduplicated, optionally encrypted, verifiable.

The public API (the CLI in mailstore.cli.backup is a thin layer over it):
    init(repo, key_file=None, new_key=None)        create a repository
    upgrade(repo, key_file=None) -> dict           format 1 -> 2: authenticate the catalog
    status(repo, key_file=None) -> dict            cheap summary for monitoring (catalog only)
    run(repo, source_root, ...) -> dict            take a snapshot
    list_snapshots(repo, key_file=None) -> [dict]
    verify(repo, ...) -> dict                      catalog vs objects; read_data re-hashes
    restore(repo, snapshot, target_root, ...) -> dict
    prune(repo, keep_daily=..., ...) -> dict
    forget(repo, snapshot, key_file=None, dry_run=False) -> dict   remove one named snapshot
    find(repo, ...) -> [dict]
    seal(repo, key_file) -> dict                   write the sealed catalog now (sealed.py)
    served_paths(repo) -> [str]                    what an off-host copy gets (offhost.py)
    export(repo) -> str                            those, hard-linked into REPO/offhost-view
    unseal(repo, key_file) -> dict                 a copy put back: catalog.sqlite again
    format_date(t) -> str                          a found message's Date, as find prints it
Errors meant for the operator are subclasses of BackupError (mailstore.backup.errors);
CatalogDamaged (a RepositoryError) says that config.json or the catalog does not match its
authentication (auth.py).
"""
from mailstore.backup.auth import CatalogDamaged
from mailstore.backup.errors import (BackupError, KeyFileError, LockedError, NotFoundError,
                                     RepositoryError, RestoreConflict)
from mailstore.backup.find import find, format_date
from mailstore.backup.forget import forget
from mailstore.backup.offhost import export, seal, served_paths, unseal
from mailstore.backup.prune import prune
from mailstore.backup.repository import init
from mailstore.backup.restore import restore
from mailstore.backup.snapshot import run
from mailstore.backup.status import status
from mailstore.backup.upgrade import upgrade
from mailstore.backup.verify import verify


def list_snapshots(repo_path, key_file=None):
    """Complete snapshots, oldest first, as dicts (id, started, finished, messages, bytes,
    new_objects, new_bytes, read_files, read_bytes, warnings, source, host)."""
    from mailstore.backup import catalog
    from mailstore.backup.repository import Repository
    with Repository(repo_path, key_file=key_file, readonly=True, need_key=False) as repo:
        snaps = catalog.snapshots(repo.db)
    for s in snaps:
        del s["seq"]
    return snaps


__all__ = ["BackupError", "CatalogDamaged", "KeyFileError", "LockedError", "NotFoundError",
           "RepositoryError", "RestoreConflict", "find", "forget", "format_date", "init",
           "export", "list_snapshots", "prune", "restore", "run", "seal", "served_paths",
           "status", "unseal", "upgrade", "verify"]
