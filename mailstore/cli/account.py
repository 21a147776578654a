"""`mailstore account add|passwd|alias|list`: e-mail accounts in the user database, for the
operator on the mail server (library: mailstore.accounts).

Passwords are read from stdin when it is not a terminal (the first line), else prompted for
twice; never from the command line, where `ps` and shell history would show them. Errors are
one line on stderr, exit 1 (usage errors exit 2).
"""
import json
import sys

import click

from mailstore import accounts

PREFIX = "mailstore account"
DEFAULTS_ENV = "MAILSTORE_DB_DEFAULTS_FILE"
DOMAIN_ENV = "MAILSTORE_MAIL_DOMAIN"


def _fail(text, code=1):
    click.echo("{}: error: {}".format(PREFIX, " ".join(str(text).split())), err=True)
    sys.exit(code)


class _OneLineGroup(click.Group):
    """Usage and account errors as one stderr line (click's own usage error is several)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except accounts.AccountError as e:
            _fail(e)
        except click.UsageError as e:
            hint = " (see `{} --help`)".format(e.ctx.command_path) if e.ctx else ""
            _fail(e.format_message() + hint, e.exit_code)


def _db_options(func):
    func = click.option("--database", default=None,
                        help="Database name [default: the option file's, else {}].".format(
                            accounts.DATABASE))(func)
    return click.option("--db-defaults-file", envvar=DEFAULTS_ENV, show_envvar=True,
                        type=click.Path(dir_okay=False),
                        help="MySQL option file ([client] socket/host, user, password, "
                        "database) of an account that may write users and aliases "
                        "[default: the calling user over {} (root: unix_socket)].".format(
                            accounts.SOCKET))(func)


def _read_password():
    stream = sys.stdin
    if stream.isatty():
        return click.prompt("New password", hide_input=True, confirmation_prompt=True,
                            err=True)
    line = stream.readline()
    return line[:-1] if line.endswith("\n") else line


@click.group("account", cls=_OneLineGroup)
def account_group():
    """E-mail accounts and send-as aliases in the user database (cacertusers)."""


@account_group.command("add")
@click.argument("address")
@click.option("--mailbox", help="Directory under the mail root [default: the address's local "
              "part].")
@click.option("--domain", envvar=DOMAIN_ENV, show_envvar=True,
              help="Mail domain for a bare USER.")
@_db_options
def add_command(address, mailbox, domain, db_defaults_file, database):
    """A new account ADDRESS (USER@DOMAIN, or USER with --domain); the password from stdin
    or a prompt, stored as {BLF-CRYPT} (bcrypt) for Dovecot."""
    login, local = accounts.address(address, domain)
    mailbox = accounts.mailbox_name(mailbox or local)
    hashed = accounts.password_hash(_read_password())
    conn = accounts.connect(db_defaults_file, database)
    try:
        accounts.add(conn, login, mailbox, hashed)
    finally:
        conn.close()
    click.echo("{}: added {} (mailbox {})".format(PREFIX, login, mailbox))


@account_group.command("passwd")
@click.argument("address")
@click.option("--domain", envvar=DOMAIN_ENV, show_envvar=True,
              help="Mail domain for a bare USER.")
@_db_options
def passwd_command(address, domain, db_defaults_file, database):
    """A new password for ADDRESS, from stdin or a prompt."""
    login, _ = accounts.address(address, domain)
    hashed = accounts.password_hash(_read_password())
    conn = accounts.connect(db_defaults_file, database)
    try:
        accounts.set_password(conn, login, hashed)
    finally:
        conn.close()
    click.echo("{}: password of {} changed".format(PREFIX, login))


@account_group.command("alias")
@click.argument("alias")
@click.argument("owner")
@click.option("--send-as", is_flag=True, help="OWNER may also send as ALIAS.")
@click.option("--domain", envvar=DOMAIN_ENV, show_envvar=True,
              help="Mail domain for a bare name.")
@_db_options
def alias_command(alias, owner, send_as, domain, db_defaults_file, database):
    """ALIAS delivers to OWNER, an existing account (again: sets --send-as anew)."""
    alias, _ = accounts.address(alias, domain)
    owner, _ = accounts.address(owner, domain)
    conn = accounts.connect(db_defaults_file, database)
    try:
        accounts.add_alias(conn, alias, owner, send_as)
    finally:
        conn.close()
    click.echo("{}: {} -> {}{}".format(PREFIX, alias, owner, " (send-as)" if send_as else ""))


@account_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--weak", is_flag=True,
              help="Only accounts whose password hash Dovecot 2.4 refuses unless "
              "auth_allow_weak_schemes = yes (they are re-hashed at their next IMAP/POP3 "
              "login).")
@_db_options
def list_command(as_json, weak, db_defaults_file, database):
    """Accounts (login, mailbox, active, password scheme) and their aliases; never password
    hashes. A scheme marked (weak) is refused by Dovecot 2.4 unless auth_allow_weak_schemes
    = yes; any scheme but BLF-CRYPT is replaced at the account's next IMAP/POP3 login."""
    conn = accounts.connect(db_defaults_file, database)
    try:
        rows = accounts.list_accounts(conn)
    finally:
        conn.close()
    if weak:
        rows = [row for row in rows if row["weak"]]
    if as_json:
        click.echo(json.dumps(rows, indent=1, sort_keys=True))
        return
    for row in rows:
        names = ", ".join(a["alias"] + (" (send-as)" if a["send_as"] else "")
                          for a in row["aliases"])
        click.echo("{}\t{}\t{}\t{}{}{}".format(
            row["login"], row["mailbox"], "active" if row["active"] else "inactive",
            row["scheme"], " (weak)" if row["weak"] else "", "\t" + names if names else ""))


COMMANDS = {"account": account_group}
