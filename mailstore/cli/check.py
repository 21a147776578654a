"""``mailstore check ...``: the monitoring plugins (Icinga runs them through its agent).

Every plugin answers in the monitoring-plugins language: one status line
``NAME STATE - summary | perfdata`` on stdout, exit 0 OK / 1 WARNING / 2 CRITICAL / 3 UNKNOWN.
Threshold options take Nagios ranges: ``10`` (alert outside 0..10), ``10:`` (alert below 10),
``~:10`` (alert above 10), ``@10:20`` (alert inside 10..20).

A usage error (unknown option, bad range, missing argument) is UNKNOWN with exit 3 — click's
own exit code 2 would read as CRITICAL to Icinga and page someone for a typo in the config.
"""
import contextlib
import sys

import click
import nagiosplugin

from mailstore.checks.plugin import DEFAULT_TIMEOUT, run, unknown
from mailstore.cli.repository import key_file_option, repo_arguments


class NagiosRange(click.ParamType):
    """A threshold range, validated with nagiosplugin's own parser."""
    name = "RANGE"

    def convert(self, value, param, ctx):
        if isinstance(value, nagiosplugin.Range):
            return value
        try:
            parsed = nagiosplugin.Range(value)
        except ValueError as e:
            self.fail("invalid range %r (%s); use e.g. 10, 10:, ~:10, @10:20" % (value, e),
                      param, ctx)
        return parsed


RANGE = NagiosRange()


@contextlib.contextmanager
def _usage_errors_are_unknown(ctx):
    try:
        yield
    except click.UsageError as e:
        where = e.ctx.command.name if e.ctx is not None and e.ctx.command is not None else None
        name = where if where and where != "check" else "mailstore check"
        outcome = unknown(name, e.format_message())
        click.echo(outcome.text, nl=False)
        sys.exit(outcome.exitcode)


class _PluginGroup(click.Group):
    def parse_args(self, ctx, args):
        with _usage_errors_are_unknown(ctx):
            return super().parse_args(ctx, args)

    def invoke(self, ctx):
        with _usage_errors_are_unknown(ctx):
            return super().invoke(ctx)


def _common(func):
    func = click.option("-v", "--verbose", count=True,
                        help="Long output (repeat for more).")(func)
    func = click.option("-t", "--timeout", type=click.IntRange(min=0), default=DEFAULT_TIMEOUT,
                        show_default=True,
                        help="Give up with UNKNOWN after this many seconds (0: never).")(func)
    return func


def _finish(name, build, timeout, verbose):
    """Build the check (may fail on a bad argument -> UNKNOWN), run it, print, exit."""
    try:
        check = build()
    except (ValueError, OSError) as e:
        outcome = unknown(name, e)
    else:
        outcome = run(check, timeout=timeout, verbose=verbose)
    click.echo(outcome.text, nl=False)
    sys.exit(outcome.exitcode)


@click.group("check", cls=_PluginGroup, no_args_is_help=False)
def check_group():
    """Monitoring plugins (exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)."""


# --- volume ------------------------------------------------------------------------------
@check_group.command("volume")
@click.argument("path")
@click.option("-w", "--warning", type=RANGE, default="10:", show_default=True,
              help="WARNING range for free space in % (10: = warn below 10 %).")
@click.option("-c", "--critical", type=RANGE, default="5:", show_default=True,
              help="CRITICAL range for free space in %.")
@click.option("-W", "--inodes-warning", type=RANGE, default="10:", show_default=True,
              help="WARNING range for free inodes in %.")
@click.option("-K", "--inodes-critical", type=RANGE, default="5:", show_default=True,
              help="CRITICAL range for free inodes in %.")
@click.option("--bytes-warning", type=RANGE, help="WARNING range for free space in bytes.")
@click.option("--bytes-critical", type=RANGE, help="CRITICAL range for free space in bytes.")
@click.option("--free-inodes-warning", type=RANGE, help="WARNING range for free inodes.")
@click.option("--free-inodes-critical", type=RANGE, help="CRITICAL range for free inodes.")
@_common
def volume_command(path, warning, critical, inodes_warning, inodes_critical, bytes_warning,
                   bytes_critical, free_inodes_warning, free_inodes_critical, timeout, verbose):
    """Free space and free inodes of the filesystem holding PATH."""
    from mailstore.checks import volume
    _finish("volume", lambda: volume.make_check(
        path, space_warning=warning, space_critical=critical,
        inodes_warning=inodes_warning, inodes_critical=inodes_critical,
        bytes_warning=bytes_warning, bytes_critical=bytes_critical,
        ifree_warning=free_inodes_warning, ifree_critical=free_inodes_critical),
        timeout, verbose)


