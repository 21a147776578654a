"""A throwaway PKI for the tests: root CA -> intermediate CA -> leaf certificates, and CRLs.

One PKI serves the deploy's tests (chains and keys in PEM, as the secrets directory holds them)
and the check plugin's (certificate and key objects, written to files as a test needs them).
"""
import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

UTC = datetime.timezone.utc
DAY = datetime.timedelta(days=1)
NOW = datetime.datetime.now(UTC)   # when the tests started, for validity dates relative to it


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def new_key(kind="ec"):
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def certificate(cn, key, issuer=None, issuer_key=None, names=None, ca=False,
                not_before=None, not_after=None, serial=None):
    """A certificate for `key` (valid from a day ago for a year unless told); self-signed when
    no issuer is given; `names` become its DNS subjectAltNames."""
    now = datetime.datetime.now(UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(_name(cn))
               .issuer_name(issuer.subject if issuer is not None else _name(cn))
               .public_key(key.public_key())
               .serial_number(serial or x509.random_serial_number())
               .not_valid_before(not_before or now - DAY)
               .not_valid_after(not_after or now + 365 * DAY)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def make_crl(issuer, issuer_key, revoked_serials=(), next_update=None, last_update=None):
    now = datetime.datetime.now(UTC)
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(issuer.subject)
               .last_update(last_update or now - DAY)
               .next_update(next_update or now + 7 * DAY))
    for serial in revoked_serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial)
            .revocation_date(now - DAY).build())
    return builder.sign(issuer_key, hashes.SHA256())


def pem_bytes(obj):
    """A certificate, CRL or private key (unencrypted PKCS#8) in PEM."""
    if hasattr(obj, "private_bytes"):
        return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    return obj.public_bytes(serialization.Encoding.PEM)


def pem(*objs):
    """The PEM of OBJS, one after the other, as text."""
    return "".join(pem_bytes(o).decode() for o in objs)


def write_pem(path, *objs):
    """Write the PEM of OBJS to PATH; return the path as a string."""
    with open(str(path), "wb") as f:
        for obj in objs:
            f.write(pem_bytes(obj))
    return str(path)


class PKI:
    """Root and intermediate CA (`root`, `root_key`, `inter`, `inter_key`); `leaf()` and
    `leaf_pem()` issue server certificates from the intermediate."""

    def __init__(self):
        self.root_key = new_key()
        self.root = certificate("Test Root CA", self.root_key, ca=True,
                                not_after=NOW + 3650 * DAY)
        self.inter_key = new_key()
        self.inter = certificate("Test Intermediate CA", self.inter_key, self.root,
                                 self.root_key, ca=True, not_after=NOW + 1825 * DAY)

    def leaf(self, cn="community.cacert.test", days=90.0, **kwargs):
        """(certificate, key) for CN, expiring in DAYS unless `not_after` is given."""
        key = new_key()
        kwargs.setdefault("not_after", datetime.datetime.now(UTC) + datetime.timedelta(days=days))
        return certificate(cn, key, self.inter, self.inter_key, **kwargs), key

    def leaf_pem(self, names, **kwargs):
        """(chain PEM = leaf + intermediate, key PEM) for `names` (the first is the CN)."""
        kwargs.setdefault("not_after", NOW + 365 * DAY)
        cert, key = self.leaf(names[0], names=names, **kwargs)
        return pem(cert, self.inter), pem(key)

    def pem_root(self):
        return pem(self.root)
