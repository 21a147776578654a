"""A throwaway PKI for the tests: root CA -> intermediate -> leaf certificates, in PEM."""
import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NOW = datetime.datetime.now(datetime.timezone.utc)
DAY = datetime.timedelta(days=1)


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def certificate(cn, key, issuer=None, issuer_key=None, names=None, ca=False,
                not_before=None, not_after=None):
    """A certificate for `key`; self-signed when no issuer is given."""
    builder = (x509.CertificateBuilder()
               .subject_name(_name(cn))
               .issuer_name(issuer.subject if issuer else _name(cn))
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(not_before or NOW - DAY)
               .not_valid_after(not_after or NOW + 365 * DAY)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def pem(*certs):
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


def key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


class PKI:
    """Root and intermediate CA; `leaf()` issues server certificates from the intermediate."""

    def __init__(self):
        self.root_key = _key()
        self.root = certificate("Test Root CA", self.root_key, ca=True,
                                not_after=NOW + 3650 * DAY)
        self.inter_key = _key()
        self.inter = certificate("Test Intermediate CA", self.inter_key, self.root,
                                 self.root_key, ca=True, not_after=NOW + 1825 * DAY)

    def leaf(self, names, **kwargs):
        """(chain PEM = leaf + intermediate, key PEM) for `names`."""
        key = _key()
        cert = certificate(names[0], key, self.inter, self.inter_key, names=names, **kwargs)
        return pem(cert, self.inter), key_pem(key)

    def pem_root(self):
        return pem(self.root)
