"""`mailstore migrate` and `mailstore cleanup-source`: parse, call mailstore.migrate, print."""
import json
import os
import sys

import click

from mailstore import maildir
from mailstore import migrate as migration
from mailstore.migrate import Progress


def _user_names(ctx, param, value):
    for u in value:
        try:
            maildir.check_user_name(u)
        except maildir.InvalidUserName as e:
            raise click.BadParameter(str(e))
    return list(value)


def _problem(command: str, text: str) -> None:
    """A line about something that went wrong: stderr, so that it reaches the operator (cron
    mails stderr) and stays out of a report or summary that is read from stdout."""
    click.echo("mailstore %s: %s" % (command, text), err=True)


def _print_problems(command: str, user: str, labelled) -> None:
    for label, items in labelled:
        for item in items[:50]:
            _problem(command, "%s: %s: %s" % (user, label, item))
        if len(items) > 50:
            _problem(command, "%s: ... %d more %ss (see --json)" % (
                user, len(items) - 50, label))


def _print_migration(result, as_json: bool, quiet: bool) -> None:
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2, sort_keys=True))
        return
    say = (lambda text: None) if quiet else click.echo
    how = "one file system: a user is renamed unless --copy" if result.same_filesystem else \
        "different file systems: users are copied"
    say("%s%s -> %s (%s)" % ("DRY RUN: " if result.dry_run else "", result.source_root,
                             result.target_root, how))
    for u in result.users:
        line = "  %-20s %-16s %7d messages %12d bytes" % (u.user, u.mode, u.messages, u.bytes)
        if result.dry_run and u.mode == "copy":
            line += "  to copy: %d messages, %d bytes; rename %d; delete %d" % (
                u.copied_messages, u.copied_bytes, u.renamed, u.deleted)
        elif not result.dry_run and u.mode == "copy":
            line += "  copied %d (%d bytes), renamed %d, deleted %d, %s" % (
                u.copied_messages, u.copied_bytes, u.renamed, u.deleted,
                "verified" if u.verified else "NOT verified")
        say(line)
        _print_problems("migrate", u.user, (("error", u.errors), ("difference", u.differences),
                                            ("skipped", u.anomalies)))
    for name, hook in result.hooks.items():
        if hook is not None and hook.exit != 0:
            _problem("migrate", "%s hook exited %d" % (name, hook.exit))
        elif hook is not None:
            say("  %s hook exited %d" % (name, hook.exit))
    if result.error:
        _problem("migrate", "ERROR: %s" % result.error)
    if not result.dry_run:
        say("%s in %.1f s" % ("OK" if result.ok else "FAILED", result.seconds))


@click.command("migrate")
@click.argument("source_root", type=click.Path(exists=True, file_okay=False))
@click.argument("target_root", type=click.Path(file_okay=False))
@click.option("--user", "users", multiple=True, callback=_user_names,
              help="Migrate only this user (repeatable). Default: every user under SOURCE_ROOT.")
@click.option("--dry-run", is_flag=True,
              help="Print the plan (users, messages, bytes, rename or copy); change nothing.")
@click.option("--quiesce", metavar="CMD",
              help="Run with /bin/sh -c before the cut-over (defer delivery, kick IMAP "
                   "sessions). If it fails, nothing is cut over and the run exits non-zero.")
@click.option("--resume", metavar="CMD",
              help="Run with /bin/sh -c after the cut-over, also when it failed.")
@click.option("--copy", "force_copy", is_flag=True,
              help="Copy even when both roots are on one file system (default there: rename "
                   "each user directory).")
@click.option("--processes", type=click.IntRange(1, 64), metavar="N",
              help="Worker processes that share out the users (default: one per CPU, at "
                   "most 4). 1: everything in this process.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary.")
@click.option("-q", "--quiet", is_flag=True,
              help="No progress and no report; only errors (stderr) and the exit status "
                   "(--json is still printed).")
def migrate_command(source_root, target_root, users, dry_run, quiesce, resume, force_copy,
                    processes, as_json, quiet):
    """Move SOURCE_ROOT/<user>/ (with its Maildir) to TARGET_ROOT/<user>/, live.

    Copies while mail keeps arriving, runs --quiesce, copies the final delta (renames for flag
    changes, deletions for expunges), verifies everything (bytes, names, mtimes, owners,
    modes, Dovecot control files; nothing extra), then runs --resume. Across file systems the
    source is never modified; remove it later with `mailstore cleanup-source`. Safe to run
    again after any interruption. TARGET_ROOT is made when its parent exists. Progress goes
    to stderr on a terminal. Exit 0 only when every user is migrated and verified.
    """
    try:
        result = migration.migrate(source_root, target_root, users=users or None,
                                   dry_run=dry_run, quiesce=quiesce, resume=resume,
                                   force_copy=force_copy, progress=Progress(sys.stderr, quiet=quiet),
                                   processes=processes)
    except (migration.MigrateError, maildir.MaildirError) as e:
        if as_json:
            click.echo(json.dumps({"ok": False, "error": str(e)}))
        else:
            _problem("migrate", str(e))
        sys.exit(2)
    _print_migration(result, as_json, quiet)
    sys.exit(0 if result.ok else 1)


@click.command("cleanup-source")
@click.argument("source_root", type=click.Path(exists=True, file_okay=False))
@click.argument("target_root", type=click.Path(exists=True, file_okay=False))
@click.option("--user", "users", multiple=True, callback=_user_names,
              help="Clean up only this user (repeatable). Default: every migrated user.")
@click.option("--dry-run", is_flag=True,
              help="Check everything (bytes too) and print what would be deleted; delete "
                   "nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary.")
@click.option("-q", "--quiet", is_flag=True,
              help="No report; only errors (stderr) and the exit status (--json is still "
                   "printed).")
def cleanup_source_command(source_root, target_root, users, dry_run, as_json, quiet):
    """Delete migrated users from SOURCE_ROOT, only where TARGET_ROOT verifies.

    Only users that `mailstore migrate` recorded as done are touched. Every source message is
    first compared byte for byte with its copy in the target (found by folder and unique
    name, so flag changes made after the cut-over are fine); on any difference that user's
    source is left alone and the run exits non-zero.
    """
    try:
        result = migration.cleanup_source(source_root, target_root, users=users or None,
                                          dry_run=dry_run)
    except (migration.MigrateError, maildir.MaildirError) as e:
        if as_json:
            click.echo(json.dumps({"ok": False, "error": str(e)}))
        else:
            _problem("cleanup-source", str(e))
        sys.exit(2)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2, sort_keys=True))
    else:
        say = (lambda text: None) if quiet else click.echo
        if dry_run:
            say("DRY RUN: nothing is deleted")
        for u in result.users:
            if dry_run:
                say("  %-20s %s" % (u["user"], "would delete %d files under %s" % (
                    u["would_delete_files"], os.path.join(source_root, u["user"]))
                    if u["ok"] else "would be LEFT IN PLACE"))
            else:
                say("  %-20s %s, %d files deleted" % (
                    u["user"], "cleaned" if u["ok"] else "LEFT IN PLACE", u["deleted_files"]))
            _print_problems("cleanup-source", u["user"], (("problem", u["problems"]),))
        if not result.users:
            say("no migrated users to clean up")
        say("OK" if result.ok else "FAILED")
    sys.exit(0 if result.ok else 1)


COMMANDS = {"migrate": migrate_command, "cleanup-source": cleanup_source_command}
