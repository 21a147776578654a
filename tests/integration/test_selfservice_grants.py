"""The self-service API's MariaDB account (files/selfservice_api/grants.sql.j2) against a real
MariaDB: e-mail admins create accounts and send-as aliases through the self-service system,
users reset their passwords there; the account may do that and nothing else.

The grants are rendered and applied as the deploy does (as root). The account logs in with
unix_socket as the system user of its name; here it gets a password instead, so that the test
can log in as it: authentication is not what is tested, the grants are.
"""
import os

import jinja2
import pymysql
import pytest

from tests.integration import mariadb_server

GRANTS = os.path.join(mariadb_server.FILES, "selfservice_api", "grants.sql.j2")
API = "cacert-selfservice-api"


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    with mariadb_server.running(str(tmp_path_factory.mktemp("mariadb"))) as (sock, root):
        with open(GRANTS) as f:
            sql = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(
                f.read()).render(database="cacertusers")
        mariadb_server.execute_file(root, sql)
        mariadb_server.execute_file(root, sql)      # the deploy may apply it again
        with root.cursor() as cur:
            cur.execute("ALTER USER '%s'@'localhost' IDENTIFIED BY 'api-pw'" % API)
            cur.execute("CREATE TABLE cacertusers.other (x INT)")
        conn = pymysql.connect(unix_socket=sock, user=API, password="api-pw",
                               database="cacertusers", autocommit=True)
        yield conn, root
        conn.close()


def _denied(conn, statement):
    with pytest.raises(pymysql.MySQLError) as error:
        with conn.cursor() as cur:
            cur.execute(statement)
    assert "denied" in str(error.value), error.value


def test_the_api_creates_an_account_and_a_send_as_alias(api):
    conn, root = api
    with conn.cursor() as cur:
        cur.execute("INSERT INTO users (login, mailbox, password) VALUES "
                    "('erin@cacert.test', 'erin', '{BLF-CRYPT}$2b$10$x')")
        cur.execute("INSERT INTO aliases (alias, owner, send_as) VALUES "
                    "('board@cacert.test', 'erin@cacert.test', 1)")
        cur.execute("UPDATE users SET password = '{BLF-CRYPT}$2b$10$y' "
                    "WHERE login = 'erin@cacert.test'")
        cur.execute("UPDATE users SET active = 0 WHERE login = 'erin@cacert.test'")
        cur.execute("DELETE FROM aliases WHERE alias = 'board@cacert.test'")
    with root.cursor() as cur:
        cur.execute("SELECT login, mailbox, password, active FROM cacertusers.users")
        assert cur.fetchall() == (("erin@cacert.test", "erin", "{BLF-CRYPT}$2b$10$y", 0),)


@pytest.mark.parametrize("statement", [
    "DELETE FROM users",
    "DROP TABLE aliases",
    "ALTER TABLE users ADD COLUMN x INT",
    "CREATE TABLE mine (x INT)",
    "SELECT * FROM other",
    "INSERT INTO other VALUES (1)",
    "SELECT * FROM mysql.user",
    "CREATE OR REPLACE VIEW dovecot_users AS SELECT login, mailbox, password FROM users",
    "GRANT SELECT ON cacertusers.users TO 'postfix'@'localhost'",
])
def test_the_api_may_do_nothing_else(api, statement):
    _denied(api[0], statement)
