"""Registration of a host's mailstore services on the Icinga2 master, from the host itself.

Shared by the mail server (operations/monitoring.py) and the backup host
(operations/backup_host.py): each writes a description and its own API credentials file, then
runs `mailstore icinga register` there (TLS verified against the master's CA; the password
only in the credentials file, never on a command line). It runs when what the last
*successful* registration recorded (a digest in a marker file) differs from what is wanted,
so a run that failed there (master down) is finished by the next one, or when a dry run says
the master's objects drifted (lost in a restore, edited by hand); an unchanged inventory on
an unchanged master changes nothing.
"""
import json

from pyinfra import host
from pyinfra.api import FactBase
from pyinfra.facts.files import FileContents
from pyinfra.operations import server

MAILSTORE = "/usr/local/bin/mailstore"


class RegistrationPending(FactBase):
    """What `mailstore icinga register --dry-run` would change on the master: a list of
    "verb type name" ([] when the master is in step), or None when that cannot be told
    (mailstore or its files not installed yet, the master unreachable)."""

    def command(self, register):
        return (f"if [ -x {MAILSTORE} ]; then {register} --dry-run --json 2>/dev/null; fi; "
                "true")

    def process(self, output):
        try:
            summary = json.loads("\n".join(output))
        except ValueError:
            return None
        return [f"{verb} {item['type']} {item['name']}"
                for verb in ("created", "updated", "recreated", "deleted")
                for item in summary.get(verb, [])]


def connection_args(connection, ca, credentials):
    """The connection options of `mailstore icinga register|push`: URL, TLS name, CA and
    the credentials FILE (the password itself never)."""
    args = ["--url", connection["url"]]
    if connection["tls_name"]:
        args += ["--tls-name", connection["tls_name"]]
    return args + ["--ca", ca, "--credentials", credentials]


def register(name, connection, ca, credentials, description, marker, wanted, prune=False):
    """Add the operation that registers `description` on the master, unless `marker` holds
    `wanted` (the digest of what is registered) and a dry run finds nothing to change.

    + name: the operation's name
    + connection: {"url", "tls_name"} of the master's API
    + ca, credentials, description: paths on the host
    + marker: file on the host recording `wanted` after a successful registration
    + wanted: a digest of everything that decides the registration (never a secret itself)
    + prune: delete the host's objects the description no longer declares
    """
    command = " ".join([MAILSTORE, "icinga", "register"] + (["--prune"] if prune else [])
                       + connection_args(connection, ca, credentials)
                       + ["--description", description])
    registered = (host.get_fact(FileContents, path=marker) or [""])[0].strip()
    # Also when the master lost or changed our objects since (restored, edited by hand).
    pending = host.get_fact(RegistrationPending, register=command) \
        if registered == wanted else None
    if registered != wanted or pending:
        server.shell(name=name, commands=[f"{command} && echo {wanted} > {marker}"])
