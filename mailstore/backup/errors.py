"""The errors the backup library raises on purpose.

Every one carries a message meant for the operator: what is wrong and, where it helps, what
to do about it. The CLI prints it and exits non-zero; anything else is a bug.
"""


class BackupError(Exception):
    """Base class: a backup operation could not be done as asked."""


class RepositoryError(BackupError):
    """The repository is missing, not a repository, or of an unknown format."""


class KeyFileError(BackupError):
    """The key is missing, unreadable, badly formed, too open, or does not fit the repository."""


class LockedError(BackupError):
    """Another process holds the repository lock."""


class NotFoundError(BackupError):
    """A snapshot, user, folder or message asked for is not in the repository."""


class RestoreConflict(BackupError):
    """Restoring would overwrite or mix with what is already in the target."""
