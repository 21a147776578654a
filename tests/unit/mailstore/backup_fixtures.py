"""Helpers for the backup tests: the CLI as cron runs it, and the stored format 1 repositories."""
import os
import subprocess
import sys
import tarfile

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "backup-format1.tar.gz")


def cli(*args):
    """`mailstore backup ARGS` in a new process, without the repository/key environment."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAILSTORE_REPOSITORY", "MAILSTORE_KEY_FILE")}
    return subprocess.run([sys.executable, "-m", "mailstore", "backup"] + [str(a) for a in args],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120,
                          env=env)


def one_error_line(r):
    """The one `mailstore backup: error: ...` line of a command that failed with exit 1."""
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mailstore backup: error: "), r.stderr
    return lines[0]


def extract_format1(target):
    """Unpack data/backup-format1.tar.gz into `target`: enc/ and plain/ repositories of src/,
    and key."""
    with tarfile.open(DATA) as tar:
        # our own test data, owners and modes kept (the filter exists from 3.12 on, and in
        # the security releases of older Pythons)
        trusted = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") \
            else {}
        tar.extractall(str(target), **trusted)
