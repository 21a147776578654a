"""A new certificate in the secrets directory: the deploy installs it and reloads exactly the
services listed for that pair (email -> postfix), and the new certificate is served at once."""
import hashlib
import shutil
import sys
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding
from mailclients import deploy_failure, served_certificate

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from lab import ca  # noqa: E402  (the lab's own CA helpers)
from lab.secrets import _load  # noqa: E402


def _served_on_25(lab):
    der = served_certificate(lab, lab["ports"]["smtp"], lab["hostnames"]["email"], starttls=True)
    return hashlib.sha256(der).hexdigest()


def _log_lines(ssh):
    return int(ssh("wc -l < /var/log/mail.log").stdout.strip())


def test_new_email_certificate_reloads_postfix_and_nothing_else(lab, ssh, run_deploy, tmp_path,
                                                                monkeypatch):
    original = REPO / ".lab" / "secrets"
    renewed = tmp_path / "secrets"
    shutil.copytree(original, renewed)           # modes preserved: still not world-readable
    inter_key, inter = _load(REPO / ".lab" / "ca" / "intermediate.pem",
                             REPO / ".lab" / "ca" / "intermediate.key.pem")
    key, cert = ca.make_server(inter_key, inter, [lab["hostnames"]["email"]])
    (renewed / "email.key.pem").write_bytes(ca.key_pem(key))
    (renewed / "email.chain.pem").write_bytes(ca.cert_pem(cert) + ca.cert_pem(inter))
    new_fingerprint = hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()
    old_fingerprint = _served_on_25(lab)
    assert old_fingerprint != new_fingerprint

    before = _log_lines(ssh)
    monkeypatch.setenv("CACERT_EMAIL_SECRETS", str(renewed))
    try:
        result = run_deploy()
        assert result.returncode == 0, deploy_failure(result)
        log = ssh(f"tail -n +{before + 1} /var/log/mail.log").stdout
        assert "postfix/master" in log and "reload" in log, log[-2000:]
        assert "SIGHUP received - reloading configuration" not in log, "Dovecot was reloaded"
        assert _served_on_25(lab) == new_fingerprint
    finally:
        monkeypatch.setenv("CACERT_EMAIL_SECRETS", str(original))
        restored = run_deploy()
        assert restored.returncode == 0, deploy_failure(restored)
    assert _served_on_25(lab) == old_fingerprint
