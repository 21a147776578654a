"""The status checks of published DNS: every record operations.dns_report says the host
needs, asked of a resolver (dnspython), one result per record.

The expected records are dns_report's own lines (`report()`), so this never disagrees with
what the operator was told to publish. Kinds an environment's zone does not carry (inventory
`status_dns_unpublished`, e.g. the lab's dnsmasq has no SSHFP) are reported as SKIP, one line
per kind, saying so.
"""
import dns.exception
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver

from operations.check_result import FAIL, OK, SKIP, Result

KINDS = ("A", "AAAA", "MX", "SSHFP", "DKIM", "SPF", "DMARC", "MTA-STS", "TLSRPT")


class LookupFailed(Exception):
    """The resolver gave no usable answer; the message says which (NXDOMAIN, no record of
    that type, timeout, ...)."""


def expected_records(report_lines):
    """[(name, type, value)] of dns_report's zone-file lines (comments left out)."""
    records = []
    for line in report_lines:
        if line.startswith(";") or not line.strip():
            continue
        name, _cls, rtype, value = line.split("\t", 3)
        records.append((name, rtype, value))
    return records


def kind(name, rtype, value):
    """The kind of a record, as KINDS names it (TXT records by what they carry)."""
    if rtype != "TXT":
        return rtype
    label = name.split(".", 1)[0].lower()
    if "._domainkey." in name.lower():
        return "DKIM"
    if label == "_dmarc":
        return "DMARC"
    if label == "_mta-sts":
        return "MTA-STS"
    if name.lower().startswith("_smtp._tls."):
        return "TLSRPT"
    if "v=spf1" in value:
        return "SPF"
    return "TXT"


def _comparable(rdata):
    """What makes two rdata the same record: TXT by its joined text (a zone may split the
    character-strings anywhere), the rest by dnspython's canonical form."""
    if rdata.rdtype == dns.rdatatype.TXT:
        return b"".join(rdata.strings)
    return rdata.to_text().lower()


def compare(rtype, value, answers):
    """(status, detail) of one expected record against the rdata text the resolver returned
    for its name and type (pure)."""
    rdtype = dns.rdatatype.from_text(rtype)
    wanted = _comparable(dns.rdata.from_text(dns.rdataclass.IN, rdtype, value))
    found = [_comparable(dns.rdata.from_text(dns.rdataclass.IN, rdtype, a)) for a in answers]
    if wanted in found:
        return OK, "published"
    shown = "; ".join(a[:80] for a in answers)
    return FAIL, f"different: published {shown} (expected {value[:120]})"


def resolver(nameserver, timeout, port=53):
    """`lookup(name, type) -> [rdata text]` asking `nameserver` on `port` (None: the system's
    resolvers), every query bounded by `timeout` seconds; LookupFailed when it cannot."""
    res = dns.resolver.Resolver(configure=nameserver is None)
    if nameserver is not None:
        res.nameservers = [nameserver]
        res.port = port
    res.lifetime = timeout
    res.timeout = timeout

    def lookup(name, rtype):
        try:
            answer = res.resolve(name, rtype, raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN:
            raise LookupFailed("missing: the name does not exist (NXDOMAIN)") from None
        except dns.exception.Timeout:
            raise LookupFailed(f"no answer from the resolver within {timeout:g}s") from None
        except dns.exception.DNSException as exc:
            raise LookupFailed(f"lookup failed: {exc}") from None
        if answer.rrset is None:
            raise LookupFailed(f"missing: no {rtype} record at this name")
        return [r.to_text() for r in answer.rrset]
    return lookup


def dns_checks(report_lines, lookup, unpublished=()):
    """One result per record of the report (SKIP once per kind in `unpublished`)."""
    results, skipped, cache = [], set(), {}
    for name, rtype, value in expected_records(report_lines):
        what = kind(name, rtype, value)
        if what in unpublished:
            if what not in skipped:
                skipped.add(what)
                results.append(Result(SKIP, f"dns {what}", "not checked: this environment's "
                                      "zone does not carry it (status_dns_unpublished)"))
            continue
        check = f"dns {what} {name}" + (f" {value.split()[0]} {value.split()[1]}"
                                         if rtype == "SSHFP" else "")
        if (name, rtype) not in cache:
            try:
                cache[name, rtype] = lookup(name, rtype)
            except LookupFailed as exc:
                cache[name, rtype] = exc
        answers = cache[name, rtype]
        if isinstance(answers, LookupFailed):
            results.append(Result(FAIL, check, f"{answers} (expected {rtype} {value[:120]})"))
        else:
            status, detail = compare(rtype, value, answers)
            results.append(Result(status, check, detail))
    return results
