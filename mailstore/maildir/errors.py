"""The errors of mailstore.maildir: a root, user directory or name that cannot be used safely.
"""


class MaildirError(Exception):
    """A root or user directory that cannot be scanned safely."""


class InvalidUserName(MaildirError, ValueError):
    """A user name that is not one safe path component."""
