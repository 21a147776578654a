"""Live migration of users' Maildirs from one root to another, and the source's clean-up.

The public API (the CLI in mailstore.cli.migrate is a thin layer over it):
    migrate(source_root, target_root, ...) -> MigrationResult   the whole procedure
    cleanup_source(source_root, target_root, ...) -> CleanupResult
    Progress(stream)                                             progress lines for a terminal
Errors that stop a run before it changes anything: MigrateError (and maildir.MaildirError).
"""
from mailstore.migrate.cleanup import CleanupResult, check_source_in_target, cleanup_source
from mailstore.migrate.execute import Progress
from mailstore.migrate.journal import JOURNAL
from mailstore.migrate.results import HookResult, MigrateError, MigrationResult, UserResult
from mailstore.migrate.run import migrate

__all__ = ["JOURNAL", "CleanupResult", "HookResult", "MigrateError", "MigrationResult",
           "Progress", "UserResult", "check_source_in_target", "cleanup_source", "migrate"]
