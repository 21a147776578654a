"""A private mariadbd for integration tests: Debian's package on a Unix socket in a temp dir
(no TCP port, no systemd), with the project's own schema (files/mariadb/schema.sql.j2) loaded.
"""
import contextlib
import os
import shutil
import subprocess
import time

import pymysql
import pytest

FILES = os.path.join(os.path.dirname(__file__), "..", "..", "files")
SCHEMA = os.path.join(FILES, "mariadb", "schema.sql.j2")


def statements(text):
    """The statements of an SQL file; comments go first: they may hold a ";" themselves."""
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in text.split(";") if s.strip()]


def execute_file(conn, text):
    with conn.cursor() as cur:
        for statement in statements(text):
            cur.execute(statement)


@contextlib.contextmanager
def running(base):
    """mariadbd in `base` with the schema loaded; yields (socket path, root connection)."""
    if shutil.which("mariadbd") is None or shutil.which("mariadb-install-db") is None:
        # under CI a failure (tests/conftest.py); tests/setup installs it
        pytest.skip("mariadb-server is not installed (tests/packages lists it)")
    data, sock = os.path.join(base, "data"), os.path.join(base, "mysqld.sock")
    subprocess.run(["mariadb-install-db", "--no-defaults", "--datadir=" + data, "--user=root",
                    "--skip-test-db", "--auth-root-authentication-method=socket"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = open(os.path.join(base, "mariadbd.log"), "wb")
    proc = subprocess.Popen(["mariadbd", "--no-defaults", "--datadir=" + data,
                             "--socket=" + sock, "--skip-networking", "--user=root",
                             "--pid-file=" + os.path.join(base, "mariadbd.pid"),
                             "--log-error=" + os.path.join(base, "error.log")],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError("mariadbd exited: %s" % open(
                    os.path.join(base, "error.log")).read()[-2000:])
            try:
                root = pymysql.connect(unix_socket=sock, user="root", autocommit=True)
                break
            except pymysql.MySQLError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        with open(SCHEMA) as f:
            execute_file(root, f.read().replace("{{ mysql_database }}", "cacertusers"))
        try:
            yield sock, root
        finally:
            root.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
