"""``mailstore check cert FILE [--key K] [--crl CRL] [--ca ROOTS]``: is this certificate usable?

FILE is what the daemons are configured with: the server certificate first, then the
intermediates (``*.chain.pem``). Findings:

- ``days``: days until the first certificate in FILE expires (perfdata; ``-w 30: -c 14:``).
  A certificate not valid yet is CRITICAL.
- key: with ``--key``, the private key must belong to the server certificate (CRITICAL if not;
  UNKNOWN if the key cannot be read, e.g. encrypted or no permission).
- chain: every certificate in FILE must be issued (name and signature) by the next one; with
  ``--ca``, the last one must be a root from that file or be issued by one, else the chain is
  incomplete (CRITICAL: clients without the intermediate cannot verify the server).
- revocation: with ``--crl``, the server certificate must not be on the CRL (CRITICAL). The
  CRL must come from the certificate's issuer and carry a valid signature (issuer certificate
  from FILE or ``--ca``); a CRL past its nextUpdate is WARNING (revocation news may be missing).
"""
import datetime
import re

import nagiosplugin
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from mailstore.checks.plugin import Fact, Headline

NAME = "CERT"
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
_UTC = datetime.timezone.utc


def _read(path, what):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise nagiosplugin.CheckError("cannot read %s %s: %s" % (what, path, e.strerror))


def load_certificates(path):
    """Every certificate in a PEM file, in file order (CheckError if none or malformed)."""
    blocks = _PEM_CERT.findall(_read(path, "certificate file"))
    if not blocks:
        raise nagiosplugin.CheckError("%s: no PEM certificate in it" % path)
    try:
        return [x509.load_pem_x509_certificate(b) for b in blocks]
    except ValueError as e:
        raise nagiosplugin.CheckError("%s: malformed certificate: %s" % (path, e))


def _not_after(cert):
    # cryptography >= 42 has the aware *_utc attributes and deprecates the naive ones
    value = getattr(cert, "not_valid_after_utc", None)
    return value if value is not None else cert.not_valid_after.replace(tzinfo=_UTC)


def _not_before(cert):
    value = getattr(cert, "not_valid_before_utc", None)
    return value if value is not None else cert.not_valid_before.replace(tzinfo=_UTC)


def _subject(cert):
    return cert.subject.rfc4514_string() or "(empty subject)"