# --- cert --------------------------------------------------------------------------------
@check_group.command("cert")
@click.argument("file")
@click.option("--key", "key_file", help="Private key (PEM) that must match the certificate.")
@click.option("--crl", "crl_file", help="CRL (PEM or DER) of the certificate's issuer.")
@click.option("--ca", "ca_file",
              help="Trusted root certificate(s) (PEM); the chain in FILE must lead to one.")
@click.option("-w", "--warning", type=RANGE, default="30:", show_default=True,
              help="WARNING range for days until the first certificate in FILE expires.")
@click.option("-c", "--critical", type=RANGE, default="14:", show_default=True,
              help="CRITICAL range for days until expiry.")
@_common
def cert_command(file, key_file, crl_file, ca_file, warning, critical, timeout, verbose):
    """Certificate (chain) FILE: days to expiry, key match, chain, revocation."""
    from mailstore.checks import cert
    _finish("cert", lambda: cert.make_check(
        file, key_file=key_file, crl_file=crl_file, ca_file=ca_file,
        warning=warning, critical=critical), timeout, verbose)


# --- crl ---------------------------------------------------------------------------------
@check_group.command("crl")
@click.argument("files", nargs=-1, required=True)
@click.option("-w", "--warning", type=RANGE, default="10800", show_default=True,
              help="WARNING range for the seconds since the refresh last rewrote every FILE.")
@click.option("-c", "--critical", type=RANGE, default="86400", show_default=True,
              help="CRITICAL range for the seconds since the last successful refresh.")
@click.option("--next-update-warning", type=RANGE, default="21600:", show_default=True,
              help="WARNING range for the seconds left until the earliest nextUpdate.")
@click.option("--next-update-critical", type=RANGE, default="0:", show_default=True,
              help="CRITICAL range for the seconds left until the earliest nextUpdate "
              "(0: = critical once it has passed).")
@_common
def crl_command(files, warning, critical, next_update_warning, next_update_critical, timeout,
                verbose):
    """Installed CRL FILEs: time since the refresh job last succeeded, nextUpdate left."""
    from mailstore.checks import crl
    _finish("crl", lambda: crl.make_check(
        files, warning=warning, critical=critical, next_update_warning=next_update_warning,
        next_update_critical=next_update_critical), timeout, verbose)


# --- mailq -------------------------------------------------------------------------------
@check_group.command("mailq")
@click.option("-w", "--warning", type=RANGE, default="100", show_default=True,
              help="WARNING range for the number of queued messages.")
@click.option("-c", "--critical", type=RANGE, default="500", show_default=True,
              help="CRITICAL range for the number of queued messages.")
@click.option("--age-warning", type=RANGE, default="21600", show_default=True,
              help="WARNING range for the age of the oldest deferred message (seconds).")
@click.option("--age-critical", type=RANGE, default="86400", show_default=True,
              help="CRITICAL range for the age of the oldest deferred message (seconds).")
@click.option("--postqueue", default="postqueue", show_default=True,
              help="postqueue command (path) to run as `postqueue -j`.")
@click.option("--held", metavar="FILE",
              help="CRITICAL while FILE exists (delivery held on purpose by the mail "
                   "migration's mail-quiesce), with its one line as the reason.")
@_common
def mailq_command(warning, critical, age_warning, age_critical, postqueue, held, timeout,
                  verbose):
    """Postfix queue size and age of the oldest deferred message (`postqueue -j`)."""
    from mailstore.checks import mailq
    _finish("mailq", lambda: mailq.make_check(
        postqueue=postqueue, warning=warning, critical=critical,
        age_warning=age_warning, age_critical=age_critical, timeout=timeout, held=held),
        timeout, verbose)


# --- backup ------------------------------------------------------------------------------
@check_group.command("backup")
@repo_arguments()
@key_file_option("Key file of an encrypted repository.")
@click.option("-w", "--warning", type=RANGE, default="93600", show_default=True,
              help="WARNING range for the age of the last complete snapshot (seconds).")
@click.option("-c", "--critical", type=RANGE, default="180000", show_default=True,
              help="CRITICAL range for the age of the last complete snapshot (seconds).")
@click.option("--verify-warning", type=RANGE, default="691200", show_default=True,
              help="WARNING range for the age of the last verify (seconds).")
@click.option("--verify-critical", type=RANGE,
              help="CRITICAL range for the age of the last verify (seconds).")
@click.option("--snapshots-warning", type=RANGE, help="WARNING range for the snapshot count.")
@click.option("--snapshots-critical", type=RANGE, default="1:", show_default=True,
              help="CRITICAL range for the snapshot count.")
@_common
def backup_command(repo, key_file, warning, critical, verify_warning, verify_critical,
                   snapshots_warning, snapshots_critical, timeout, verbose):
    """Backup repository REPO: age of the last complete snapshot, last verify, snapshot count.

    REPO may be given as -r/--repo REPO or in MAILSTORE_REPOSITORY instead, the key file in
    MAILSTORE_KEY_FILE instead of --key-file (as for `mailstore backup`).
    """
    from mailstore.checks import backup
    _finish("backup", lambda: backup.make_check(
        repo, key_file=key_file, warning=warning, critical=critical,
        verify_warning=verify_warning, verify_critical=verify_critical,
        snapshots_warning=snapshots_warning, snapshots_critical=snapshots_critical),
        timeout, verbose)


