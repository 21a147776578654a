"""``mailstore icinga register|push``: the mailstore checks on the Icinga2 master (API).

Connection options are the same for both: ``--url https://master:5665``, ``--tls-name NAME``
(when the master's certificate names another host than the URL's), ``--ca FILE`` (the
Icinga CA; required: TLS is always verified), ``--credentials FILE`` (``user:password`` or
JSON ``{"username": ..., "password": ...}``; never on the command line, where ``ps`` and
pyinfra's logs would show it), ``--timeout`` seconds per request.
"""
import json
import sys

import click

from mailstore import icinga


def _connection(func):
    func = click.option("--timeout", type=click.IntRange(min=1), default=icinga.DEFAULT_TIMEOUT,
                        show_default=True, help="Seconds to wait for each API answer.")(func)
    func = click.option("--credentials", "credentials_file", required=True,
                        type=click.Path(dir_okay=False),
                        help="File with user:password or JSON {username, password}.")(func)
    func = click.option("--ca", "ca_file", required=True, type=click.Path(dir_okay=False),
                        help="CA certificate (PEM) that signed the master's API certificate.")(func)
    func = click.option("--tls-name", metavar="NAME",
                        help="Name the master's certificate must carry, when it is not the "
                             "URL's host (Icinga certificates name the node).")(func)
    func = click.option("--url", required=True,
                        help="Icinga2 API base URL, e.g. https://monitor.example:5665")(func)
    return func


def _api(url, tls_name, ca_file, credentials_file, timeout):
    user, password = icinga.read_credentials(credentials_file)
    return icinga.Api(url, ca_file, user, password, timeout=timeout, tls_name=tls_name)


def _fail(e):
    click.echo("mailstore icinga: error: %s" % e, err=True)
    sys.exit(1)


@click.group("icinga")
def icinga_group():
    """Register the mailstore checks on the Icinga2 master; push passive results."""


@icinga_group.command("register")
@_connection
@click.option("--description", "description_file", required=True,
              type=click.Path(dir_okay=False),
              help="JSON description of the host's checks "
              "(format: mailstore.icinga.description).")
@click.option("--prune", is_flag=True,
              help="Delete objects this tool created that the description no longer has.")
@click.option("--dry-run", is_flag=True, help="Only say what would change.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
def register_command(url, tls_name, ca_file, credentials_file, timeout, description_file, prune,
                     dry_run, as_json):
    """Create/update the CheckCommands and Services of a description (idempotent)."""
    try:
        desc = icinga.load_description(description_file)
        api = _api(url, tls_name, ca_file, credentials_file, timeout)
        actions = icinga.register(api, desc, prune=prune, dry_run=dry_run)
    except icinga.IcingaError as e:
        _fail(e)
    summary = {verb: [] for verb in ("created", "updated", "recreated", "deleted", "unchanged",
                                     "stale")}
    past = {"create": "created", "update": "updated", "recreate": "recreated",
            "delete": "deleted", "unchanged": "unchanged", "stale": "stale"}
    for a in actions:
        item = {"type": a.type, "name": a.name}
        if a.changes:
            item["changes"] = {k: {"old": v[0], "new": v[1]} for k, v in a.changes.items()}
        summary[past[a.verb]].append(item)
    summary["dry_run"] = dry_run
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=True))
        return
    for verb in ("created", "updated", "recreated", "deleted"):
        for item in summary[verb]:
            line = "%s%s %s %s" % ("would be " if dry_run else "", verb, item["type"],
                                   item["name"])
            if "changes" in item:
                line += " (%s)" % ", ".join(sorted(item["changes"]))
            click.echo(line)
    for item in summary["stale"]:
        click.echo("stale %s %s: no longer declared; --prune deletes it"
                   % (item["type"], item["name"]))
    click.echo("%d unchanged" % len(summary["unchanged"]))


@icinga_group.command("push", context_settings={"ignore_unknown_options": True})
@_connection
@click.option("--host", required=True, help="Host object name on the master.")
@click.option("--service", required=True, help="Service name (on --host).")
@click.option("--check-timeout", type=click.IntRange(min=1), default=600, show_default=True,
              help="Give the check this long before submitting UNKNOWN.")
@click.option("--check-source", help="Reported as the result's source [default: this FQDN].")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@click.argument("check_args", nargs=-1, required=True, type=click.UNPROCESSED)
def push_command(url, tls_name, ca_file, credentials_file, timeout, host, service, check_timeout,
                 check_source, as_json, check_args):
    """Run `mailstore check CHECK_ARGS...` and submit its result as a passive result.

    Example: mailstore icinga push --url ... --ca ... --credentials ... --host H
    --service mailstore-backup -- backup --repo /srv/backup
    """
    try:
        api = _api(url, tls_name, ca_file, credentials_file, timeout)
        status, output = icinga.push(api, host, service, list(check_args),
                                     timeout=check_timeout, check_source=check_source)
    except icinga.IcingaError as e:
        _fail(e)
    if as_json:
        click.echo(json.dumps({"host": host, "service": service, "exit_status": status,
                               "output": output}, indent=2))
    else:
        click.echo("submitted %s for %s!%s: %s" % (
            ("OK", "WARNING", "CRITICAL", "UNKNOWN")[status], host, service,
            output.split("\n", 1)[0]))


COMMANDS = {"icinga": icinga_group}
