"""`mailstore backup ...`: parse, call mailstore.backup, print.

Cron-friendly: one summary line per command on stdout (`backup run` ends it with the snapshot
id), errors and warnings one per line on stderr prefixed `mailstore backup:`, progress only
when stderr is a terminal, exit 0 only on full success (1 on any failure or warning, 2 on bad
usage; `restore` exits 3 when it restored all it could but skipped something in its way, each
named on stderr). `--json` prints one JSON document instead of the text.

Every error is ONE line on stderr, never a traceback: cron mails it and syslog keeps it
(the nightly job logs every line), so a bad argument, an unreadable repository and a bug
alike must read as one `mailstore backup: error: ...` line.
"""
import datetime
import json
import re
import sqlite3
import sys
import time

import click

from mailstore import backup as lib
from mailstore import maildir
from mailstore.cli import repository
from mailstore.cli.repository import repo_arguments

PREFIX = "mailstore backup:"
# `restore`'s exit status when it restored what it could but skipped something in its way
RESTORE_SKIPPED = 3

key_file_option = repository.key_file_option(
    "Key file of an encrypted repository (mode 0600). Ignored by an unencrypted one.")
wait_option = click.option(
    "--wait", type=click.FloatRange(min=0), default=0, show_default=True, metavar="SECONDS",
    help="Seconds to wait for the repository lock held by another run before failing.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")


def quiet_option(what):
    return click.option("-q", "--quiet", is_flag=True,
                        help="Print {} (errors still go to stderr).".format(what))


def _progress(quiet=False):
    if sys.stderr.isatty() and not quiet:
        return lambda text: click.echo("{} {}".format(PREFIX, text), err=True)
    return None


def _fail(text, code=1):
    # several lines (a database dump's stderr...) joined into one
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    click.echo("{} error: {}".format(PREFIX, "; ".join(lines)), err=True)
    sys.exit(code)


def _describe(exc):
    """The error line for an exception that ends a command."""
    if isinstance(exc, (lib.BackupError, maildir.MaildirError)):
        return str(exc)
    if isinstance(exc, OSError):
        return "{}{}".format(exc.strerror or exc, ": " + str(exc.filename)
                             if exc.filename else "")
    if isinstance(exc, sqlite3.Error):
        return "catalog: {}".format(exc)
    return "unexpected {}: {} (a bug in mailstore)".format(type(exc).__name__, exc)


