"""operations/secret_file.py for real: pyinfra's @local connector installs a secret into a
temporary directory, and its output (--dry --diff, and a real run with --diff) never holds
the secret, only the file's name and sha256."""
import grp
import hashlib
import os
import pwd
import secrets as random
import stat
import subprocess

import pytest

from tests.unit.deploy.conftest import REPO

PYINFRA = REPO / ".venv" / "bin" / "pyinfra"

DEPLOY = """
import os
from pathlib import Path
from operations import secret_file
from pyinfra.operations import files

if os.environ["HOW"] == "files.put":
    files.put(name="Test secret", src=os.environ["SRC"], dest=os.environ["DEST"], mode="600")
else:
    secret_file.upload(name="Test secret", src=os.environ["SRC"], dest=os.environ["DEST"],
                       user=os.environ["OWNER"], group=os.environ["GROUP"], mode="640")
"""


@pytest.fixture
def secret(tmp_path):
    """A local secret file and a deploy that installs it as <tmp>/server/etc/secret.key."""
    token = f"TOKEN-{random.token_hex(16)}"
    src = tmp_path / "secret.key"
    src.write_text(f"-----BEGIN PRIVATE KEY-----\n{token}\n-----END PRIVATE KEY-----\n")
    src.chmod(0o600)
    (tmp_path / "deploy.py").write_text(DEPLOY)
    return {"token": token, "src": src, "dest": tmp_path / "server" / "etc" / "secret.key",
            "deploy": tmp_path / "deploy.py", "tmp": tmp_path}


def pyinfra(secret, *args, how="secret_file"):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOW": how, "SRC": str(secret["src"]),
           "DEST": str(secret["dest"]), "OWNER": pwd.getpwuid(os.getuid()).pw_name,
           "GROUP": grp.getgrgid(os.getgid()).gr_name}
    result = subprocess.run([str(PYINFRA), "@local", str(secret["deploy"]), *args],
                            cwd=secret["tmp"], env=env, capture_output=True, text=True,
                            timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_files_put_would_show_the_secret(secret):
    """Why the helper exists (and proof that the checks below would see a leak)."""
    secret["dest"].parent.mkdir(parents=True)
    secret["dest"].write_text("the old key\n")
    secret["dest"].chmod(0o600)
    assert secret["token"] in pyinfra(secret, "--dry", "--diff", how="files.put")


def test_dry_diff_names_the_file_and_its_sha256_only(secret):
    output = pyinfra(secret, "--dry", "--diff")
    assert secret["token"] not in output
    assert f"Will create secret {secret['dest']} (content not shown): sha256 (none) -> " \
        f"{sha256(secret['src'])}" in output
    assert not secret["dest"].parent.exists()


def test_real_run_installs_it_with_its_mode_and_shows_only_hashes(secret):
    output = pyinfra(secret, "-y", "--diff")
    assert secret["token"] not in output
    dest = secret["dest"]
    assert dest.read_bytes() == secret["src"].read_bytes()
    assert stat.S_IMODE(dest.stat().st_mode) == 0o640
    assert (dest.stat().st_uid, dest.stat().st_gid) == (os.getuid(), os.getgid())
    assert sorted(p.name for p in dest.parent.iterdir()) == ["secret.key"]  # no upload left

    # Unchanged: nothing to do.
    assert "No changes" in pyinfra(secret, "-y", "--diff")

    # Changed content: the old and new sha256, never either content.
    old = sha256(dest)
    old_token = secret["token"]
    secret["token"] = f"TOKEN-{random.token_hex(16)}"
    secret["src"].write_text(f"{secret['token']}\n")
    output = pyinfra(secret, "-y", "--diff")
    assert secret["token"] not in output and old_token not in output
    assert f"Will replace secret {dest} (content not shown): sha256 {old} -> " \
        f"{sha256(secret['src'])}" in output
    assert dest.read_text() == f"{secret['token']}\n"

    # Only the mode drifted: corrected in place, nothing uploaded.
    dest.chmod(0o644)
    output = pyinfra(secret, "-y", "--diff")
    assert secret["token"] not in output
    assert stat.S_IMODE(dest.stat().st_mode) == 0o640
