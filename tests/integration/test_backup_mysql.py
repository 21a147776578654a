"""`mailstore backup run --mysql-dump`: a consistent dump of a real MariaDB in the snapshot.

Uses the throwaway mariadbd of test_check_maildir_db (its own socket, the project's schema,
three users), dumps `cacertusers` through the real CLI with a client options file, restores
the dump with `restore --extras` and loads it into a fresh database: same rows.
"""
import os
import subprocess
import sys

import pymysql

from test_check_maildir_db import mariadb  # noqa: F401  (the fixture)


def _rows(sock, database):
    conn = pymysql.connect(unix_socket=sock, user="root", database=database)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT login, mailbox, active FROM users ORDER BY login")
            return cur.fetchall()
    finally:
        conn.close()


def test_backup_run_includes_a_loadable_database_dump(mariadb, tmp_path):  # noqa: F811
    sock = mariadb["socket"]
    options = tmp_path / "my.cnf"
    options.write_text("[client]\nsocket={}\nuser=root\n".format(sock))
    os.chmod(options, 0o600)
    (tmp_path / "src/alice/Maildir/cur").mkdir(parents=True)
    cli = [sys.executable, "-m", "mailstore", "backup"]
    subprocess.run(cli + ["init", str(tmp_path / "repo")], check=True)
    run = subprocess.run(cli + ["run", str(tmp_path / "repo"), str(tmp_path / "src"),
                                "--mysql-dump", "cacertusers", "--mysql-defaults-file",
                                str(options)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    assert run.returncode == 0, run.stderr
    restore = subprocess.run(cli + ["restore", str(tmp_path / "repo"), "latest",
                                    str(tmp_path / "rebuild"), "--extras"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert restore.returncode == 0, restore.stderr
    dump = (tmp_path / "rebuild/mysql/cacertusers.sql").read_text()
    assert "CREATE TABLE `users`" in dump
    conn = pymysql.connect(unix_socket=sock, user="root", autocommit=True)
    with conn.cursor() as cur:
        cur.execute("CREATE DATABASE restored")
    conn.close()
    load = subprocess.run(["mariadb", "--defaults-extra-file=" + str(options), "restored"],
                          input=dump, text=True, stderr=subprocess.PIPE)
    assert load.returncode == 0, load.stderr
    assert _rows(sock, "restored") == _rows(sock, "cacertusers")
    assert len(_rows(sock, "restored")) == 3

    # a dump that fails (no such database) fails the run and records no snapshot
    bad = subprocess.run(cli + ["run", str(tmp_path / "repo"), str(tmp_path / "src"),
                                "--mysql-dump", "nosuchdb", "--mysql-defaults-file",
                                str(options)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    assert bad.returncode == 1 and "database dump nosuchdb failed" in bad.stderr
    listed = subprocess.run(cli + ["list", str(tmp_path / "repo"), "--json"],
                            stdout=subprocess.PIPE, text=True, check=True).stdout
    assert listed.count('"id"') == 1
