"""What a snapshot holds besides mail: config paths (`--include`) and a database dump.

Both are stored as rows of the files table (kinds include, include-dir, include-symlink and
dbdump), through the same run (`feed`, a feed.Feed) as the mail, so they are deduplicated and
committed with it.
"""
import os
import shutil
import stat
import subprocess
import time

from mailstore.backup.catalog import to_db
from mailstore.backup.errors import BackupError


def include(feed, path):
    """A config path (file or tree), stored under its absolute path; links kept as links."""
    path = os.path.abspath(path)
    try:
        st = os.lstat(path)
    except OSError as e:
        feed.warn("--include {}: {}".format(path, e.strerror or e))
        return
    _include_one(feed, path, st)
    if stat.S_ISDIR(st.st_mode):
        def walk_error(e):
            feed.warn("--include: {}".format(e))

        for dirpath, dirnames, filenames in os.walk(path, onerror=walk_error):
            for name in sorted(dirnames) + sorted(filenames):
                full = os.path.join(dirpath, name)
                try:
                    _include_one(feed, full, os.lstat(full))
                except FileNotFoundError:
                    pass


def _include_one(feed, path, st):
    meta = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns)
    if stat.S_ISDIR(st.st_mode):
        feed.files.append(("include-dir", None, None, to_db(path)) + meta + (0, None, None))
    elif stat.S_ISLNK(st.st_mode):
        feed.files.append(("include-symlink", None, None, to_db(path)) + meta +
                          (st.st_size, None, to_db(os.readlink(path))))
    elif stat.S_ISREG(st.st_mode):
        got = feed.read(path)
        if got is not None:
            oid = feed.store(got[0], is_message=False)
            feed.files.append(("include", None, None, to_db(path)) + meta +
                              (len(got[0]), oid, None))
    else:
        feed.warn("--include {}: not a file, directory or link; skipped".format(path))


def database_dump(feed, database, command=None, defaults_file=None):
    """A consistent dump of one MariaDB database, taken while the server runs.

    --single-transaction: one consistent InnoDB snapshot without locking the tables that
    Postfix and Dovecot read. Credentials: root's unix socket by default (Debian), or a
    client options file (`defaults_file`, passed as --defaults-extra-file).
    """
    if command is None:
        tool = shutil.which("mariadb-dump") or shutil.which("mysqldump") or "mariadb-dump"
        command = [tool] + (["--defaults-extra-file=" + os.fspath(defaults_file)]
                            if defaults_file else []) + [
            "--single-transaction", "--routines", "--events", "--triggers", database]
    try:
        proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as e:
        raise BackupError("database dump {}: cannot run {}: {}".format(
            database, command[0], e.strerror or e))
    if proc.returncode != 0:
        raise BackupError("database dump {} failed (exit {}): {}".format(
            database, proc.returncode, proc.stderr.decode("utf-8", "replace").strip()))
    oid = feed.store(proc.stdout, is_message=False)
    feed.files.append(("dbdump", None, None, "mysql/{}.sql".format(database), 0o600,
                       0, 0, int(time.time() * 1e9), len(proc.stdout), oid, None))
