"""Re-hash at login with a real Dovecot 2.3 (this machine's Debian package) and a real MariaDB:
users whose rows hold {MD5-CRYPT} or {SHA512-CRYPT} hashes made by `doveadm pw` log in over
IMAP on loopback, and afterwards their rows hold {BLF-CRYPT} hashes of the same password.

Dovecot runs a minimal configuration of this test's own (no TLS, loopback, paths in a temporary
directory) that includes the deploy's rendered auth part and SQL file (the real templates of
files/dovecot/2.3/): the passdb/userdb, the post-login services and the queries are the
deploy's. Replaced are only what differs on this machine: the MariaDB socket, the SQL file's
path, the MariaDB socket for the post-login step too (an option file),
the post-login step's system user (`nobody`, with a unix_socket account of that name
granted as files/mariadb/accounts.sql.j2 grants the deploy's) and the program (this checkout's
mailstore-rehash-login, run by Debian's python3 with python3-pymysql and python3-bcrypt: the
test's own venv may lie where nobody may not enter). The schema with its rehash_password
procedure is files/mariadb/schema.sql.j2.
"""
import imaplib
import os
import shutil
import socket
import subprocess
import time

import jinja2
import pymysql
import pytest

from operations import dovecot as dovecot_ops, staging
from operations.defaults import defaults
from tests.harness.nobody import NOBODY, public_tmpdir
from tests.integration import mariadb_server

SYSTEM_PYTHON = "/usr/bin/python3"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
USERS = {  # login -> (scheme made by doveadm pw, password)
    "md5@cacert.test": ("MD5-CRYPT", "md5 pass wörd"),
    "sha@cacert.test": ("SHA512-CRYPT", "sha-pass-123"),
    "blf@cacert.test": ("BLF-CRYPT", "blf-pass-456"),
}

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="Dovecot's master must start as root"),
    pytest.mark.skipif(not (shutil.which("dovecot") and os.path.exists("/usr/lib/dovecot/imap")
                            and os.path.exists("/usr/lib/dovecot/modules/libdriver_mysql.so")),
                       reason="dovecot-core, dovecot-imapd and dovecot-mysql are needed "
                              "(tests/packages lists them)"),
    pytest.mark.skipif(subprocess.run([SYSTEM_PYTHON, "-c", "import pymysql, bcrypt"],
                                      capture_output=True).returncode != 0,
                       reason="python3-pymysql and python3-bcrypt are needed (tests/packages)"),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def doveadm_pw(*args):
    return subprocess.run(["doveadm", "pw"] + list(args), capture_output=True, text=True)


def rendered_parts(base, sock):
    """(auth part, SQL file) from the deploy's 2.3 templates, adapted as the docstring says."""
    data = {**defaults(), "debian_release": "bookworm", "mail_root": os.path.join(base, "mail")}
    folder = dovecot_ops.template_dir("bookworm")
    program = os.path.join(base, "mailstore-rehash-login")
    # The option file names the socket only: the step connects as its system user.
    options = os.path.join(base, "rehash.cnf")
    with open(options, "w") as f:
        f.write("[client]\nsocket = %s\n" % sock)
    with open(program, "w") as f:
        f.write("#!/bin/sh\nexport MAILSTORE_DB_DEFAULTS_FILE=%s PYTHONPATH=%s\n"
                "exec %s -c 'import sys; from mailstore.accounts import post_login_main; "
                "sys.exit(post_login_main())' \"$@\"\n" % (options, REPO, SYSTEM_PYTHON))
    os.chmod(program, 0o755)
    auth = staging.render(f"{folder}/dovecot-auth.conf.ext.j2", **data, rehash_user="nobody",
                          rehash_program=program)
    sql = staging.render(f"{folder}/dovecot-sql.conf.ext.j2", **data, password="dovecot-pw")
    assert "/etc/dovecot/dovecot-sql.conf.ext" in auth and "/run/mysqld/mysqld.sock" in sql
    auth = auth.replace("/etc/dovecot/dovecot-sql.conf.ext",
                        os.path.join(base, "dovecot-sql.conf.ext"))
    return auth, sql.replace("/run/mysqld/mysqld.sock", sock)


CONF = """\
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
default_internal_user = dovecot
default_login_user = dovenull
mail_location = maildir:~/Maildir
mail_uid = nobody
mail_gid = nogroup
first_valid_uid = {nobody}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
!include dovecot-auth.conf.ext
"""


