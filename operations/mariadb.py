"""MariaDB: local only; database cacertusers with users, aliases, the views Postfix and Dovecot
read, their SELECT-only accounts, the re-hash account of Dovecot's post-login step, and the
accounts/aliases of the inventory (lab).

SQL is uploaded as files (the accounts file holds passwords) and applied as root over the local
socket; the files only replace the recorded copies after the SQL ran without error, so a run
that failed half-way applies them again next time. Every statement is idempotent.
"""
import base64
import hashlib
import hmac

import bcrypt
from pyinfra import host
from pyinfra.api import FactBase, deploy
from pyinfra.operations import apt, server as shell, systemd

from operations.secrets import read_password
from operations import staging

STATE_DIR = "/var/lib/cacert-deploy/mariadb"
# The views each service account may read, and nothing else.
ACCOUNT_VIEWS = {
    # mailstore_mailboxes: read by `mailstore check maildir` with this account's .cnf
    "postfix": ["postfix_mailboxes", "postfix_aliases", "postfix_sender_logins",
                "mailstore_mailboxes"],
    "dovecot": ["dovecot_users"],
}
# Dovecot's post-login re-hash step: the system user it runs as, and its MariaDB account of
# the same name (unix_socket: no password), which may only call rehash_password.
REHASH_ACCOUNT = "dovecot-rehash"
BCRYPT_COST = 10

_BCRYPT_ALPHABET = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
    b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")


class RehashGrants(FactBase):
    """The re-hash account's grants, as SHOW GRANTS prints them: [] when the account is
    missing or no MariaDB answers (yet).

    MariaDB drops a routine's privileges with the routine: loading a dump made with
    `--routines` (a cut-over, a rebuild, a restore by hand) replaces rehash_password and so
    takes the re-hash account's grant away, while the deploy's SQL files are unchanged and
    would not be applied again.
    """

    def requires_command(self, *args, **kwargs):
        return "mariadb"

    @staticmethod
    def default():
        return []

    def command(self):
        return (f"mariadb --batch --skip-column-names -e \"SHOW GRANTS FOR "
                f"'{REHASH_ACCOUNT}'@'localhost'\" 2>/dev/null; true")

    def process(self, output):
        return [line for line in output if line.startswith("GRANT ")]


def may_rehash(grants, database):
    """Does one of these SHOW GRANTS lines let the account call `database`.rehash_password?

    Quotes are dropped before comparing: MariaDB's releases quote names differently."""
    wanted = f"GRANT EXECUTE ON PROCEDURE {database}.rehash_password TO ".lower()
    return any(line.translate(_NO_QUOTES).lower().startswith(wanted) for line in grants)


_NO_QUOTES = str.maketrans("", "", "`'\"")


def password_hash(login, password):
    """`{BLF-CRYPT}$2b$...` for Dovecot, computed here on the control machine.

    The salt is derived from the login and the password (HMAC) so that the same password
    gives the same hash on every run: the seed file, and so the deploy, stays unchanged
    until a password really changes.
    """
    digest = hmac.new(password.encode(), login.encode(), hashlib.sha256).digest()[:16]
    salt = base64.b64encode(digest).translate(_BCRYPT_ALPHABET)[:22]
    hashed = bcrypt.hashpw(password.encode(), b"$2b$%02d$" % BCRYPT_COST + salt)
    return "{BLF-CRYPT}" + hashed.decode()


def seed_rows(data):
    """The rows the inventory seeds: accounts with their hashes, and the send-as aliases."""
    accounts = [
        {"login": a["email"].lower(), "mailbox": a["user"],
         "password_hash": password_hash(a["email"].lower(),
                                        read_password(f"accounts/{a['email']}.password"))}
        for a in data["mail_accounts"]
    ]
    aliases = [a for a in data["mail_aliases"] if a["send_as"]]
    return accounts, aliases


def sql_files(data):
    """The three SQL files, in the order they are applied."""
    accounts, aliases = seed_rows(data)
    passwords = {name: read_password(f"mysql_{name}.password") for name in ACCOUNT_VIEWS}
    return [
        staging.ConfigFile(f"{STATE_DIR}/schema.sql",
                           staging.render("files/mariadb/schema.sql.j2", **data), mode="600"),
        staging.ConfigFile(f"{STATE_DIR}/accounts.sql",
                           staging.render("files/mariadb/accounts.sql.j2", **data,
                                          accounts=ACCOUNT_VIEWS, passwords=passwords,
                                          rehash_account=REHASH_ACCOUNT),
                           mode="600"),
        staging.ConfigFile(f"{STATE_DIR}/seed.sql",
                           staging.render("files/mariadb/seed.sql.j2", **{
                               **data, "accounts": accounts, "aliases": aliases}),
                           mode="600"),
    ]


@deploy("MariaDB")
def server():
    data = staging.data_context(host.data)
    apt.packages(name="MariaDB server", packages=["mariadb-server", "mariadb-client"])

    settings = staging.files(
        name="MariaDB settings (local only)",
        config_files=[staging.ConfigFile(
            "/etc/mysql/mariadb.conf.d/60-cacert.cnf",
            staging.render("files/mariadb/60-cacert.cnf.j2", **data))],
        stage=f"{staging.STAGING_ROOT}/mariadb",
        # Unknown or malformed options make mariadbd refuse: check them without starting it.
        check="mariadbd --defaults-file={stage}/60-cacert.cnf --user=mysql --help --verbose"
              " >/dev/null",
    )
    # bind-address is read at start only: a reload would not apply it.
    systemd.service(name="Restart MariaDB", service="mariadb", running=True, enabled=True,
                    restarted=True, _if=settings.did_change)
    systemd.service(name="MariaDB running", service="mariadb", running=True, enabled=True)

    staging.files(
        name="cacertusers: schema, views, service accounts, seeded accounts",
        config_files=sql_files(data),
        stage=f"{staging.STAGING_ROOT}/mariadb-sql",
        # Applying the SQL is the validation: only SQL that ran is recorded as applied.
        check="for f in schema accounts seed; do mariadb --batch < {stage}/$f.sql || exit 1; done",
    )
    # Read before this run's operations: on a new server (no MariaDB yet) it finds no grant,
    # and the accounts SQL, applied above already, runs once more. Every statement in it is
    # idempotent, and once the grant is there the next run adds nothing.
    if not may_rehash(host.get_fact(RehashGrants), data["mysql_database"]):
        shell.shell(
            name="cacertusers: the re-hash account's EXECUTE grant, lost with a replaced"
                 " rehash_password (e.g. a database dump loaded)",
            commands=[f"mariadb --batch < {STATE_DIR}/accounts.sql"],
        )
