"""Maildir-aware backups: incremental, deduplicated, optionally encrypted, verifiable.

The public API (the CLI in mailstore.cli.backup is a thin layer over it):
    init(repo, key_file=None)                      create a repository
    status(repo, key_file=None) -> dict            cheap summary for monitoring (catalog only)
    run(repo, source_root, ...) -> dict            take a snapshot
    list_snapshots(repo, key_file=None) -> [dict]
    verify(repo, ...) -> dict                      catalog vs objects; read_data re-hashes
    restore(repo, snapshot, target_root, ...) -> dict
    prune(repo, keep_daily=..., ...) -> dict
    find(repo, ...) -> [dict]
Errors meant for the operator are subclasses of BackupError (mailstore.backup.errors).
"""
from mailstore.backup.errors import (BackupError, KeyFileError, LockedError, NotFoundError,
                                     RepositoryError, RestoreConflict)
from mailstore.backup.repository import init
from mailstore.backup.status import status

__all__ = ["BackupError", "KeyFileError", "LockedError", "NotFoundError", "RepositoryError",
           "RestoreConflict", "init", "status"]
