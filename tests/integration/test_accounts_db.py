"""`mailstore account` against a real MariaDB with the project's schema: the rows it writes are
what Dovecot reads (the hash verifies with `doveadm pw -t`) and what Postfix's views show; it
works as root and as the self-service API's account with the grants the deploy renders."""
import json
import os
import shutil
import subprocess

import jinja2
import pytest
from click.testing import CliRunner

from mailstore.cli import main
from tests.integration import mariadb_server

GRANTS = os.path.join(mariadb_server.FILES, "selfservice_api", "grants.sql.j2")


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    pytest.importorskip("bcrypt")
    base = tmp_path_factory.mktemp("mariadb")
    with mariadb_server.running(str(base)) as (sock, root):
        with open(GRANTS) as f:
            mariadb_server.execute_file(root, jinja2.Template(f.read()).render(
                database="cacertusers"))
        with root.cursor() as cur:
            # unix_socket in the deploy; a password here so that the test can be the API
            cur.execute("ALTER USER 'cacert-selfservice-api'@'localhost' IDENTIFIED BY 'api'")
        files = {}
        for name, user, password in (("root", "root", ""), ("api", "cacert-selfservice-api",
                                                            "api")):
            path = base / ("%s.cnf" % name)
            path.write_text("[client]\nuser = %s\n%ssocket = %s\ndatabase = cacertusers\n" % (
                user, "password = %s\n" % password if password else "", sock))
            files[name] = str(path)
        yield {"root": root, "cnf": files}


def account(database, who, *args, password=None):
    result = CliRunner().invoke(main, ["account"] + list(args) + [
        "--db-defaults-file", database["cnf"][who]], input=password)
    return result.exit_code, result.output


def rows(database, sql):
    with database["root"].cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


def verifies(hashed, password):
    return subprocess.run(["doveadm", "pw", "-t", hashed, "-p", password],
                          capture_output=True).returncode == 0


@pytest.mark.parametrize("who", ["root", "api"])
def test_add_passwd_alias_list(database, who):
    if shutil.which("doveadm") is None:
        pytest.skip("doveadm is not installed (dovecot-core)")
    login = "erin-%s@cacert.test" % who
    assert account(database, who, "add", login, password="first pw\n") == (
        0, "mailstore account: added %s (mailbox erin-%s)\n" % (login, who))
    (hashed,) = rows(database, "SELECT password FROM cacertusers.dovecot_users "
                               "WHERE login = '%s'" % login)[0]
    assert hashed.startswith("{BLF-CRYPT}$2b$10$") and verifies(hashed, "first pw")

    assert account(database, who, "passwd", login, password="second pw\n")[0] == 0
    (hashed,) = rows(database, "SELECT password FROM cacertusers.users "
                               "WHERE login = '%s'" % login)[0]
    assert verifies(hashed, "second pw") and not verifies(hashed, "first pw")

    alias = "board-%s@cacert.test" % who
    assert account(database, who, "alias", alias, login, "--send-as")[0] == 0
    assert rows(database, "SELECT address, owner FROM cacertusers.postfix_sender_logins "
                          "WHERE owner = '%s' ORDER BY address" % login) == (
        (alias, login), (login, login))

    code, out = account(database, who, "list", "--json")
    assert code == 0
    listed = {a["login"]: a for a in json.loads(out)}[login]
    assert listed == {"login": login, "mailbox": "erin-%s" % who, "active": True,
                      "scheme": "BLF-CRYPT", "weak": False,
                      "aliases": [{"alias": alias, "send_as": True}]}
    assert "password" not in out and "$2b$" not in out


def test_list_names_schemes_and_weak_hashes_never_the_hash(database):
    with database["root"].cursor() as cur:
        cur.executemany("INSERT INTO cacertusers.users (login, mailbox, password) "
                        "VALUES (%s, %s, %s)", [
                            ("old-md5@cacert.test", "old-md5", "{MD5-CRYPT}$1$salt$hash0"),
                            ("old-sha@cacert.test", "old-sha", "{SHA512-CRYPT}$6$salt$hash1")])
    code, out = account(database, "root", "list", "--weak", "--json")
    assert code == 0
    assert [(a["login"], a["scheme"], a["weak"]) for a in json.loads(out)] == [
        ("old-md5@cacert.test", "MD5-CRYPT", True)]
    code, out = account(database, "root", "list")
    assert code == 0 and "$1$" not in out and "$6$" not in out
    lines = {line.split("\t")[0]: line for line in out.splitlines()}
    assert lines["old-md5@cacert.test"] == "old-md5@cacert.test\told-md5\tactive\tMD5-CRYPT (weak)"
    assert lines["old-sha@cacert.test"] == "old-sha@cacert.test\told-sha\tactive\tSHA512-CRYPT"


def test_refusals_are_one_line(database):
    assert account(database, "root", "add", "frank@cacert.test", password="pw\n")[0] == 0
    for args in (("add", "frank@cacert.test"), ("add", "other@cacert.test", "--mailbox",
                                                 "frank"),
                 ("passwd", "nobody@cacert.test"), ("alias", "x@cacert.test",
                                                    "nobody@cacert.test")):
        code, out = account(database, "root", *args, password="pw\n")
        assert code == 1 and out.count("\n") == 1 and out.startswith(
            "mailstore account: error: "), out
    assert rows(database, "SELECT COUNT(*) FROM cacertusers.users "
                          "WHERE login LIKE 'frank%' OR login LIKE 'other%'")[0][0] == 1
