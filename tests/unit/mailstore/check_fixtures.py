"""Helpers for the check plugin tests: run the CLI and read its status line, a throwaway PKI."""
import datetime
import re

from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from mailstore.cli import main

UTC = datetime.timezone.utc
DAY = datetime.timedelta(days=1)
# NAME STATE - text | perfdata ; perfdata items: label=value[uom];[warn];[crit];[min];[max]
STATUS_LINE = re.compile(r"^(?P<name>[A-Z ]+) (?P<state>OK|WARNING|CRITICAL|UNKNOWN)"
                         r"(?: - (?P<text>[^|\n]*?))?(?: \| (?P<perf>[^\n]*))?$")
PERF_ITEM = re.compile(r"^'?[^=']+'?=-?[0-9.]+(?:[a-zA-Z%]+)?(?:;[^;\s]*){0,4}$")
EXIT = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}


def check(*args):
    """Run `mailstore check ARGS`; return (exit code, first line, parsed status match)."""
    result = CliRunner().invoke(main, ["check"] + [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    out = result.stdout if hasattr(result, "stdout") else result.output
    first = out.split("\n", 1)[0]
    m = STATUS_LINE.match(first)
    assert m, "not a plugin status line: %r" % out
    assert EXIT[m.group("state")] == result.exit_code, (result.exit_code, out)
    if m.group("perf"):
        for item in m.group("perf").split(" "):
            assert PERF_ITEM.match(item), "bad perfdata item %r in %r" % (item, first)
    return result.exit_code, first, m


def perfdata(m):
    """{label: (value, uom, warn, crit, min, max)} from a status line match."""
    out = {}
    for item in (m.group("perf") or "").split(" "):
        if not item:
            continue
        label, rest = item.split("=", 1)
        fields = rest.split(";")
        vm = re.match(r"^(-?[0-9.]+)([a-zA-Z%]*)$", fields[0])
        fields += [""] * (5 - len(fields))
        out[label] = (float(vm.group(1)), vm.group(2)) + tuple(fields[1:5])
    return out


# --- a throwaway PKI ---------------------------------------------------------------------
def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def new_key(kind="ec"):
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def make_cert(cn, key, issuer=None, issuer_key=None, ca=False, not_before=None,
              not_after=None, serial=None):
    now = datetime.datetime.now(UTC)
    return (x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(issuer.subject if issuer is not None else _name(cn))
            .public_key(key.public_key())
            .serial_number(serial or x509.random_serial_number())
            .not_valid_before(not_before or now - DAY)
            .not_valid_after(not_after or now + 365 * DAY)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(issuer_key or key, hashes.SHA256()))


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


def write_pem(path, *objs):
    with open(str(path), "wb") as f:
        for obj in objs:
            if hasattr(obj, "private_bytes"):
                f.write(obj.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
            else:
                f.write(obj.public_bytes(serialization.Encoding.PEM))
    return str(path)


class PKI:
    """Root CA -> intermediate CA -> leaf certificates."""

    def __init__(self):
        self.root_key = new_key()
        self.root = make_cert("Check Test Root", self.root_key, ca=True)
        self.inter_key = new_key()
        self.inter = make_cert("Check Test Intermediate", self.inter_key, self.root,
                               self.root_key, ca=True)

    def leaf(self, cn="community.cacert.test", days=90.0, **kwargs):
        key = new_key()
        now = datetime.datetime.now(UTC)
        cert = make_cert(cn, key, self.inter, self.inter_key,
                         not_after=now + datetime.timedelta(days=days), **kwargs)
        return cert, key
