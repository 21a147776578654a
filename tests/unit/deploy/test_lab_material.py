"""lab/secrets.py and lab/ca.py: the .lab/ the deploy and the tests rely on."""
import stat

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from tests.unit.deploy import fake_host  # noqa: F401  (puts the repository on sys.path)

from lab import secrets, topology


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_generate_makes_the_contracted_files(tmp_path):
    accounts = secrets.generate(tmp_path)
    sec = tmp_path / "secrets"
    assert _mode(tmp_path) == 0o700 and _mode(sec) == 0o700
    root = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    assert (sec / "ca.pem").read_bytes() == (tmp_path / "ca.pem").read_bytes()
    for key, name in topology.CERTIFICATE_NAMES.items():
        chain = x509.load_pem_x509_certificates((sec / f"{key}.chain.pem").read_bytes())
        assert len(chain) == 2, "leaf then the intermediate, not the root"
        leaf, intermediate = chain
        leaf.verify_directly_issued_by(intermediate)
        intermediate.verify_directly_issued_by(root)
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == [name]
        private = load_pem_private_key((sec / f"{key}.key.pem").read_bytes(), None)
        assert private.public_key().public_numbers() == leaf.public_key().public_numbers()
        assert _mode(sec / f"{key}.key.pem") == 0o600
    for name in ("mysql_postfix", "mysql_dovecot"):
        assert len((sec / f"{name}.password").read_text().strip()) >= 20
    assert [a["email"] for a in accounts] == [a["email"] for a in topology.ACCOUNTS]
    for account in accounts:
        path = sec / "accounts" / f"{account['email']}.password"
        assert path.read_text().strip() == account["password"] and _mode(path) == 0o600
    assert (tmp_path / "id_ed25519.pub").read_text().startswith("ssh-ed25519 ")
    assert _mode(tmp_path / "id_ed25519") == 0o600


def test_second_generate_keeps_everything(tmp_path):
    first = secrets.generate(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert secrets.generate(tmp_path) == first
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_missing_certificate_is_remade_alone(tmp_path):
    secrets.generate(tmp_path)
    sec = tmp_path / "secrets"
    email_key = (sec / "email.key.pem").read_bytes()
    (sec / "community.chain.pem").unlink()
    secrets.generate(tmp_path)
    assert (sec / "community.chain.pem").is_file()
    assert (sec / "email.key.pem").read_bytes() == email_key


def test_lab_json_has_exactly_the_contracted_shape():
    from lab.__main__ import lab_description
    accounts = [{**a, "password": "pw"} for a in topology.ACCOUNTS]
    lab = lab_description("bookworm", accounts)
    assert set(lab) == {"release", "container", "address", "ssh", "ca_cert", "domain",
                        "hostnames", "mail_root", "data_volume", "accounts", "aliases", "ports",
                        "containers"}
    assert lab["ssh"] == {"user": "root", "key": ".lab/id_ed25519", "port": 22}
    assert lab["ca_cert"] == ".lab/ca.pem" and lab["data_volume"] == "/srv/mail"
    assert set(lab["hostnames"]) == {"email", "community"}
    assert len(lab["accounts"]) >= 2
    assert all(set(a) == {"user", "email", "password"} for a in lab["accounts"])
    first = lab["accounts"][0]["email"]
    assert any(a["send_as"] and a["owner"] == first for a in lab["aliases"])
    assert lab["ports"] == {"smtp": 25, "smtps": 465, "submission": 587, "imap": 143,
                            "imaps": 993, "pop3": 110, "pop3s": 995, "sieve": 4190,
                            "http": 80, "https": 443}
