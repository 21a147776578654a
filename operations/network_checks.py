"""The status checks made over the network from the control machine: which ports answer,
the certificate each TLS port serves, STARTTLS, no login before TLS, the SMTP names.

Inputs are the host's inventory data (`ports`, `trusted_hosts`, `certificates`, `hostnames`,
`certificate_warn_days`) and the address to probe; the probes are operations/probes.py. Which
port speaks which protocol and serves which certificate is the deploy's own layout (Postfix's
main.cf serves the `email` pair on port 25, master.cf, Dovecot and nginx the `community` pair
on the others), written down once here.
"""
import datetime
import ipaddress

from cryptography import x509
from cryptography.x509.oid import NameOID

from operations import probes
from operations.check_result import FAIL, OK, SKIP, WARN, Result

# Port name (a key of `ports`) -> how TLS starts on it.
TLS_PROTOCOLS = {"smtp": "smtp", "submission": "smtp", "smtps": probes.IMPLICIT_TLS,
                 "imap": "imap", "imaps": probes.IMPLICIT_TLS, "pop3": "pop3",
                 "pop3s": probes.IMPLICIT_TLS, "sieve": "sieve",
                 "https": probes.IMPLICIT_TLS}
# Port name -> the `certificates` pair it serves (the rest: DEFAULT_PAIR).
CERTIFICATE_PAIRS = {"smtp": "email"}
DEFAULT_PAIR = "community"
# Ports that must offer STARTTLS, and those that must not offer a login before it (port 25
# takes no logins at all: AUTH there would be a finding too).
STARTTLS_REQUIRED = ("smtp", "submission", "imap", "pop3")
NO_LOGIN_BEFORE_TLS = ("smtp", "submission", "imap", "pop3", "sieve")


def _label(name, port):
    return f"{name}/{port}"


def origin_of(address, trusted_hosts):
    """The names in `trusted_hosts` whose addresses or networks hold `address`."""
    if address is None:
        return []
    ip = ipaddress.ip_address(address)
    found = []
    for name, entries in sorted(trusted_hosts.items()):
        for entry in entries:
            network = ipaddress.ip_network(entry, strict=False)
            if ip.version == network.version and ip in network:
                found.append(name)
                break
    return found


def reachable_here(entry, origins):
    """Should this port answer a connection from this machine? (origin "any", or one of
    `origins`; "local" never: this machine is not the host itself)."""
    return entry["from"] == "any" or entry["from"] in origins


def port_checks(ports, trusted_hosts, address, timeout, source=None,
                probe=probes.reachability):
    """One result per port of `ports` (and a SKIP for the half a trusted port cannot show
    from here): open where it must answer, refused (or silent) where it must not."""
    here = probes.local_address(address, 1, source)
    origins = origin_of(here, trusted_hosts)
    who = f"{here} ({', '.join(origins)})" if origins else f"{here}"
    results = []
    for name, entry in sorted(ports.items(), key=lambda item: (item[1]["port"], item[0])):
        port, origin = entry["port"], entry["from"]
        check = f"port {_label(name, port)}"
        state, detail = probe(address, port, timeout, source)
        if reachable_here(entry, origins):
            if state == "open":
                results.append(Result(OK, check, f"answers from {who} (allowed: {origin})"))
            else:
                results.append(Result(FAIL, check, f"must answer from {who} (allowed: "
                                                   f"{origin}), but: {detail}"))
        elif state == "open":
            results.append(Result(FAIL, check, f"answers from {who}, but only {origin} "
                                               "may connect"))
        elif state in ("refused", "timeout"):
            results.append(Result(OK, check, f"{detail} from {who} (only {origin} may "
                                             "connect)"))
        else:
            results.append(Result(FAIL, check, f"must be refused from {who}, but: {detail}"))
        if origin not in ("any", "local"):
            if origin in origins:
                results.append(Result(SKIP, f"{check} refused from others",
                                      f"cannot be tested from {here}: it is a {origin} "
                                      "address (try --source with an untrusted one)"))
            else:
                results.append(Result(SKIP, f"{check} answers {origin}",
                                      f"cannot be tested from {here}: not a {origin} "
                                      f"address (try --source with one of trusted_hosts"
                                      f"[{origin!r}])"))
    return results


