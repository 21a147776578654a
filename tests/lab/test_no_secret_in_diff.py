"""A secret never reaches pyinfra's output, not even under `--diff`.

Every secret of the lab's secrets directory is replaced by a new one in a copy (certificates'
keys issued anew by the lab CA, the backup key, the MariaDB service passwords, the accounts'
and the Icinga API password), so that a dry run of the deploy with that copy has a change to
show for each; the run must name the changed secret files and show none of their bytes.
`--dry` changes nothing on the container; without `-y` (which skips change detection, and
with it every "Will ..." line) and with --dry, pyinfra prints the changes and exits without
asking. One dry run (~1-2 min) per CI: the operations that
handle secrets are the same on every release, so it runs on the lab's bookworm iteration.
"""
import os
import secrets
import shutil
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from conftest import REPO
from lab import ca, lock, topology

LAB_RELEASES = ("bookworm",)


def _renew(directory):
    """Replace every secret in the copy `directory`; return the secret strings it now holds."""
    ca_dir = REPO / ".lab" / "ca"
    inter_key = serialization.load_pem_private_key(
        (ca_dir / "intermediate.key.pem").read_bytes(), None)
    inter_pem = (ca_dir / "intermediate.pem").read_bytes()
    inter = x509.load_pem_x509_certificate(inter_pem)
    for cert_key, name in topology.CERTIFICATE_NAMES.items():
        leaf_key, leaf = ca.make_server(inter_key, inter, [name])
        (directory / f"{cert_key}.key.pem").write_bytes(ca.key_pem(leaf_key))
        (directory / f"{cert_key}.chain.pem").write_bytes(ca.cert_pem(leaf) + inter_pem)
    (directory / "backup.key").write_text(secrets.token_hex(32) + "\n")
    for path in [*directory.glob("*.password"), *(directory / "accounts").glob("*.password")]:
        path.write_text(secrets.token_urlsafe(18) + "\n")

    found = []
    for path in directory.rglob("*"):
        if path.name.endswith(".key.pem"):
            # A line of the key that also appears in its certificate is public (the modulus,
            # base64-aligned the same way by chance): a diff of the certificate shows it.
            public = (directory / path.name.replace(".key.pem", ".chain.pem")).read_text()
            found += [line for line in path.read_text().splitlines()
                      if line and not line.startswith("-----") and line not in public]
        elif path.name.endswith((".password", ".key", ".ticket")):
            found.append(path.read_text().strip())
    return found


@pytest.fixture(scope="module")
def dry_run(lab, tmp_path_factory):
    copy = tmp_path_factory.mktemp("secrets") / "secrets"
    shutil.copytree(REPO / ".lab" / "secrets", copy)
    os.chmod(copy, 0o700)
    values = _renew(copy)
    env = dict(os.environ, CACERT_EMAIL_SECRETS=str(copy))
    with lock.held():
        result = subprocess.run(
            [str(REPO / ".venv" / "bin" / "pyinfra"), "inventories/lab.py", "deploy.py",
             "--limit", "email", "--dry", "--diff"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=1800,
            stdin=subprocess.DEVNULL)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    return values, output


def test_no_byte_of_a_renewed_secret_is_shown(dry_run):
    values, output = dry_run
    assert len(values) >= 10
    leaked = [value[:12] + "..." for value in values if value in output]
    assert not leaked, f"secrets in the dry run's output (first characters): {leaked}"


def test_the_changed_secret_files_are_named(dry_run, lab):
    _, output = dry_run
    for name in ("email.cacert.org.key.pem", "community.cacert.org.key.pem",
                 "server.key.pem", "backup.key", "dovecot-sql.conf.ext", "api.credentials"):
        assert name in output, f"{name} is not named in the dry run's output"