@pytest.fixture(scope="module")
def server():
    base = public_tmpdir("rehash-dovecot-")
    try:
        with mariadb_server.running(base) as (sock, root):
            os.chmod(os.path.dirname(sock), 0o755)
            with open(os.path.join(mariadb_server.FILES, "mariadb", "accounts.sql.j2")) as f:
                mariadb_server.execute_file(root, jinja2.Template(f.read()).render(
                    accounts={"dovecot": ["dovecot_users"]},
                    passwords={"dovecot": "dovecot-pw"},
                    rehash_account="nobody", mysql_database="cacertusers"))
            hashes = {}
            with root.cursor() as cur:
                for login, (scheme, password) in USERS.items():
                    made = doveadm_pw("-s", scheme, "-p", password).stdout.strip()
                    assert made.startswith("{%s}" % scheme)
                    hashes[login] = made
                    cur.execute("INSERT INTO cacertusers.users (login, mailbox, password) "
                                "VALUES (%s, %s, %s)", (login, login.split("@")[0], made))
            os.makedirs(os.path.join(base, "mail"))
            os.makedirs(os.path.join(base, "state"))
            os.chown(os.path.join(base, "mail"), NOBODY, NOBODY)
            auth, sql = rendered_parts(base, sock)
            for name, text in (("dovecot-auth.conf.ext", auth), ("dovecot-sql.conf.ext", sql)):
                with open(os.path.join(base, name), "w") as f:
                    f.write(text)
            port = free_port()
            conf = os.path.join(base, "dovecot.conf")
            with open(conf, "w") as f:
                f.write(CONF.format(base=base, port=port, nobody=NOBODY))
            proc = subprocess.Popen(["dovecot", "-F", "-c", conf], stderr=subprocess.PIPE)
            try:
                deadline = time.monotonic() + 30
                while True:
                    try:
                        socket.create_connection(("127.0.0.1", port), timeout=1).close()
                        break
                    except OSError:
                        assert proc.poll() is None, proc.stderr.read().decode()
                        assert time.monotonic() < deadline, "Dovecot did not listen"
                        time.sleep(0.2)
                yield {"port": port, "root": root, "hashes": hashes,
                       "log": os.path.join(base, "dovecot.log")}
            finally:
                subprocess.run(["doveadm", "-c", conf, "stop"], capture_output=True)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def imap_login(server, login, password):
    """True if Dovecot lets `login` in and starts its mail process (a SELECT works)."""
    with imaplib.IMAP4("127.0.0.1", server["port"]) as imap:
        try:   # AUTHENTICATE PLAIN: UTF-8 passwords as mail clients send them
            imap.authenticate("PLAIN", lambda _: b"\0%s\0%s" % (login.encode(),
                                                                password.encode()))
        except imaplib.IMAP4.error:
            return False
        assert imap.select("INBOX")[0] == "OK", open(server["log"]).read()[-3000:]
    return True


def stored(server, login):
    with server["root"].cursor() as cur:
        cur.execute("SELECT password FROM cacertusers.users WHERE login = %s", (login,))
        return cur.fetchone()[0]


def verifies(hashed, password):
    result = doveadm_pw("-t", hashed, "-p", password)
    return result.returncode == 0 and "(verified)" in result.stdout


@pytest.mark.parametrize("login", ["md5@cacert.test", "sha@cacert.test"])
def test_an_older_hash_is_replaced_at_login_and_the_password_stays(server, login):
    password = USERS[login][1]
    assert not imap_login(server, login, "wrong " + password)
    assert stored(server, login) == server["hashes"][login]      # a failed login changes nothing

    assert imap_login(server, login, password)
    new = stored(server, login)
    assert new.startswith("{BLF-CRYPT}$2b$10$"), open(server["log"]).read()[-3000:]
    assert verifies(new, password)
    assert not verifies(new, "wrong " + password)

    assert imap_login(server, login, password)                   # the old password still works
    assert stored(server, login) == new                          # and {BLF-CRYPT} stays as is
    assert not imap_login(server, login, "wrong " + password)
    with open(server["log"]) as f:
        log = f.read()
    assert "mailstore-rehash-login" not in log                    # no failure to report
    for _scheme, secret in USERS.values():
        assert secret not in log


def test_a_blf_crypt_hash_is_left_alone(server):
    login, password = "blf@cacert.test", USERS["blf@cacert.test"][1]
    assert imap_login(server, login, password)
    assert stored(server, login) == server["hashes"][login]


def test_the_rehash_account_can_only_call_the_procedure(server):
    """What the post-login step's MariaDB account (as its system user) may do."""
    code = ("import pymysql, sys\n"
            "c = pymysql.connect(unix_socket=sys.argv[1], user='nobody', database='cacertusers')\n"
            "try:\n"
            "    c.cursor().execute('SELECT password FROM users')\n"
            "    print('read')\n"
            "except pymysql.MySQLError as e:\n"
            "    print('refused', e.args[0])\n")
    sock = server["root"].unix_socket
    result = subprocess.run(["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY,
                             "--clear-groups", SYSTEM_PYTHON, "-c", code, sock],
                            capture_output=True, text=True, env={"PYTHONPATH": REPO})
    assert result.stdout.split()[0] == "refused", result.stderr