# --- backup-copy -------------------------------------------------------------------------
@check_group.command("backup-copy")
@click.argument("directory")
@click.option("-w", "--warning", type=RANGE, default="93600", show_default=True,
              help="WARNING range for the age of the last copy (seconds).")
@click.option("-c", "--critical", type=RANGE, default="180000", show_default=True,
              help="CRITICAL range for the age of the last copy (seconds).")
@click.option("--verify-warning", type=RANGE, default="180000", show_default=True,
              help="WARNING range for the age of the last verify of a copy (seconds).")
@click.option("--verify-critical", type=RANGE,
              help="CRITICAL range for the age of the last verify of a copy (seconds).")
@click.option("--copies-warning", type=RANGE, help="WARNING range for the copies kept.")
@click.option("--copies-critical", type=RANGE, default="1:", show_default=True,
              help="CRITICAL range for the copies kept.")
@_common
def backup_copy_command(directory, warning, critical, verify_warning, verify_critical,
                        copies_warning, copies_critical, timeout, verbose):
    """Off-host copies in DIRECTORY (on the backup host): age of the last copy, its verify.

    Reads only DIRECTORY/state.json, which the nightly copy job writes.
    """
    from mailstore.checks import backup_copy
    _finish("backup copy", lambda: backup_copy.make_check(
        directory, warning=warning, critical=critical, verify_warning=verify_warning,
        verify_critical=verify_critical, copies_warning=copies_warning,
        copies_critical=copies_critical), timeout, verbose)


# --- maildir -----------------------------------------------------------------------------
@check_group.command("maildir")
@click.argument("root")
@click.option("-w", "--warning", type=RANGE, default="0", show_default=True,
              help="WARNING range for the number of stale files in tmp/.")
@click.option("-c", "--critical", type=RANGE,
              help="CRITICAL range for the number of stale files in tmp/.")
@click.option("--stale-age", type=click.IntRange(min=1), default=36 * 3600, show_default=True,
              help="A file in tmp/ older than this many seconds is stale (Maildir spec: 36 h).")
@click.option("--owner", help="User name or uid every file must belong to "
              "(default: the owner of each user's Maildir directory).")
@click.option("--owner-warning", type=RANGE,
              help="WARNING range for the number of files with the wrong owner.")
@click.option("--owner-critical", type=RANGE, default="0", show_default=True,
              help="CRITICAL range for the number of files with the wrong owner.")
@click.option("--db-defaults-file", help="MySQL option file ([client] host, user, password, "
              "database) for the user database; without it users are not compared.")
@click.option("--db-query", help="SQL returning the user directory names and, optionally, "
              "whether each user is active (0/1) "
              "[default: mailstore.checks.maildir.DEFAULT_USER_QUERY].")
@click.option("--orphans-warning", type=RANGE, default="0", show_default=True,
              help="WARNING range for Maildirs whose user is not in the database.")
@click.option("--orphans-critical", type=RANGE,
              help="CRITICAL range for Maildirs whose user is not in the database.")
@click.option("--missing-warning", type=RANGE,
              help="WARNING range for active database users without a Maildir (default: none; "
              "a new user has no Maildir until the first mail).")
@click.option("--missing-critical", type=RANGE,
              help="CRITICAL range for active database users without a Maildir.")
@click.option("--cache", "cache_file",
              help="Scan cache file [default: ~/.cache/mailstore/check-maildir-<hash>.json].")
@click.option("--max-cache-age", type=click.IntRange(min=0), default=3600, show_default=True,
              help="Re-scan an unchanged directory after about this many seconds anyway "
              "(notices ownership changes, which do not touch directory mtimes).")
@_common
def maildir_command(root, warning, critical, stale_age, owner, owner_warning, owner_critical,
                    db_defaults_file, db_query, orphans_warning, orphans_critical,
                    missing_warning, missing_critical, cache_file, max_cache_age, timeout,
                    verbose):
    """Maildirs under ROOT/<user>/Maildir: stale tmp/ files, owners, users, totals."""
    from mailstore.checks import maildir
    _finish("maildir", lambda: maildir.make_check(
        root, stale_warning=warning, stale_critical=critical, stale_age=stale_age,
        owner=owner, owner_warning=owner_warning, owner_critical=owner_critical,
        db_defaults_file=db_defaults_file, db_query=db_query,
        orphans_warning=orphans_warning, orphans_critical=orphans_critical,
        missing_warning=missing_warning, missing_critical=missing_critical,
        cache_file=cache_file, max_cache_age=max_cache_age), timeout, verbose)


COMMANDS = {"check": check_group}