def issued_by(child, parent):
    """True if `parent` issued `child`: names match and parent's key verifies the signature."""
    if child.issuer != parent.subject:
        return False
    if hasattr(child, "verify_directly_issued_by"):     # cryptography >= 40
        try:
            child.verify_directly_issued_by(parent)
            return True
        except (ValueError, TypeError, InvalidSignature):
            return False
    key = parent.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(child.signature, child.tbs_certificate_bytes, padding.PKCS1v15(),
                       child.signature_hash_algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(child.signature, child.tbs_certificate_bytes,
                       ec.ECDSA(child.signature_hash_algorithm))
        else:
            key.verify(child.signature, child.tbs_certificate_bytes)
        return True
    except (InvalidSignature, TypeError, ValueError):
        return False


def _spki(public_key):
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def key_matches(cert, key_path):
    data = _read(key_path, "key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise nagiosplugin.CheckError("%s: key is encrypted; cannot compare it" % key_path)
    except ValueError as e:
        raise nagiosplugin.CheckError("%s: not a PEM private key (%s)" % (key_path, e))
    return _spki(key.public_key()) == _spki(cert.public_key())


def chain_problem(certs, roots):
    """None if the chain is sound, else what is wrong with it (operator's words)."""
    for i in range(len(certs) - 1):
        if not issued_by(certs[i], certs[i + 1]):
            return ("certificate %d (%s) is not issued by the next one in the file (%s)"
                    % (i + 1, _subject(certs[i]), _subject(certs[i + 1])))
    if roots is None:
        return None
    top = certs[-1]
    fingerprints = {r.fingerprint(top.signature_hash_algorithm or _sha256()) for r in roots}
    if top.fingerprint(top.signature_hash_algorithm or _sha256()) in fingerprints:
        return None
    if any(issued_by(top, root) for root in roots):
        return None
    return ("chain incomplete: %s is issued by %s, which is neither in the file nor a "
            "trusted root" % (_subject(top), top.issuer.rfc4514_string()))


def _sha256():
    from cryptography.hazmat.primitives import hashes
    return hashes.SHA256()


def load_crl(path):
    data = _read(path, "CRL")
    try:
        if b"-----BEGIN X509 CRL-----" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as e:
        raise nagiosplugin.CheckError("%s: not a CRL (%s)" % (path, e))


def crl_next_update(crl):
    value = getattr(crl, "next_update_utc", None)
    if value is not None:
        return value
    return crl.next_update.replace(tzinfo=_UTC) if crl.next_update else None


def _revocation_date(revoked):
    value = getattr(revoked, "revocation_date_utc", None)
    return value if value is not None else revoked.revocation_date.replace(tzinfo=_UTC)


class Certificate(nagiosplugin.Resource):
    def __init__(self, path, key_file=None, crl_file=None, ca_file=None, now=None):
        self.path = path
        self.key_file = key_file
        self.crl_file = crl_file
        self.ca_file = ca_file
        self.now = now
        self.notes = []

    @property
    def name(self):
        return NAME

    def probe(self):
        now = self.now or datetime.datetime.now(_UTC)
        certs = load_certificates(self.path)
        roots = load_certificates(self.ca_file) if self.ca_file else None
        leaf = certs[0]

        first = min(certs, key=_not_after)
        days = (_not_after(first) - now).total_seconds() / 86400.0
        self.notes.append("%s expires in %.0f days (%s)" % (
            _subject(leaf), days, _not_after(first).strftime("%Y-%m-%d")))
        if first is not leaf:
            self.notes[-1] += " [first to expire: %s]" % _subject(first)
        yield nagiosplugin.Metric("days", round(days, 2), context="days")

        early = [c for c in certs if _not_before(c) > now]
        yield nagiosplugin.Metric("validity", (not early, "%s is not valid before %s" % (
            _subject(early[0]), _not_before(early[0]).isoformat()) if early else None),
            context="validity")

        if self.key_file:
            match = key_matches(leaf, self.key_file)
            yield nagiosplugin.Metric("key", (match, None if match else
                                              "private key %s does not belong to %s"
                                              % (self.key_file, _subject(leaf))), context="key")
            if match:
                self.notes.append("key matches")

        problem = chain_problem(certs, roots)
        yield nagiosplugin.Metric("chain", (problem is None, problem), context="chain")
        if problem is None:
            self.notes.append("chain complete" if roots is not None else
                              "chain of %d consistent" % len(certs))

        if self.crl_file:
            for metric in self._revocation(leaf, certs[1:] + (roots or []), now):
                yield metric

    def _revocation(self, leaf, issuers, now):
        crl = load_crl(self.crl_file)
        if crl.issuer != leaf.issuer:
            raise nagiosplugin.CheckError("CRL %s is issued by %s, not by the certificate's "
                                          "issuer %s" % (self.crl_file, crl.issuer.rfc4514_string(),
                                                         leaf.issuer.rfc4514_string()))
        issuer = next((c for c in issuers if c.subject == leaf.issuer), None)
        if issuer is None:
            yield nagiosplugin.Metric("crl", (False, "cannot verify the CRL's signature: the "
                                              "issuer certificate is neither in the file nor "
                                              "in --ca"), context="crl")
        elif not crl.is_signature_valid(issuer.public_key()):
            raise nagiosplugin.CheckError("CRL %s has an invalid signature" % self.crl_file)
        next_update = crl_next_update(crl)
        if next_update is not None and next_update < now:
            yield nagiosplugin.Metric("crl", (False, "CRL %s is out of date (next update was "
                                              "due %s)" % (self.crl_file,
                                                           next_update.strftime("%Y-%m-%d %H:%M")
                                                           )), context="crl")
        revoked = crl.get_revoked_certificate_by_serial_number(leaf.serial_number)
        if revoked is not None:
            text = "%s (serial %x) was REVOKED on %s" % (
                _subject(leaf), leaf.serial_number,
                _revocation_date(revoked).strftime("%Y-%m-%d"))
            yield nagiosplugin.Metric("revocation", (False, text), context="revocation")
        else:
            self.notes.append("not revoked")
            yield nagiosplugin.Metric("revocation", (True, None), context="revocation")

    def headline(self):
        return "; ".join(self.notes)


def make_check(path, key_file=None, crl_file=None, ca_file=None, warning="30:",
               critical="14:", now=None):
    certificate = Certificate(path, key_file, crl_file, ca_file, now=now)
    return nagiosplugin.Check(
        certificate,
        nagiosplugin.ScalarContext("days", warning, critical,
                                   fmt_metric="expires in {value} days"),
        Fact("validity"), Fact("key"), Fact("chain"), Fact("revocation"),
        Fact("crl", bad_state=nagiosplugin.Warn),
        Headline(certificate.headline))
