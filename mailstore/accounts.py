"""E-mail accounts and send-as aliases in the user database (cacertusers), for operators.

The self-service system is where e-mail admins create accounts and users reset passwords; this
is the operator's path on the mail server itself (``mailstore account``): the same tables
(files/mariadb/schema.sql.j2), rows as the deploy's seed writes them.

- ``users``: login (the full address, lower case), mailbox (its directory under the mail root,
  a safe user name as :func:`mailstore.maildir.check_user_name` accepts), password
  (``{BLF-CRYPT}$2b$...``: the scheme Dovecot's SQL passdb is configured for, bcrypt, cost
  :data:`BCRYPT_COST` like the deploy's seed), active.
- ``aliases``: alias, owner (a login), send_as.

Hashing uses the ``bcrypt`` package (Debian: python3-bcrypt, bullseye to trixie), not the
stdlib ``crypt`` module, which Python 3.13 no longer has. The database is reached with PyMySQL
and a MySQL option file (``[client]``), or else as the calling system user over the local
socket (root: unix_socket authentication, as the deploy applies its SQL).
"""
import os

from mailstore import maildir as md

DATABASE = "cacertusers"
SOCKET = "/run/mysqld/mysqld.sock"
SCHEME = "{BLF-CRYPT}"
BCRYPT_COST = 10
# bcrypt uses the first 72 bytes only: a longer password would be silently cut
MAX_PASSWORD_BYTES = 72


class AccountError(Exception):
    """An account operation that cannot be done; the message is one line for the operator."""


def password_hash(password):
    """``{BLF-CRYPT}$2b$10$...`` with a random salt, as Dovecot verifies it."""
    import bcrypt
    data = password.encode("utf-8")
    if not data:
        raise AccountError("empty password")
    if len(data) > MAX_PASSWORD_BYTES:
        raise AccountError("password longer than %d bytes (bcrypt ignores the rest)"
                           % MAX_PASSWORD_BYTES)
    return SCHEME + bcrypt.hashpw(data, bcrypt.gensalt(BCRYPT_COST, prefix=b"2b")).decode()


def address(text, domain=None):
    """(login, local part) for an address or a bare user name (then in `domain`)."""
    text = text.strip().lower()
    if "@" not in text:
        if not domain:
            raise AccountError("%r is no address: give USER@DOMAIN or --domain" % text)
        text = "%s@%s" % (text, domain.strip().lower())
    local, _, host = text.rpartition("@")
    if not local or not host or "@" in local or any(c.isspace() for c in text):
        raise AccountError("%r is not an e-mail address" % text)
    return text, local


def mailbox_name(name):
    try:
        return md.check_user_name(name)
    except md.InvalidUserName as e:
        raise AccountError("mailbox: %s" % e)


def connect(defaults_file=None, database=None, timeout=10):
    """A PyMySQL connection to the user database (autocommit off)."""
    import pymysql
    if defaults_file and not os.path.isfile(defaults_file):
        raise AccountError("%s: no such option file" % defaults_file)
    kwargs = {"read_default_file": defaults_file} if defaults_file else {"unix_socket": SOCKET}
    try:
        conn = pymysql.connect(connect_timeout=timeout, charset="utf8mb4",
                               database=database, **kwargs)
        if not conn.db:
            conn.select_db(DATABASE)
    except pymysql.MySQLError as e:
        raise AccountError("user database: %s" % _message(e))
    return conn


def _message(error):
    args = getattr(error, "args", ())
    return str(args[1]) if len(args) > 1 else str(error)


def _run(conn, statements):
    """Run [(sql, args)] in one transaction; the rows of the last one."""
    import pymysql
    try:
        with conn.cursor() as cur:
            for sql, args in statements:
                cur.execute(sql, args)
            rows = cur.fetchall()
        conn.commit()
        return rows
    except pymysql.MySQLError as e:
        conn.rollback()
        raise AccountError("user database: %s" % _message(e))


def _exists(conn, login):
    return bool(_run(conn, [("SELECT 1 FROM users WHERE login = %s", (login,))]))


def add(conn, login, mailbox, hashed):
    """A new active account; AccountError if the login or the mailbox is taken."""
    taken = _run(conn, [("SELECT login FROM users WHERE login = %s OR mailbox = %s",
                         (login, mailbox))])
    if taken:
        raise AccountError("%s exists already (login or mailbox %s taken by %s)"
                           % (login, mailbox, taken[0][0]))
    _run(conn, [("INSERT INTO users (login, mailbox, password) VALUES (%s, %s, %s)",
                 (login, mailbox, hashed))])


def set_password(conn, login, hashed):
    if not _exists(conn, login):
        raise AccountError("%s: no such account" % login)
    _run(conn, [("UPDATE users SET password = %s WHERE login = %s", (hashed, login))])


def add_alias(conn, alias, owner, send_as):
    """alias -> owner (an existing account); send_as: the owner may send as the alias.
    Again for the same pair: send_as is set to the new value."""
    if not _exists(conn, owner):
        raise AccountError("%s: no such account (the owner must be one)" % owner)
    _run(conn, [("INSERT INTO aliases (alias, owner, send_as) VALUES (%s, %s, %s) "
                 "ON DUPLICATE KEY UPDATE send_as = VALUES(send_as)",
                 (alias, owner, 1 if send_as else 0))])


def list_accounts(conn):
    """[{login, mailbox, active, aliases: [{alias, send_as}]}] by login; no hashes."""
    users = _run(conn, [("SELECT login, mailbox, active FROM users ORDER BY login", None)])
    aliases = _run(conn, [("SELECT alias, owner, send_as FROM aliases ORDER BY alias", None)])
    result = [{"login": login, "mailbox": mailbox, "active": bool(active), "aliases": []}
              for login, mailbox, active in users]
    by_login = {account["login"]: account for account in result}
    for alias, owner, send_as in aliases:
        if owner in by_login:
            by_login[owner]["aliases"].append({"alias": alias, "send_as": bool(send_as)})
    return result
