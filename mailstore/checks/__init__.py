"""Monitoring plugins for the mail server, in the monitoring-plugins language.

One module per plugin, each exposing ``make_check(...) -> nagiosplugin.Check``:

- :mod:`mailstore.checks.backup`  age of the last complete snapshot, last verify, snapshot count
- :mod:`mailstore.checks.maildir` stale tmp/ files, wrong owners, users vs. Maildirs, totals
- :mod:`mailstore.checks.volume`  free space and free inodes of a filesystem
- :mod:`mailstore.checks.cert`    days to expiry, key match, chain, revocation (CRL)
- :mod:`mailstore.checks.crl`     the CRL refresh: time since it last succeeded, nextUpdate left
- :mod:`mailstore.checks.mailq`   Postfix queue size and age of the oldest deferred message

:mod:`mailstore.checks.plugin` holds what they share: running a check under its own timeout
and turning it into (exit code, output text) without touching ``sys.exit``, so that the CLI
(``mailstore check ...``) and ``mailstore icinga push`` use the same code path.
"""
