"""Shared test harnesses, for every tier that needs them (imported as `tests.harness`).

- `nobody`: running code as uid/gid nobody, and a /tmp directory nobody can traverse
- `doveadm`: doveadm as nobody on a Maildir tree, and what an IMAP client sees there

Tests import from here (`from tests.harness import as_nobody`); pytest is started from the
repository root (`python -m pytest`), which puts that root on sys.path, on every Python the
tests run on.
"""
from tests.harness.doveadm import (DOVEADM, NEEDS_DOVEADM, doveadm, doveadm_cmd, doveadm_shell,
                                   dovecot_base, imap_view, make_mailbox)
from tests.harness.nobody import NOBODY, as_nobody, become_nobody, public_tmpdir

__all__ = [
    "DOVEADM", "NEEDS_DOVEADM", "NOBODY", "as_nobody", "become_nobody", "doveadm",
    "doveadm_cmd", "doveadm_shell", "dovecot_base", "imap_view", "make_mailbox", "public_tmpdir",
]
