"""mailstore: Maildir migration, backup and monitoring for email.cacert.org.

A library first (maildir, migrate, backup, checks, icinga); `mailstore.cli` is a thin
command line over it. Runs on the server's own Python, 3.9 to 3.13: keep the syntax and the
stdlib use within 3.9.
"""

__version__ = "0.1.0"
