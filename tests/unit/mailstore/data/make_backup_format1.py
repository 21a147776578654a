"""Writes backup-format1.tar.gz: repositories in the backup format of config.json version 1.

Run with the mailstore of that format (the tar in this directory was made at commit 045802f):
    PYTHONPATH=$PWD python tests/unit/mailstore/data/make_backup_format1.py OUT.tar.gz
The tar holds key (a test key), src/ (the mail root backed up), enc/ (encrypted repository,
two snapshots: the second after bob's INBOX message 1 got the flag F) and plain/ (the same,
unencrypted).
"""
import os
import sys
import tarfile
import tempfile

from mailstore import backup
from tests.harness import make_tree


def main(out):
    with tempfile.TemporaryDirectory() as base:
        make_tree(os.path.join(base, "src"))
        backup.init(os.path.join(base, "enc"), key_file=os.path.join(base, "key"))
        backup.init(os.path.join(base, "plain"))
        for repo, key in (("enc", os.path.join(base, "key")), ("plain", None)):
            backup.run(os.path.join(base, repo), os.path.join(base, "src"), key_file=key)
        cur = os.path.join(base, "src/bob/Maildir/cur")
        seen, = [n for n in os.listdir(cur) if "M7P101" in n]
        os.rename(os.path.join(cur, seen), os.path.join(cur, seen[:-len(":2,S")] + ":2,FS"))
        for repo, key in (("enc", os.path.join(base, "key")), ("plain", None)):
            backup.run(os.path.join(base, repo), os.path.join(base, "src"), key_file=key)
        with tarfile.open(out, "w:gz") as tar:
            for name in ("key", "src", "enc", "plain"):
                tar.add(os.path.join(base, name), arcname=name)


if __name__ == "__main__":
    main(sys.argv[1])
