"""E-mail accounts and send-as aliases in the user database (cacertusers), for operators.

The self-service system is where e-mail admins create accounts and users reset passwords; this
is the operator's path on the mail server itself (``mailstore account``): the same tables
(files/mariadb/schema.sql.j2), rows as the deploy's seed writes them.

- ``users``: login (the full address, lower case), mailbox (its directory under the mail root,
  a safe user name as :func:`mailstore.maildir.check_user_name` accepts), password
  (``{BLF-CRYPT}$2b$...``: the scheme Dovecot's SQL passdb is configured for, bcrypt, cost
  :data:`BCRYPT_COST` like the deploy's seed), active.
- ``aliases``: alias, owner (a login), send_as.

Older rows may hold another scheme ({MD5-CRYPT}, {SHA512-CRYPT}, {CRYPT}, {PLAIN-MD5}...):
:func:`hash_scheme` names it, :func:`is_weak` says whether Dovecot 2.4 refuses it unless
``auth_allow_weak_schemes = yes``, and :func:`rehash_after_login` is Dovecot's post-login step
that replaces such a hash with ``{BLF-CRYPT}`` of the password the user has just logged in with
(docs/architecture.md, "Password scheme migration").

Hashing uses the ``bcrypt`` package (Debian: python3-bcrypt, bullseye to trixie), not the
stdlib ``crypt`` module, which Python 3.13 no longer has. The database is reached with PyMySQL
and a MySQL option file (``[client]``), or else as the calling system user over the local
socket (root: unix_socket authentication, as the deploy applies its SQL).
"""
import os
import pwd
import sys

from mailstore import maildir as md

DATABASE = "cacertusers"
SOCKET = "/run/mysqld/mysqld.sock"
SCHEME = "{BLF-CRYPT}"
BCRYPT_COST = 10
# bcrypt uses the first 72 bytes only: a longer password would be silently cut
MAX_PASSWORD_BYTES = 72
# dovecot-sql.conf.ext's default_pass_scheme: a hash without a {SCHEME} prefix is this one.
DEFAULT_SCHEME = "BLF-CRYPT"
# The schemes Dovecot 2.4 marks weak and refuses unless auth_allow_weak_schemes = yes
# (dovecot/core src/lib-auth/password-scheme.c and password-scheme-crypt.c: `.weak = TRUE`).
# {CRYPT} is refused too when its libc hash is DES (no "$") or MD5 ("$1$"): see is_weak().
WEAK_SCHEMES = frozenset(["MD5", "MD5-CRYPT", "SMD5", "HMAC-MD5", "PLAIN-MD4", "PLAIN-MD5",
                          "LDAP-MD5", "DES-CRYPT"])
# The userdb fields Dovecot's passdb hands to the post-login step (files/dovecot/*/): the
# password just verified, and the stored hash when it is not {BLF-CRYPT}. Both names hold
# "pass": Dovecot's debug log shows such fields as <hidden>.
PASSWORD_FIELD = "rehash_pass"
OLD_HASH_FIELD = "rehash_oldpass"
# files/mariadb/schema.sql.j2: replaces a hash only while the row still holds the old one.
REHASH_PROCEDURE = "rehash_password"


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


def connect(defaults_file=None, database=None, timeout=10, user=None):
    """A PyMySQL connection to the user database (autocommit off); `user` for the socket
    when the option file names none (PyMySQL's own default is $USER, which Dovecot's
    post-login environment sets to the mail login)."""
    import pymysql
    if defaults_file and not os.path.isfile(defaults_file):
        raise AccountError("%s: no such option file" % defaults_file)
    kwargs = {"read_default_file": defaults_file} if defaults_file else {"unix_socket": SOCKET}
    if user:
        kwargs["user"] = user
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
    """[{login, mailbox, active, scheme, weak, aliases: [{alias, send_as}]}] by login: the
    scheme of each password hash (:func:`hash_scheme`, :func:`is_weak`), never the hash."""
    users = _run(conn, [("SELECT login, mailbox, active, password FROM users ORDER BY login",
                         None)])
    aliases = _run(conn, [("SELECT alias, owner, send_as FROM aliases ORDER BY alias", None)])
    result = [{"login": login, "mailbox": mailbox, "active": bool(active),
               "scheme": hash_scheme(hashed), "weak": is_weak(hashed), "aliases": []}
              for login, mailbox, active, hashed in users]
    by_login = {account["login"]: account for account in result}
    for alias, owner, send_as in aliases:
        if owner in by_login:
            by_login[owner]["aliases"].append({"alias": alias, "send_as": bool(send_as)})
    return result


