"""Shared test harnesses, for every tier that needs them (imported as `tests.harness`).

- `pki`: a throwaway root -> intermediate -> leaf PKI and CRLs (deploy and check plugin tests)
- `nobody`: running code as uid/gid nobody, and a /tmp directory nobody can traverse
- `doveadm`: doveadm as nobody on a Maildir tree, and what an IMAP client sees there
- `clock`: a fake clock for backup runs (snapshots on chosen days)
- `maildir_trees`: building, changing and comparing Maildir trees (migration and backup tests)
- `loopback_servers`: mail-protocol, silent and DNS servers on loopback for the status
  command's probes (deploy tests only: it needs dnspython, which the server-side Pythons lack,
  so it is imported as `tests.harness.loopback_servers`, not re-exported here)

Tests import from here (`from tests.harness import PKI`, `from tests.harness import
maildir_trees as trees`); pytest is started from the repository root (`python -m pytest`),
which puts that root on sys.path, on every Python the tests run on.
"""
from tests.harness import maildir_trees
from tests.harness.clock import run_clock
from tests.harness.doveadm import (DOVEADM, NEEDS_DOVEADM, doveadm, doveadm_cmd, doveadm_shell,
                                   dovecot_base, imap_view, make_mailbox)
from tests.harness.maildir_trees import (flip_bit, locate_message, make_tree, message_bytes,
                                         message_paths, pack_files, snapshot_tree, write)
from tests.harness.nobody import NOBODY, as_nobody, become_nobody, public_tmpdir
from tests.harness.pki import (DAY, NOW, PKI, UTC, certificate, make_crl, new_key, pem,
                               pem_bytes, write_pem)

__all__ = [
    "DAY", "DOVEADM", "NEEDS_DOVEADM", "NOBODY", "NOW", "PKI", "UTC", "as_nobody",
    "become_nobody", "certificate", "doveadm", "doveadm_cmd", "doveadm_shell", "dovecot_base",
    "flip_bit", "imap_view", "locate_message", "maildir_trees", "make_crl", "make_mailbox",
    "make_tree", "message_bytes", "message_paths", "new_key", "pack_files", "pem", "pem_bytes",
    "public_tmpdir", "run_clock", "snapshot_tree", "write", "write_pem",
]