def _names(cert):
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return san.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        return [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def name_matches(pattern, name):
    """RFC 6125 matching: exact (case-insensitive), or a left-most `*` label for one label."""
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if pattern == name:
        return True
    if pattern.startswith("*.") and "." in name:
        return name.split(".", 1)[1] == pattern[2:]
    return False


def _validity(cert):
    """(not before, not after) as aware UTC datetimes (the *_utc properties are
    cryptography >= 42; the deploy extra allows 41)."""
    if hasattr(cert, "not_valid_after_utc"):
        return cert.not_valid_before_utc, cert.not_valid_after_utc
    utc = datetime.timezone.utc
    return cert.not_valid_before.replace(tzinfo=utc), cert.not_valid_after.replace(tzinfo=utc)


def judge_certificate(peer, names, warn_days, now):
    """(status, detail) of a served certificate (`probes.TlsPeer`): its chain verified, it
    covers every one of `names`, and it is valid for at least `warn_days` more days (WARN
    below that, FAIL once expired or not yet valid). Pure."""
    cert = x509.load_der_x509_certificate(peer.certificate)
    not_before, not_after = _validity(cert)
    left = (not_after - now).total_seconds() / 86400
    served = _names(cert)
    problems = []
    if now < not_before:
        problems.append(f"not valid before {not_before:%Y-%m-%d %H:%M} UTC")
    if left < 0:
        problems.append(f"expired {not_after:%Y-%m-%d %H:%M} UTC ({-left:.0f} days ago)")
    missing = [n for n in names if not any(name_matches(s, n) for s in served)]
    if missing:
        problems.append(f"does not cover {', '.join(missing)} (names: "
                        f"{', '.join(served) or 'none'})")
    if peer.verify_error and not (left < 0 and "expired" in peer.verify_error):
        problems.append(f"chain does not verify: {peer.verify_error}")
    if problems:
        return FAIL, "; ".join(problems)
    summary = f"{', '.join(names)}, verified, {left:.0f} days left (until {not_after:%Y-%m-%d})"
    if left < warn_days:
        return WARN, f"{summary}: fewer than certificate_warn_days ({warn_days})"
    return OK, summary


def certificate_checks(ports, certificates, origins, address, warn_days, timeout,
                       ca_file=None, source=None, now=None, peer=probes.tls_peer):
    """One result per TLS port reachable from here: the certificate it serves."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    results = []
    for name, protocol in TLS_PROTOCOLS.items():
        entry = ports.get(name)
        if entry is None or not reachable_here(entry, origins):
            continue
        names = certificates[CERTIFICATE_PAIRS.get(name, DEFAULT_PAIR)]["names"]
        check = f"cert {_label(name, entry['port'])}"
        try:
            served = peer(address, entry["port"], protocol, names[0], timeout,
                          ca_file=ca_file, source=source)
        except probes.ProbeError as exc:
            results.append(Result(FAIL, check, f"no TLS session: {exc}"))
            continue
        status, detail = judge_certificate(served, names, warn_days, now)
        results.append(Result(status, check, detail))
    return results


def judge_greeting(name, port, greet, hostname):
    """Results for one plaintext greeting (`probes.Greeting`): STARTTLS offered, no login
    before TLS, and for SMTP the banner's and the EHLO reply's name. Pure."""
    label = _label(name, port)
    results = []
    if name in STARTTLS_REQUIRED:
        results.append(Result(OK, f"starttls {label}", "offered") if greet.starttls else
                       Result(FAIL, f"starttls {label}", "not offered (capabilities: "
                              f"{' '.join(greet.capabilities) or 'none'})"))
    if name in NO_LOGIN_BEFORE_TLS:
        offered = greet.auth_without_tls()
        results.append(Result(FAIL, f"no login before TLS {label}",
                              f"offered without TLS: {', '.join(offered)}") if offered else
                       Result(OK, f"no login before TLS {label}", "none offered"))
    if greet.protocol == "smtp":
        words = greet.banner.split()
        banner_name = words[0] if words else ""
        results.append(Result(OK if banner_name == hostname else FAIL, f"smtp banner {label}",
                              f"{greet.banner!r}" + ("" if banner_name == hostname
                                                     else f", expected {hostname}")))
        results.append(Result(OK if greet.ehlo_name == hostname else FAIL,
                              f"smtp ehlo name {label}", f"{greet.ehlo_name!r}" + (
                                  "" if greet.ehlo_name == hostname
                                  else f", expected {hostname}")))
    return results


def protocol_checks(ports, origins, address, hostname, timeout, source=None,
                    greeting=probes.greeting):
    """The plaintext facts of every STARTTLS port reachable from here."""
    results = []
    for name, protocol in TLS_PROTOCOLS.items():
        entry = ports.get(name)
        if protocol == probes.IMPLICIT_TLS or entry is None or \
                not reachable_here(entry, origins):
            continue
        try:
            greet = greeting(address, entry["port"], protocol, timeout, source)
        except probes.ProbeError as exc:
            results.append(Result(FAIL, f"greeting {_label(name, entry['port'])}", str(exc)))
            continue
        results += judge_greeting(name, entry["port"], greet, hostname)
    return results
