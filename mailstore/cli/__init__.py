"""The `mailstore` command line: parses arguments, calls the library, prints.

Subcommand groups are imported only when used, so that a check plugin run every few
minutes by Icinga does not pay for importing the backup or Icinga API code.
"""
import importlib

import click

from mailstore import __version__

# verb -> module in mailstore.cli that defines a click command or group named `command`
_SUBCOMMANDS = {
    "account": "mailstore.cli.account",
    "migrate": "mailstore.cli.migrate",
    "cleanup-source": "mailstore.cli.migrate",
    "backup": "mailstore.cli.backup",
    "check": "mailstore.cli.check",
    "icinga": "mailstore.cli.icinga",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(_SUBCOMMANDS)

    def get_command(self, ctx, name):
        module_name = _SUBCOMMANDS.get(name)
        if module_name is None:
            return None
        module = importlib.import_module(module_name)
        return module.COMMANDS[name]


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mailstore")
def main():
    """Maildir migration, backups and monitoring checks for the CAcert mail server."""
