"""Repository creation, keys, locking and the cheap status() used by `check backup`."""
import os
import stat
import subprocess
import sys

import pytest

from mailstore import backup
from mailstore.backup.repository import Repository


def test_init_plain_and_status_shape(tmp_path):
    repo = tmp_path / "repo"
    backup.init(repo)
    st = backup.status(repo)
    assert st["snapshots"] == 0
    assert st["last_complete"] is None
    assert st["last_snapshot_id"] is None
    assert st["last_verify"] is None
    assert st["encrypted"] is False
    # the repository itself is private: it holds everyone's mail
    assert stat.S_IMODE(os.stat(repo).st_mode) == 0o700


def test_init_refuses_non_empty_directory(tmp_path):
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "something").write_text("x")
    with pytest.raises(backup.RepositoryError, match="not empty"):
        backup.init(tmp_path / "repo")


def test_status_of_missing_repository_is_a_clear_error(tmp_path):
    with pytest.raises(backup.RepositoryError, match="does not exist"):
        backup.status(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(backup.RepositoryError, match="not a mailstore backup repository"):
        backup.status(tmp_path / "plain")


def test_encrypted_init_creates_0600_key_outside_repo(tmp_path):
    key = tmp_path / "key"
    backup.init(tmp_path / "repo", key_file=key)
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    master = key.read_text().strip()
    assert len(master) == 64
    for dirpath, _dirs, files in os.walk(tmp_path / "repo"):
        for name in files:
            assert master.encode() not in open(os.path.join(dirpath, name), "rb").read()
    assert backup.status(tmp_path / "repo")["encrypted"] is True
    Repository(tmp_path / "repo", key_file=key).close()


def test_wrong_missing_or_open_key_is_a_clear_error(tmp_path):
    backup.init(tmp_path / "repo", key_file=tmp_path / "key")
    with pytest.raises(backup.KeyFileError, match="encrypted: give its key with --key-file"):
        Repository(tmp_path / "repo")
    other = tmp_path / "other"
    backup.init(tmp_path / "repo2", key_file=other)
    with pytest.raises(backup.KeyFileError, match="wrong key"):
        Repository(tmp_path / "repo", key_file=other)
    with pytest.raises(backup.KeyFileError, match="does not exist"):
        Repository(tmp_path / "repo", key_file=tmp_path / "missing")
    os.chmod(other, 0o644)
    with pytest.raises(backup.KeyFileError, match="mode 0644"):
        Repository(tmp_path / "repo", key_file=other)
    garbage = tmp_path / "garbage"
    garbage.write_text("not a key\n")
    os.chmod(garbage, 0o600)
    with pytest.raises(backup.KeyFileError, match="does not hold a key"):
        Repository(tmp_path / "repo", key_file=garbage)


def test_existing_key_file_is_reused_by_init(tmp_path):
    key = tmp_path / "key"
    backup.init(tmp_path / "a", key_file=key)
    before = key.read_text()
    backup.init(tmp_path / "b", key_file=key)
    assert key.read_text() == before
    Repository(tmp_path / "b", key_file=key).close()


def test_second_locker_fails_clearly(tmp_path):
    backup.init(tmp_path / "repo")
    # the lock is held by another process, as a concurrent cron run would
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from mailstore.backup.repository import Repository\n"
        "r = Repository(sys.argv[1]); r.lock()\n"
        "print('locked', flush=True); time.sleep(30)\n"), str(tmp_path / "repo")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with Repository(tmp_path / "repo") as repo:
            with pytest.raises(backup.LockedError, match=r"in use by another mailstore process "
                               r"\(pid {} ".format(holder.pid)):
                repo.lock(wait=0.5)
    finally:
        holder.kill()
        holder.wait()
    with Repository(tmp_path / "repo") as repo:
        repo.lock(wait=5)


def test_every_repository_file_is_private(tmp_path):
    import sys
    sys.path.insert(0, os.path.dirname(__file__))
    from tests.harness import make_tree
    make_tree(tmp_path / "src")
    backup.init(tmp_path / "repo", key_file=tmp_path / "key")
    backup.run(tmp_path / "repo", tmp_path / "src", key_file=tmp_path / "key")
    for dirpath, dirs, files in os.walk(tmp_path / "repo"):
        assert stat.S_IMODE(os.stat(dirpath).st_mode) & 0o077 == 0, dirpath
        for name in files:
            mode = stat.S_IMODE(os.stat(os.path.join(dirpath, name)).st_mode)
            assert mode & 0o077 == 0, (name, oct(mode))


def test_compression_modes_round_trip_and_small_is_smaller_on_attachments(tmp_path):
    import base64
    import random
    rng = random.Random(3)
    text = b"Subject: minutes\r\n\r\n" + b"The board met and agreed on the budget.\r\n" * 500
    attachment = b"Subject: scan\r\n\r\n" + base64.encodebytes(
        bytes(rng.getrandbits(8) for _ in range(60000)))
    sizes = {}
    for mode in ("fast", "small"):
        backup.init(tmp_path / mode, compression=mode)
        assert backup.status(tmp_path / mode)["snapshots"] == 0
        with Repository(tmp_path / mode) as repo:
            for data in (text, attachment):
                oid = repo.codec.object_id(data)
                record = repo.codec.encode(oid, data)
                assert repo.codec.decode(oid, record) == data
                sizes[mode, data[:12]] = len(record)
    # text is deflated in both modes; attachments only in "small" (stored as-is in "fast")
    assert sizes["fast", text[:12]] == sizes["small", text[:12]] < len(text) / 10
    assert sizes["fast", attachment[:12]] > len(attachment)
    assert sizes["small", attachment[:12]] < 0.8 * len(attachment)
    with pytest.raises(backup.RepositoryError, match="compression"):
        backup.init(tmp_path / "bad", compression="zstd")
