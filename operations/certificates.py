"""The three certificate pairs: checked on the control machine, then installed on the server.

The pure part (`verify_pair`, `verify_chain`, `names_covered`, `check_pair`) runs during
inventory validation (inventories/validate.py), before any host is touched: a key that does
not match, a chain that does not reach the trust anchor (`ca.pem` in the secrets directory), an
expired certificate or one whose names do not cover the hostnames that use it stops the run.

`install()` uploads each pair from the secrets directory to its documented path (the private
key through operations/secret_file.py: never shown, not even by `--diff`) and reloads
exactly the services listed for that pair, and only those that are running (a stopped or not
yet installed service reads the new files when it starts).
"""
import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, server
from pyinfra.operations.util import any_changed

from operations.secrets import secrets_dir  # the control machine's secrets directory
from operations import secret_file


class CertificateError(Exception):
    """A certificate pair is unusable; the message says which check failed."""


# --- pure checks (control machine) -------------------------------------------------------------

def load_certificates(pem, what):
    """All certificates of a PEM text, in order; `what` names the source in errors."""
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise CertificateError(f"{what}: no PEM certificate in it")
    try:
        return x509.load_pem_x509_certificates(pem.encode())
    except ValueError as exc:
        raise CertificateError(f"{what}: not a readable PEM certificate ({exc})") from None


def load_private_key(pem, what):
    """The private key of a PEM text (unencrypted: daemons read it unattended)."""
    if "PRIVATE KEY-----" not in pem:
        raise CertificateError(f"{what}: no PEM private key in it")
    try:
        return serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"{what}: not a readable unencrypted private key ({exc})") from None


def _spki(public_key):
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def verify_pair(leaf, key):
    """Raise unless `key` is the private key of certificate `leaf`."""
    if _spki(leaf.public_key()) != _spki(key.public_key()):
        raise CertificateError(
            f"the private key does not match the certificate {leaf.subject.rfc4514_string()}")


def _issued_by(cert, issuer):
    """True if `issuer` signed `cert` (names match and the signature verifies)."""
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _check_validity(cert, now):
    name = cert.subject.rfc4514_string()
    if cert.not_valid_before_utc > now:
        raise CertificateError(f"{name} is not valid before {cert.not_valid_before_utc:%Y-%m-%d}")
    if cert.not_valid_after_utc < now:
        raise CertificateError(f"{name} expired on {cert.not_valid_after_utc:%Y-%m-%d}")


def verify_chain(chain, anchors, now):
    """Raise unless chain[0] leads, through the other certificates of `chain`, to one of
    `anchors`, every link signed by the next and every certificate valid at `now`.

    Returns the path from the leaf to the trust anchor.
    """
    path = [chain[0]]
    pool = list(chain[1:])
    while True:
        cert = path[-1]
        _check_validity(cert, now)
        for anchor in anchors:
            if _issued_by(cert, anchor):
                _check_validity(anchor, now)
                return path + ([anchor] if anchor is not cert else [])
        if any(cert == anchor for anchor in anchors):
            return path
        issuer = next((c for c in pool if _issued_by(cert, c)), None)
        if issuer is None:
            raise CertificateError(
                f"incomplete chain: no certificate for the issuer "
                f"{cert.issuer.rfc4514_string()} of {cert.subject.rfc4514_string()} "
                f"(add the intermediate to the chain file, or the root to ca.pem)")
        pool.remove(issuer)
        path.append(issuer)


def certificate_names(cert):
    """The DNS names a certificate is valid for: its subjectAltName, else its common name."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return [name.lower() for name in san.value.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        return [str(cn.value).lower() for cn in cns]


def _matches(pattern, hostname):
    if pattern == hostname:
        return True
    # A wildcard covers exactly one leftmost label (RFC 6125 6.4.3).
    if pattern.startswith("*."):
        head, _, rest = hostname.partition(".")
        return bool(head) and rest == pattern[2:]
    return False


def names_covered(cert, hostnames):
    """The hostnames that `cert` does not cover (empty when all are covered)."""
    names = certificate_names(cert)
    return [h for h in hostnames if not any(_matches(n, h.lower()) for n in names)]


def check_pair(chain_pem, key_pem, ca_pem, hostnames, warn_days, now=None, what="certificate"):
    """Check one pair as the deploy will install it; return warnings, raise on errors.

    + chain_pem: the leaf certificate followed by its intermediates
    + key_pem: the leaf's private key
    + ca_pem: the trust anchor(s)
    + hostnames: the names the certificate must cover
    + warn_days: warn when it expires within this many days
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if "PRIVATE KEY-----" in chain_pem:
        # The chain goes up with files.put, whose --diff prints the file: never a key in it.
        raise CertificateError(f"{what} chain: holds a private key; keep the key in its own "
                               "key file only (the chain file is shown by --diff)")
    chain = load_certificates(chain_pem, f"{what} chain")
    anchors = load_certificates(ca_pem, "ca.pem")
    key = load_private_key(key_pem, f"{what} key")
    leaf = chain[0]
    try:
        verify_pair(leaf, key)
        verify_chain(chain, anchors, now)
    except CertificateError as exc:
        raise CertificateError(f"{what}: {exc}") from None
    missing = names_covered(leaf, hostnames)
    if missing:
        raise CertificateError(
            f"{what}: {leaf.subject.rfc4514_string()} does not cover {', '.join(missing)} "
            f"(it names {', '.join(certificate_names(leaf)) or 'nothing'})")
    left = leaf.not_valid_after_utc - now
    if left < datetime.timedelta(days=warn_days):
        return [f"{what}: expires in {left.days} days, on {leaf.not_valid_after_utc:%Y-%m-%d}"]
    return []


# --- the deploy (server) ------------------------------------------------------------------------

def _reload_running(services):
    """Shell that reloads each of `services` that is running, leaving the others alone."""
    return [f"if systemctl is-active --quiet {s}; then systemctl reload-or-restart {s}; fi"
            for s in services]


@deploy("Certificates")
def install():
    """Each pair of inventory `certificates` at its path; reload the services that use it."""
    secrets = secrets_dir()
    for key, cert in sorted(host.data.certificates.items()):
        group = cert.get("key_group", "root")
        # The chain is public (every TLS client is sent it), so files.put and its --diff
        # are fine here; the private key goes through secret_file, which shows no content.
        chain = files.put(
            name=f"{key} certificate chain", src=str(secrets / f"{key}.chain.pem"),
            dest=cert["cert"], user="root", group="root", mode="644")
        private = secret_file.upload(
            name=f"{key} private key", src=str(secrets / f"{key}.key.pem"),
            dest=cert["key"], user="root", group=group,
            mode="640" if group != "root" else "600")
        server.shell(
            name=f"Reload the services using the {key} certificate: "
                 f"{', '.join(cert['services'])}",
            commands=_reload_running(cert["services"]),
            _if=any_changed(chain, private))
