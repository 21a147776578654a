"""`mailstore check maildir --db-defaults-file`: users vs. Maildirs against a real MariaDB.

The test starts its own mariadbd with the project's schema (tests/integration/mariadb_server.py)
and gives the check an account that may read only the `mailbox` column.
"""
import os
import shutil

import pytest

from mailstore.checks import maildir as mdcheck
from mailstore.checks import plugin
from operations import mariadb as mariadb_deploy, monitoring
from tests.integration import mariadb_server


@pytest.fixture(scope="module")
def mariadb(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("mariadb"))
    with mariadb_server.running(base) as (sock, root):
        with root.cursor() as cur:
            cur.execute("INSERT INTO cacertusers.users (login, mailbox, password, active) "
                        "VALUES ('alice@cacert.test', 'alice', 'x', 1), "
                        "('carol@cacert.test', 'carol', 'x', 1), "
                        "('dave@cacert.test', 'dave', 'x', 0)")
            cur.execute("CREATE USER 'mailcheck'@'localhost' IDENTIFIED BY 'check-pw'")
            # the check needs to read two columns and nothing else
            cur.execute("GRANT SELECT (mailbox, active) ON cacertusers.users "
                        "TO 'mailcheck'@'localhost'")
            # what the deploy's check reads, through the views its account may read
            for view in mariadb_deploy.ACCOUNT_VIEWS["postfix"]:
                cur.execute("GRANT SELECT ON cacertusers.`%s` TO 'postfix'@'localhost' "
                            "IDENTIFIED BY 'postfix-pw'" % view)
        yield {"socket": sock, "base": base}


def defaults_file(mariadb, tmp_path, password="check-pw", user="mailcheck"):
    path = tmp_path / "check-my.cnf"
    path.write_text("[client]\nuser = %s\npassword = %s\nsocket = %s\n"
                    "database = cacertusers\n" % (user, password, mariadb["socket"]))
    os.chmod(str(path), 0o600)
    return str(path)


@pytest.fixture
def store(tmp_path):
    root = tmp_path / "mail"
    for user in ("alice", "bob", "dave"):
        for sub in ("cur", "new", "tmp"):
            os.makedirs(str(root / user / "Maildir" / sub))
    return str(root)


def test_orphans_and_missing_from_the_real_database(mariadb, store, tmp_path):
    outcome = plugin.run(mdcheck.make_check(store, db_defaults_file=defaults_file(
        mariadb, tmp_path), cache_file=str(tmp_path / "cache.json")))
    assert outcome.exitcode == 1, outcome.text
    # bob has a Maildir but no database row; carol has a row but no Maildir (counted, no
    # warning: no mail yet); dave is inactive but known (his mail is kept)
    assert "orphans=1;" in outcome.text and "missing=1;" in outcome.text
    assert "(e.g. bob)" in outcome.text and "(e.g. carol)" not in outcome.text


def test_all_known_is_ok(mariadb, store, tmp_path):
    os.makedirs(os.path.join(store, "carol", "Maildir", "cur"))
    shutil.rmtree(os.path.join(store, "bob"))
    outcome = plugin.run(mdcheck.make_check(store, db_defaults_file=defaults_file(
        mariadb, tmp_path), cache_file=str(tmp_path / "cache.json")))
    assert outcome.exitcode == 0, outcome.text
    assert "orphans=0;" in outcome.text and "missing=0;" in outcome.text


def test_wrong_password_is_unknown_with_the_server_message(mariadb, store, tmp_path):
    outcome = plugin.run(mdcheck.make_check(store, db_defaults_file=defaults_file(
        mariadb, tmp_path, password="wrong"), cache_file=str(tmp_path / "cache.json")))
    assert outcome.exitcode == 3
    assert "user database" in outcome.text and "Access denied" in outcome.text


def test_a_query_beyond_the_grant_is_unknown(mariadb, store, tmp_path):
    outcome = plugin.run(mdcheck.make_check(
        store, db_defaults_file=defaults_file(mariadb, tmp_path),
        db_query="SELECT password FROM users", cache_file=str(tmp_path / "cache.json")))
    assert outcome.exitcode == 3 and "query failed" in outcome.text


def test_the_command_line_names_orphans_and_missing_users(mariadb, store, tmp_path):
    """`mailstore check maildir --db-defaults-file`: the status line and its thresholds."""
    from click.testing import CliRunner
    from mailstore.cli import main
    shutil.rmtree(os.path.join(store, "dave"))

    def check(*opts):
        result = CliRunner().invoke(main, [
            "check", "maildir", store, "--cache", str(tmp_path / "cache.json"),
            "--db-defaults-file", defaults_file(mariadb, tmp_path)] + list(opts))
        return result.exit_code, result.output.split("\n", 1)[0]

    code, line = check()
    assert code == 1, line
    # bob: a Maildir without a row; carol (active): a row without one; dave (inactive): mail
    # gone, nothing to deliver to, not missing
    assert "orphans=1;" in line and "missing=1;" in line
    assert "1 Maildir(s) without a database user (e.g. bob)" in line
    assert check("--missing-critical", "0")[0] == 2


def _deploys_check(mariadb, store, tmp_path):
    """The check as the deploy runs it: its query, its (postfix's read-only) account."""
    return plugin.run(mdcheck.make_check(
        store, db_defaults_file=defaults_file(mariadb, tmp_path, password="postfix-pw",
                                              user="postfix"),
        db_query=monitoring.MAILDIR_DB_QUERY, cache_file=str(tmp_path / "cache.json")))


def test_a_new_user_without_mail_yet_is_not_a_warning(mariadb, store, tmp_path):
    shutil.rmtree(os.path.join(store, "bob"))
    # carol: created, no mail delivered yet, so no Maildir (Dovecot makes it on delivery)
    for outcome in (_deploys_check(mariadb, store, tmp_path), plugin.run(mdcheck.make_check(
            store, db_defaults_file=defaults_file(mariadb, tmp_path),
            cache_file=str(tmp_path / "cache.json")))):
        assert outcome.exitcode == 0, outcome.text
        assert "missing=1;" in outcome.text and "orphans=0;" in outcome.text


def test_a_deactivated_user_is_no_orphan_with_the_deploys_query(mariadb, store, tmp_path):
    shutil.rmtree(os.path.join(store, "bob"))
    outcome = _deploys_check(mariadb, store, tmp_path)
    # dave is inactive: his Maildir is kept, it is no orphan
    assert "orphans=0;" in outcome.text, outcome.text
    assert outcome.exitcode == 0, outcome.text
