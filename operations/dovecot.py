"""Dovecot: IMAP 143/993, POP3 110/995, ManageSieve 4190, LMTP for Postfix with sieve filtering,
SQL users from cacertusers, mail in <mail_root>/<user>/Maildir owned by the vmail user.

Templates are per Dovecot major version, whose configuration syntax differs:
files/dovecot/2.3/ serves bullseye and bookworm, files/dovecot/2.4/ trixie. The set is
validated with `doveconf -c STAGED -n` before it is used.

Older password hashes ({MD5-CRYPT}, {SHA512-CRYPT}, ...) are replaced by {BLF-CRYPT} at each
user's next IMAP/POP3/ManageSieve login: the passdb hands the verified password to a
post-login step (`mailstore-rehash-login`, from the mailstore install) that runs as its own
system user, REHASH_ACCOUNT, whose MariaDB account may only call rehash_password
(operations/mariadb.py). Dovecot 2.4 verifies weak hashes only while the inventory's
dovecot_allow_weak_schemes is True.
"""
from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.facts.server import Users
from pyinfra.operations import apt, files, server as server_ops, systemd

from operations.mailstore import VENV
from operations.mariadb import REHASH_ACCOUNT
from operations.secrets import InventoryError, read_password
from operations import staging, volume_owner

# Dovecot major version of each Debian release: the folder of templates it gets.
DOVECOT_VERSION = {"bullseye": "2.3", "bookworm": "2.3", "trixie": "2.4"}
# Dovecot's script-login runs it after each login (files/dovecot/*/dovecot-auth.conf.ext.j2).
REHASH_PROGRAM = f"{VENV}/bin/mailstore-rehash-login"
PACKAGES = ["dovecot-core", "dovecot-imapd", "dovecot-pop3d", "dovecot-lmtpd", "dovecot-mysql",
            "dovecot-sieve", "dovecot-managesieved"]


def template_dir(release):
    """files/dovecot/<version>/ for `release`; a clear error where none exists yet."""
    if release not in DOVECOT_VERSION:
        raise InventoryError(f"debian_release={release}: no Dovecot templates for it yet "
                             f"(have: {', '.join(sorted(DOVECOT_VERSION))})")
    return f"files/dovecot/{DOVECOT_VERSION[release]}"


def config_files(data, mysql_password):
    """dovecot.conf, its auth part and its SQL file, rendered for `data`."""
    folder = template_dir(data["debian_release"])
    return [
        staging.ConfigFile("/etc/dovecot/dovecot.conf",
                           staging.render(f"{folder}/dovecot.conf.j2", **data)),
        staging.ConfigFile("/etc/dovecot/dovecot-auth.conf.ext",
                           staging.render(f"{folder}/dovecot-auth.conf.ext.j2", **data,
                                          rehash_user=REHASH_ACCOUNT,
                                          rehash_program=REHASH_PROGRAM)),
        # The auth process reads it as root; it holds the dovecot account's password.
        staging.ConfigFile("/etc/dovecot/dovecot-sql.conf.ext",
                           staging.render(f"{folder}/dovecot-sql.conf.ext.j2", **data,
                                          password=mysql_password),
                           mode="640", group="dovecot"),
    ]


@deploy("Dovecot")
def server():
    data = staging.data_context(host.data)
    if data["debian_release"] not in DOVECOT_VERSION:
        # Not an error (yet): the rest of the deploy must keep working on trixie while its
        # Dovecot 2.4 templates are written. The run says loudly that the mail path is partial.
        logger.warning(f"{host.name}: Dovecot NOT deployed: no templates for Dovecot on "
                       f"{data['debian_release']} yet (files/dovecot/<version>/)")
        return
    apt.packages(name="Dovecot with IMAP, POP3, LMTP, sieve, MariaDB", packages=PACKAGES)

    server_ops.group(name="vmail group", group=data["vmail_user"], gid=data["vmail_uid"],
                     system=True)
    # vmail's home is set only when the user is made, never changed after (moving the
    # mail changes mail_root): `usermod -d` refuses while any process runs as vmail - a
    # Dovecot mail process, the maildir check (sudo -u vmail) - and nothing reads it:
    # Dovecot takes each user's home from SQL, the check its paths from its arguments.
    # Only the Users fact decides, and no earlier operation of the run creates vmail.
    made = data["vmail_user"] in host.get_fact(Users)
    server_ops.user(name="vmail user (owns every Maildir)", user=data["vmail_user"],
                    uid=data["vmail_uid"], group=data["vmail_user"],
                    home=None if made else data["mail_root"], ensure_home=False,
                    shell="/usr/sbin/nologin", system=True, create_home=False)
    # Runs the post-login re-hash step, and nothing else (MariaDB: unix_socket account).
    server_ops.user(name="Re-hash user (Dovecot's post-login step)", user=REHASH_ACCOUNT,
                    system=True, shell="/usr/sbin/nologin", home="/nonexistent",
                    ensure_home=False, create_home=False)
    files.directory(name="Mail root", path=data["mail_root"], user=data["vmail_user"],
                    group=data["vmail_user"], mode="750")

    config = staging.files(
        name="Dovecot configuration (checked before it is used)",
        config_files=config_files(data, read_password("mysql_dovecot.password")),
        stage=f"{staging.STAGING_ROOT}/dovecot",
        check="doveconf -c {stage}/dovecot.conf -n >/dev/null",
    )
    # reload-or-restart, not a reload: the mail move (operations/migration.py) stops Dovecot
    # for its cut-over and relies on this step to start it on the new mail_root; pyinfra's
    # service facts were read before that, and `systemctl reload` fails on a stopped unit.
    if not volume_owner.may_write():
        # A successor before its cut-over: configured, enabled, not started (its start would
        # be refused anyway: the volume's owner marker names the container it replaces).
        logger.warning(f"{host.name}: Dovecot NOT started: the data volume belongs to "
                       f"{data['successor_of']} until the cut-over")
        systemd.service(name="Dovecot stopped until the cut-over", service="dovecot",
                        running=False, enabled=True)
        return
    server_ops.shell(name="Reload Dovecot", commands=["systemctl reload-or-restart dovecot"],
                     _if=config.did_change)
    systemd.service(name="Dovecot running", service="dovecot", running=True, enabled=True)