# --- password schemes and the re-hash at login ---------------------------------------------

def hash_scheme(hashed):
    """The scheme of a stored hash as Dovecot reads it: the {SCHEME} prefix in upper case
    without an encoding suffix (.hex, .b64), or DEFAULT_SCHEME when there is no prefix."""
    if hashed.startswith("{") and "}" in hashed:
        return hashed[1:hashed.index("}")].split(".", 1)[0].upper()
    return DEFAULT_SCHEME


def is_weak(hashed):
    """Whether Dovecot 2.4 refuses this hash unless auth_allow_weak_schemes = yes."""
    scheme = hash_scheme(hashed)
    if scheme == "CRYPT":
        body = hashed[hashed.index("}") + 1:]
        return len(body) > 1 and (not body.startswith("$") or body.startswith("$1$"))
    return scheme in WEAK_SCHEMES


def needs_rehash(hashed):
    """Whether a login should replace this hash: any scheme but {BLF-CRYPT}."""
    return hash_scheme(hashed) != DEFAULT_SCHEME


def replace_hash(conn, login, old_hash, new_hash):
    """Store `new_hash` for `login` only while the row still holds `old_hash` (a password
    changed meanwhile stays); True if the row was changed."""
    rows = _run(conn, [("CALL %s(%%s, %%s, %%s)" % REHASH_PROCEDURE,
                        (login, old_hash, new_hash)),
                       ("SELECT ROW_COUNT()", None)])
    return rows[0][0] == 1


def take_rehash_fields(environ):
    """(login, password, old hash) from a post-login environment, the two fields removed
    from it and from USERDB_KEYS: the mail process must never see them."""
    password = environ.pop(PASSWORD_FIELD.upper(), None)
    old_hash = environ.pop(OLD_HASH_FIELD.upper(), None)
    if "USERDB_KEYS" in environ:
        drop = (PASSWORD_FIELD.upper(), OLD_HASH_FIELD.upper())
        environ["USERDB_KEYS"] = " ".join(
            key for key in environ["USERDB_KEYS"].split() if key.upper() not in drop)
    return environ.get("USER"), password, old_hash


def rehash_after_login(environ, defaults_file=None):
    """Dovecot's post-login step: when the hash the user has just logged in with is not
    {BLF-CRYPT}, store a {BLF-CRYPT} hash of the same password. Takes the fields out of
    `environ` (take_rehash_fields); connects as the calling system user (unix_socket), or
    with `defaults_file`. Returns "rehashed", "kept" (the row changed meanwhile) or None
    (nothing to do); AccountError if the database refused."""
    login, password, old_hash = take_rehash_fields(environ)
    if not login or not password or not old_hash or not needs_rehash(old_hash):
        return None
    new_hash = password_hash(password)
    conn = connect(defaults_file, timeout=5, user=pwd.getpwuid(os.geteuid()).pw_name)
    try:
        return "rehashed" if replace_hash(conn, login, old_hash, new_hash) else "kept"
    finally:
        conn.close()


def post_login_main(argv=None, environ=None, execv=os.execv):
    """`mailstore-rehash-login NEXT...`, run by Dovecot's script-login after a login: re-hash
    (rehash_after_login), then exec NEXT (script-login's chain: every step execs the next).
    A failure is one line on stderr (Dovecot's error log), never the password, and never
    stops the login; a success is silent (that log has only an error level for it: `mailstore
    account list` shows the new scheme)."""
    argv = sys.argv[1:] if argv is None else argv
    environ = os.environ if environ is None else environ
    if not argv:
        sys.stderr.write("mailstore-rehash-login: run by Dovecot's script-login, which "
                         "passes the next step as arguments\n")
        return 2
    login = environ.get("USER", "?")
    try:
        rehash_after_login(environ, environ.get("MAILSTORE_DB_DEFAULTS_FILE"))
    except Exception as e:  # a failed re-hash must not lock the user out
        sys.stderr.write("mailstore-rehash-login: %s: hash not replaced: %s\n"
                         % (login, " ".join(str(e).split()) or type(e).__name__))
    sys.stderr.flush()
    execv(argv[0], argv)
    return 1  # only reached with a test's execv