class _Errors:
    """Turns any error of the library into one stderr line and exit 1."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and issubclass(exc_type, Exception) \
                and not issubclass(exc_type, click.ClickException):     # usage: _OneLineGroup
            _fail(_describe(exc))
        return False


class _OneLineGroup(click.Group):
    """`mailstore backup`: a usage error (click's own is several lines: usage, hint, error)
    and whatever else escapes a command become one stderr line too."""

    def parse_args(self, ctx, args):
        with _one_line_errors():
            return super().parse_args(ctx, args)

    def invoke(self, ctx):
        with _one_line_errors():
            return super().invoke(ctx)


# click >= 8.2 shows the help of a group called without a command through this error
_SHOWS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


class _one_line_errors:
    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None or not issubclass(exc_type, Exception) \
                or issubclass(exc_type, (click.exceptions.Exit, click.Abort)) \
                or (_SHOWS_HELP and issubclass(exc_type, _SHOWS_HELP)):
            return False
        if issubclass(exc_type, click.ClickException):
            hint = " (see `{} --help`)".format(exc.ctx.command_path) \
                if getattr(exc, "ctx", None) is not None else ""
            _fail(exc.format_message() + hint, exc.exit_code)
        _fail(_describe(exc))


def _emit_json(data):
    click.echo(json.dumps(data, indent=1, sort_keys=True, default=str))


def _size(n):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return "{:.0f} {}".format(n, unit) if unit == "B" else "{:.1f} {}".format(n, unit)
        n /= 1024.0


def _when(t):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


@click.group("backup", cls=_OneLineGroup)
def backup_group():
    """Maildir-aware backups: incremental, deduplicated, optionally encrypted.

    A message is stored once, keyed by its content; a flag change (a rename) costs neither
    a read nor new space. See `mailstore backup COMMAND --help`.

    Every command names the repository the same way: REPO (its first argument), or
    -r/--repo REPO, or else the environment variable MAILSTORE_REPOSITORY; the key file with
    --key-file F, or else MAILSTORE_KEY_FILE.
    """


@backup_group.command("init")
@repo_arguments()
@key_file_option
@click.option("--compression", type=click.Choice(["fast", "small"]), default="fast",
              show_default=True,
              help="small: also Huffman-code attachments (about 25 % less space for them, "
                   "twice the CPU time of a first backup).")
@click.option("--new-key", is_flag=True,
              help="Write a new random key to the --key-file path (which must not exist).")
def init_cmd(repo, key_file, compression, new_key):
    """Create an empty repository REPO (encrypted when a key file is given).

    The key file must exist (64 hex digits, mode 0600, e.g. from `openssl rand -hex 32`);
    with --new-key a new random key is written there instead (mode 0600), and the command
    says so on stderr. Keep a copy of the key away from the repository: without it nothing
    can be restored.
    """
    if new_key and key_file is None:
        _fail("--new-key needs --key-file (or MAILSTORE_KEY_FILE): where to write the key", 2)
    with _Errors():
        config = lib.init(repo, key_file=key_file, compression=compression,
                          new_key=bool(new_key))
    if new_key:
        click.echo("{} wrote a NEW key to {}: copy it away from the repository now; without "
                   "it nothing can be restored".format(PREFIX, key_file), err=True)
    click.echo("{} created repository {} (encryption: {}, compression: {})".format(
        PREFIX, repo, config["encryption"], config["compression"]))


@backup_group.command("upgrade")
@repo_arguments()
@key_file_option
@wait_option
@json_option
def upgrade_cmd(repo, key_file, wait, as_json):
    """Upgrade a repository of format 1 to format 2 (an authenticated catalog).

    Reads back every object first and compares every size with the catalog; anything
    damaged is named and nothing is changed. Until it is upgraded, a format 1 repository
    works as before, without authentication.
    """
    with _Errors():
        result = lib.upgrade(repo, key_file=key_file, wait=wait, progress=_progress())
    if as_json:
        _emit_json(result)
        return
    click.echo("{} upgraded repository {} to format {}: {} snapshots authenticated, {} "
               "objects read and checked".format(PREFIX, repo, result["format"],
                                                 result["snapshots"], result["objects"]))


@backup_group.command("run")
@repo_arguments("source_root")
@key_file_option
@click.option("--include", "include", multiple=True, type=click.Path(),
              help="A config file or directory to add to the snapshot (repeatable).")
@click.option("--mysql-dump", "mysql_dump", metavar="DB", default=None,
              help="Add a consistent dump of database DB (mariadb-dump --single-transaction).")
@click.option("--mysql-defaults-file", type=click.Path(dir_okay=False), default=None,
              help="Client options file for the dump (credentials, socket); default: root's "
                   "unix socket login.")
@click.option("--full-scan", is_flag=True,
              help="lstat every message, not only new names (after a chown/chmod in place); "
                   "a run does a full scan by itself at least once a week.")
@wait_option
@quiet_option("only the snapshot id, no progress and no summary")
@json_option
def run_cmd(repo, source_root, key_file, include, mysql_dump, mysql_defaults_file, full_scan,
            wait, quiet, as_json):
    """Take a snapshot of every ROOT/<user>/ under SOURCE_ROOT.

    Prints a summary whose last word is the new snapshot id. Exits 1 if the run failed (no
    snapshot is recorded then) or if something was skipped (each named on stderr).
    """
    with _Errors():
        result = lib.run(repo, source_root, key_file=key_file, include=include,
                         mysql_dump=mysql_dump, mysql_defaults_file=mysql_defaults_file,
                         wait=wait, progress=_progress(quiet), full_scan=full_scan)
    for text in result["warnings"]:
        click.echo("{} warning: {}".format(PREFIX, text), err=True)
    if as_json:
        _emit_json(result)
    elif quiet:
        click.echo(result["id"])
    else:
        click.echo("{} {} messages ({}), read {} files ({}), {} new objects ({} stored){}; "
                   "snapshot {}".format(
                       PREFIX, result["messages"], _size(result["bytes"]), result["read_files"],
                       _size(result["read_bytes"]), result["new_objects"],
                       _size(result["new_bytes"]),
                       ", {} warnings".format(len(result["warnings"]))
                       if result["warnings"] else "", result["id"]))
    sys.exit(1 if result["warnings"] else 0)


@backup_group.command("list")
@repo_arguments()
@key_file_option
@json_option
def list_cmd(repo, key_file, as_json):
    """List the complete snapshots, oldest first."""
    with _Errors():
        snaps = lib.list_snapshots(repo, key_file=key_file)
    if as_json:
        _emit_json(snaps)
        return
    for s in snaps:
        click.echo("{}  {}  {:>8} messages  {:>10}  new {:>10}{}".format(
            s["id"], _when(s["finished"]), s["messages"], _size(s["bytes"]),
            _size(s["new_bytes"]), "  {} warnings".format(s["warnings"])
            if s["warnings"] else ""))


@backup_group.command("status")
@repo_arguments()
@key_file_option
@json_option
def status_cmd(repo, key_file, as_json):
    """Snapshot count, last complete snapshot and last verification (reads the catalog only)."""
    with _Errors():
        st = lib.status(repo, key_file=key_file)
    if as_json:
        _emit_json(st)
        return
    v = st["last_verify"]
    damaged = st["damaged_snapshots"]
    click.echo("{} {} snapshots, last {} at {}; last verify: {}{}".format(
        PREFIX, st["snapshots"], st["last_snapshot_id"] or "-", _when(st["last_complete"]),
        "never" if v is None else "{} at {} ({} damaged{})".format(
            "ok" if v["ok"] else "FAILED", _when(v["time"]), v["damaged"],
            ", data read" if v["read_data"] else ""),
        "; DAMAGED snapshots: {}".format(", ".join(
            d["id"] + (" (the newest)" if d["newest"] else "") for d in damaged))
        if damaged else ""))


@backup_group.command("verify")
@repo_arguments()
@click.option("--snapshot", default=None, help="Check only this snapshot (id or `latest`).")
@click.option("--read-data", is_flag=True,
              help="Read back and re-hash every object (slow); names each damaged message.")
@click.option("--sample", type=click.FloatRange(min=0, max=1, min_open=True), default=None,
              help="With --read-data: read only this random fraction of the objects "
                   "(e.g. 0.1 weekly).")
@click.option("--previous", type=click.Path(file_okay=False), default=None, metavar="COPY",
              help="An off-host copy made before this one: its sealed catalog must not be "
                   "newer than this one's (an older night's served again is an error).")
@key_file_option
@wait_option
@quiet_option("nothing but what is damaged or missing, no progress and no summary")
@json_option
def verify_cmd(repo, snapshot, read_data, sample, previous, key_file, wait, quiet, as_json):
    """Check that the snapshots are restorable; exit 1 if anything is damaged or missing.

    An off-host copy whose catalog is sealed is checked without the key as far as that goes
    (the sealed catalog's framing and every pack's records; --snapshot does not apply); with
    --key-file its catalog is decrypted and checked in full.
    """
    with _Errors():
        result = lib.verify(repo, key_file=key_file, snapshot=snapshot, read_data=read_data,
                            sample=sample, wait=wait, progress=_progress(quiet),
                            previous=previous)
    for text in result["warnings"]:
        click.echo("{} warning: {}".format(PREFIX, text), err=True)
    if as_json:
        _emit_json(result)
    else:
        for d in result["damaged"]:
            for use in d["uses"] or [{"user": None, "path": "(unused object)", "snapshots": []}]:
                click.echo("{} DAMAGED {}{} ({}) in snapshots {}; {}".format(
                    PREFIX, use["user"] + "/" if use["user"] else "", use["path"], d["problem"],
                    ", ".join(use["snapshots"]) or "-",
                    "lost for good (no longer in the source at snapshot {})".format(
                        d["lost_at"]) if d.get("lost_at") else
                    "the next run stores it again if the source still has it"), err=True)
        for name in result["missing_packs"]:
            click.echo("{} MISSING pack {}".format(PREFIX, name), err=True)
        for name in result["pack_size_mismatch"]:
            click.echo("{} pack {} has another size than recorded".format(PREFIX, name),
                       err=True)
        for text in result["problems"]:
            click.echo("{} DAMAGED {}".format(PREFIX, text), err=True)
        if not quiet and "sealed" in result:
            info = result["sealed"]
            # (a masked pack's records are not counted: without the key they do not show)
            click.echo("{} verify {}: sealed catalog {}, {} packs whole; catalog: "
                       "{}".format(PREFIX, "ok" if result["ok"] else "FAILED",
                                   "generation {} ({})".format(info["generation"],
                                                               _size(info["bytes"]))
                                   if info else "DAMAGED", result["packs"],
                                   result["catalog"]))
        elif not quiet:
            click.echo("{} verify {}: {} snapshots, {} objects{}, {} damaged; catalog: "
                       "{}".format(PREFIX, "ok" if result["ok"] else "FAILED",
                                   result["snapshots"], result["objects"],
                                   " ({} read and re-hashed)".format(result["read"])
                                   if read_data else " located", len(result["damaged"]),
                                   result["catalog"]))
    sys.exit(0 if result["ok"] else 1)


@backup_group.command("seal")
@repo_arguments()
@key_file_option
@wait_option
@json_option
def seal_cmd(repo, key_file, wait, as_json):
    """Write the sealed catalog (REPO/catalog.sealed and REPO/sealed/) of an encrypted
    repository now.

    What an off-host copy gets instead of the catalog: encrypted and authenticated with the
    repository key. Every `run`, `prune` and `upgrade` writes it too; this is for a
    repository whose last run was made by an older mailstore.
    """
    with _Errors():
        result = lib.seal(repo, key_file=key_file, wait=wait)
    if as_json:
        _emit_json(result)
        return
    click.echo("{} sealed catalog of {}: generation {}, {} in {} chunks".format(
        PREFIX, repo, result["generation"], _size(result["bytes"]), result["chunks"]))


@backup_group.command("unseal")
@repo_arguments()
@key_file_option
@json_option
def unseal_cmd(repo, key_file, as_json):
    """Make an off-host copy put back on the server a whole repository again.

    Its sealed catalog, authenticated with the key, is written out as REPO/catalog.sqlite
    (never over an existing one); `run` and `prune` work on it afterwards. Make the copied
    files writable first (chmod -R u+w REPO).
    """
    with _Errors():
        result = lib.unseal(repo, key_file=key_file)
    if as_json:
        _emit_json(result)
        return
    click.echo("{} unsealed the catalog of {}: {} snapshots (sealed generation {})".format(
        PREFIX, repo, result["snapshots"], result["generation"]))


@backup_group.command("export")
@repo_arguments()
@repository.key_file_option("Not needed: export reads no catalog (accepted like everywhere).")
@json_option
def export_cmd(repo, key_file, as_json):
    """Hard-link what an off-host copy gets into REPO/offhost-view; print its path.

    Encrypted: config.json, the packs and the sealed catalog, never catalog.sqlite or the
    index cache; unencrypted: everything but the lock and tmp/. For the server's forced
    command (mailstore-backup-serve), which holds the repository's lock while it serves the
    view and removes it afterwards: this command takes no lock itself.
    """
    with _Errors():
        files = lib.served_paths(repo)
        view = lib.export(repo)
    if as_json:
        _emit_json({"view": view, "files": files})
        return
    click.echo(view)


@backup_group.command("restore")
@repo_arguments("snapshot", "target_root")
@click.option("--user", default=None, help="Only this user.")
@click.option("--folder", default=None, help="Only this folder (INBOX, Sent, A.B or .Sent).")
@click.option("--message", default=None,
              help="Only this message (the id printed by `find`: file name before `:2,`).")
@click.option("--merge", is_flag=True,
              help="Into a live Maildir: add only missing messages, never overwrite; Dovecot "
                   "assigns them new UIDs.")
@click.option("--extras", is_flag=True,
              help="Restore the --include paths and database dumps (below TARGET_ROOT) "
                   "instead of mail.")
@click.option("--dry-run", is_flag=True,
              help="Only list what would be restored; write nothing.")
@key_file_option
@wait_option
@quiet_option("nothing but errors: no progress, no list, no summary")
@json_option
def restore_cmd(repo, snapshot, target_root, user, folder, message, merge, extras, dry_run,
                key_file, wait, quiet, as_json):
    """Restore SNAPSHOT (an id or `latest`) into TARGET_ROOT/<user>/Maildir.

    Without --merge the restored folders must be empty: messages, Dovecot control files (so
    IMAP UIDs are kept), owner, mode and mtime all come back as they were.

    Nothing is overwritten and no symbolic link followed: what is in the way (with --merge,
    a message's name held by a link or by another content, a folder that is a link) is
    skipped, named on stderr (`mailstore backup: skipped PATH: REASON`) and counted.
    Exit 0: all restored (or already present); 3: the rest restored, something skipped;
    1: a failure (a damaged object, a refused target).
    """
    with _Errors():
        result = lib.restore(repo, snapshot, target_root, key_file=key_file, user=user,
                             folder=folder, message=message, merge=merge, extras=extras,
                             wait=wait, progress=_progress(quiet), dry_run=dry_run)
    for entry in result["conflict_entries"]:
        click.echo("{} skipped {}: {}".format(PREFIX, entry["path"], entry["reason"]), err=True)
    for text in result["errors"]:
        click.echo("{} error: {}".format(PREFIX, text), err=True)
    if as_json:
        _emit_json(result)
    elif not quiet:
        for path in result.get("paths", ()):
            click.echo("restore  {}".format(path))
        click.echo("{} {} {} messages ({}) and {} files from {} into {}{}{}{}".format(
            PREFIX, "dry run: would restore" if dry_run else "restored", result["messages"],
            _size(result["bytes"]), result["files"], result["snapshot"], target_root,
            ", {} already present".format(result["present"]) if result["present"] else "",
            ", {} SKIPPED (in the way)".format(result["conflicts"]) if result["conflicts"] else "",
            ", {} FAILED".format(len(result["errors"])) if result["errors"] else ""))
    if result["errors"]:
        sys.exit(1)
    sys.exit(RESTORE_SKIPPED if result["conflicts"] else 0)


@backup_group.command("prune")
@repo_arguments()
@click.option("--keep-daily", type=click.IntRange(min=0), default=0,
              help="Keep the newest snapshot of each of the last N days that have one.")
@click.option("--keep-weekly", type=click.IntRange(min=0), default=0,
              help="... of each of the last N ISO weeks.")
@click.option("--keep-monthly", type=click.IntRange(min=0), default=0,
              help="... of each of the last N months.")
@click.option("--keep-last", type=click.IntRange(min=0), default=0, show_default=True,
              help="Keep the N newest snapshots.")
@click.option("--dry-run", is_flag=True, help="Only show what would be kept and removed.")
@key_file_option
@wait_option
@quiet_option("nothing but errors: no list, no summary")
@json_option
def prune_cmd(repo, keep_daily, keep_weekly, keep_monthly, keep_last, dry_run, key_file, wait,
              quiet, as_json):
    """Forget snapshots the policy does not keep and free the space only they used.

    Any of the --keep-* options may be left out (0 of that kind); at least one must keep
    something, or nothing is done.
    """
    with _Errors():
        result = lib.prune(repo, key_file=key_file, keep_last=keep_last, keep_daily=keep_daily,
                           keep_weekly=keep_weekly, keep_monthly=keep_monthly, dry_run=dry_run,
                           wait=wait)
    if as_json:
        _emit_json(result)
        return
    if quiet:
        return
    if sys.stdout.isatty() or dry_run:
        for k in result["keep"]:
            click.echo("keep    {}  {}".format(k["id"], ", ".join(k["reasons"])))
        for sid in result["remove"]:
            click.echo("remove  {}".format(sid))
    click.echo("{} {}{} snapshots kept, {} removed, {} objects ({}) freed, {} packs deleted, "
               "{} rewritten".format(
                   PREFIX, "dry run: " if dry_run else "", len(result["keep"]),
                   len(result["remove"]), result["objects_removed"],
                   _size(result["bytes_freed"]), result["packs_deleted"],
                   result["packs_rewritten"]))


@backup_group.command("forget")
@repo_arguments("snapshot")
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@key_file_option
@wait_option
@quiet_option("nothing but errors")
@json_option
def forget_cmd(repo, snapshot, dry_run, key_file, wait, quiet, as_json):
    """Remove SNAPSHOT (its id; `latest` is refused), e.g. one that verify or the run found
    damaged.

    Its objects stay until the next `prune` frees what no snapshot needs. Refused when the
    list of snapshots itself fails its check (nothing is changed then).
    """
    with _Errors():
        result = lib.forget(repo, snapshot, key_file=key_file, dry_run=dry_run, wait=wait)
    if as_json:
        _emit_json(result)
    elif not quiet:
        click.echo("{} {} snapshot {} ({}); {} snapshots left; `prune` frees its space".format(
            PREFIX, "dry run: would remove" if dry_run else "removed", result["id"],
            "damaged: " + result["damaged"] if result["damaged"] else "it passed its check",
            result["remaining"]))


_RELATIVE = re.compile(r"^(\d+)([dwh])$")


def _parse_time(value):
    """`2026-11-18`, `2026-11-18 14:30` (local time) or `7d`/`2w`/`12h` ago -> unix time."""
    if value is None:
        return None
    m = _RELATIVE.match(value.strip())
    if m:
        seconds = {"h": 3600, "d": 86400, "w": 7 * 86400}[m.group(2)]
        return time.time() - int(m.group(1)) * seconds
    for fmt in ("%Y-%m-%d", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S"):
        try:
            return time.mktime(datetime.datetime.strptime(value, fmt).timetuple())
        except ValueError:
            pass
    raise click.BadParameter("expected YYYY-MM-DD, 'YYYY-MM-DD HH:MM' or 7d/2w/12h: "
                             "{!r}".format(value))


@backup_group.command("find")
@repo_arguments()
@click.option("--user", default=None, help="Only this user.")
@click.option("--folder", default=None, help="Only this folder (INBOX, Sent, .Sent ...).")
@click.option("--since", default=None, help="Date on or after (YYYY-MM-DD, or 7d, 2w ago).")
@click.option("--until", default=None, help="Date before (YYYY-MM-DD, or 7d, 2w ago).")
@click.option("--from", "sender", default=None, help="Substring of the From header.")
@click.option("--subject", default=None, help="Substring of the Subject header.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N results.")
@key_file_option
@json_option
def find_cmd(repo, user, folder, since, until, sender, subject, limit, key_file, as_json):
    """Find messages in any snapshot; prints SNAPSHOT and MESSAGE for `restore --message`.

    Each line: newest snapshot holding the message, user, folder, message id, date, From,
    Subject. Restore one with
    `mailstore backup restore REPO SNAPSHOT TARGET --user USER --message MESSAGE [--merge]`.
    """
    with _Errors():
        found = lib.find(repo, key_file=key_file, user=user, folder=folder,
                         since=_parse_time(since), until=_parse_time(until), sender=sender,
                         subject=subject, limit=limit)
    if as_json:
        _emit_json(found)
        return
    for f in found:
        click.echo("{}\t{}\t{}\t{}\t{}\t{}\t{}".format(
            f["snapshot"], f["user"], f["folder"], f["message"],
            lib.format_date(f["date"]), f["from"] or "-", f["subject"] or "-"))


COMMANDS = {"backup": backup_group}
