"""The DNS records the deployed email host needs, read from the host's real state.

    python -m operations.dns_report inventories/prod.py
    python -m operations.dns_report --json inventories/prod.py

Connects (over SSH, with the inventory's connection settings) to every host of group `email`
and prints zone-file lines: A and AAAA (the addresses of the interface holding the default
route), MX, SSHFP (from the host's SSH host keys), SPF, DKIM (once a key exists on the host)
and TLSRPT. With --json the same records, one object each (name, class, type, value), and the
report's comments as notes, per host. Nothing is changed on the host. The formatting functions
are pure, so they are tested without a host.
"""
import argparse
import base64
import contextlib
import datetime
import hashlib
import ipaddress
import json
import re
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

# SSHFP algorithm numbers (RFC 4255, 6594, 7479, 8709) by SSH key type.
SSHFP_ALGORITHMS = {
    "ssh-rsa": 1,
    "ssh-dss": 2,
    "ecdsa-sha2-nistp256": 3,
    "ecdsa-sha2-nistp384": 3,
    "ecdsa-sha2-nistp521": 3,
    "ssh-ed25519": 4,
    "ssh-ed448": 6,
}
# SSHFP fingerprint types: 1 = SHA-1, 2 = SHA-256.
SSHFP_HASHES = {1: hashlib.sha1, 2: hashlib.sha256}
# Where OpenDKIM keys live on the host: <dir>/<domain>/<selector>.private.
DKIM_KEY_DIR = "/etc/opendkim/keys"


class ReportError(Exception):
    """The host's state cannot be turned into records; the message says what was read."""


def fqdn(name):
    """`name` as an absolute DNS name (with the trailing dot)."""
    return name if name.endswith(".") else name + "."


def record(name, rtype, value):
    """One zone-file line."""
    return f"{fqdn(name)}\tIN\t{rtype}\t{value}"


def txt_value(text):
    """`text` as TXT character-strings: quoted, split into pieces of at most 255 bytes."""
    pieces = [text[i:i + 255] for i in range(0, len(text), 255)] or [""]
    return " ".join('"' + p.replace("\\", "\\\\").replace('"', '\\"') + '"' for p in pieces)


def sshfp_records(name, public_keys):
    """SSHFP lines for `name` from OpenSSH public key lines ("type base64 [comment]").

    Both fingerprint types (1 SHA-1, 2 SHA-256) for each key, keys in algorithm order.
    """
    found = []
    for line in public_keys:
        fields = line.split()
        if not fields or line.lstrip().startswith("#"):
            continue
        if len(fields) < 2 or fields[0] not in SSHFP_ALGORITHMS:
            raise ReportError(f"not an SSH public key line: {line!r}")
        try:
            blob = base64.b64decode(fields[1], validate=True)
        except ValueError:
            raise ReportError(f"SSH public key of type {fields[0]} is not base64") from None
        found.append((SSHFP_ALGORITHMS[fields[0]], blob))
    lines = []
    for algorithm, blob in sorted(found):
        for fp_type, digest in sorted(SSHFP_HASHES.items()):
            lines.append(record(name, "SSHFP",
                                f"{algorithm} {fp_type} {digest(blob).hexdigest()}"))
    return lines


def address_records(names, addresses):
    """A and AAAA lines for each of `names`, one per address (global addresses only)."""
    parsed = sorted((ipaddress.ip_address(a) for a in addresses),
                    key=lambda a: (a.version, a))
    return [record(name, "A" if a.version == 4 else "AAAA", str(a))
            for name in names for a in parsed]


def default_route_addresses(ip_addr_output, ip_route_output):
    """The global addresses of the interfaces that carry a default route.

    + ip_addr_output: `ip -o addr show scope global`
    + ip_route_output: `ip -o route show default; ip -o -6 route show default`
    Falls back to every global address when there is no default route.
    """
    devices = set(re.findall(r"\bdev (\S+)", ip_route_output))
    addresses = []
    for line in ip_addr_output.splitlines():
        match = re.match(r"\d+:\s+(\S+)\s+inet6?\s+([0-9a-fA-F.:]+)/\d+", line)
        if match and (not devices or match.group(1) in devices):
            addresses.append(match.group(2))
    return addresses


def mx_record(domain, mail_host, preference=10):
    return record(domain, "MX", f"{preference} {fqdn(mail_host)}")


def spf_record(domain, relayhost=None):
    """SPF for `domain`: its MX hosts send, plus the relay when mail leaves through one."""
    mechanisms = ["mx"]
    if relayhost:
        # Postfix syntax: [host]:port or host:port; only the host name matters here.
        relay = re.sub(r"^\[|\](:\d+)?$|:\d+$", "", relayhost)
        mechanisms.append(f"a:{relay}")
    return record(domain, "TXT", txt_value(f"v=spf1 {' '.join(mechanisms)} ~all"))


def dkim_record(domain, selector, public_key_pem):
    """The DKIM TXT line for `selector` from the signing key's public half (PEM)."""
    key = serialization.load_pem_public_key(public_key_pem.encode())
    if isinstance(key, rsa.RSAPublicKey):
        der = key.public_bytes(serialization.Encoding.DER,
                               serialization.PublicFormat.SubjectPublicKeyInfo)
        value = f"v=DKIM1; h=sha256; k=rsa; p={base64.b64encode(der).decode()}"
    elif isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        value = f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"
    else:
        raise ReportError(f"DKIM key {selector}: neither RSA nor Ed25519")
    return record(f"{selector}._domainkey.{domain}", "TXT", txt_value(value))


def parse_dkim_keys(output):
    """{selector: public key PEM} from the remote DKIM listing (see `_DKIM_COMMAND`)."""
    keys, selector, pem = {}, None, []
    for line in output.splitlines():
        if line.startswith("selector "):
            selector, pem = line.split(None, 1)[1].strip(), []
        elif selector:
            pem.append(line)
            if line.startswith("-----END"):
                keys[selector] = "\n".join(pem) + "\n"
                selector = None
    return keys


def tlsrpt_record(domain):
    return record(f"_smtp._tls.{domain}", "TXT",
                  txt_value(f"v=TLSRPTv1; rua=mailto:postmaster@{domain}"))


def report(data, state):
    """All lines for one host.

    + data: the host's inventory data (hostnames, mail_domain, relayhost)
    + state: what was read from the host: {"public_keys": [...], "addresses": [...],
      "dkim": {selector: pem}}
    """
    domain = data["mail_domain"]
    email, community = data["hostnames"]["email"], data["hostnames"]["community"]
    names = [email] + ([community] if community != email else [])
    lines = [f"; DNS records for {email} (mail domain {domain}), read from the host"]
    lines += address_records(names, state["addresses"])
    versions = {ipaddress.ip_address(a).version for a in state["addresses"]}
    if 4 not in versions:
        lines.append("; no global IPv4 address on the host: no A record")
    if 6 not in versions:
        lines.append("; no global IPv6 address on the host: no AAAA record")
    lines.append(mx_record(domain, email))
    lines += sshfp_records(email, state["public_keys"])
    lines.append(spf_record(domain, data.get("relayhost")))
    if state["dkim"]:
        lines += [dkim_record(domain, s, pem) for s, pem in sorted(state["dkim"].items())]
    else:
        lines.append(f"; DKIM is not set up: no key in {DKIM_KEY_DIR}/{domain}/ on the host")
    lines.append(tlsrpt_record(domain))
    lines.append(f"; MTA-STS is not published: it needs a policy host mta-sts.{domain}")
    return lines


# --- reading the host (over SSH, through pyinfra) -----------------------------------------------

_KEYS_COMMAND = "cat /etc/ssh/ssh_host_*_key.pub 2>/dev/null || true"
_ADDR_COMMAND = "ip -o addr show scope global"
_ROUTE_COMMAND = "ip -o route show default; ip -o -6 route show default 2>/dev/null || true"
_DKIM_COMMAND = ('for f in {dir}/{domain}/*.private; do [ -f "$f" ] || continue; '
                 's=${{f##*/}}; echo "selector ${{s%.private}}"; openssl pkey -in "$f" -pubout; '
                 'done')


def read_state(host):
    """What `report` needs, read from a connected pyinfra host."""
    from pyinfra.facts.server import Command

    def run(command):
        return host.get_fact(Command, command=command) or ""

    domain = host.data.mail_domain
    return {
        "public_keys": run(_KEYS_COMMAND).splitlines(),
        "addresses": default_route_addresses(run(_ADDR_COMMAND), run(_ROUTE_COMMAND)),
        "dkim": parse_dkim_keys(run(_DKIM_COMMAND.format(dir=DKIM_KEY_DIR, domain=domain))),
    }


def render(reports, as_json, now):
    """The command's output for [(host name, lines of `report`)] generated at `now` (pure).

    Text: per host, a comment with the time, then its lines (a zone-file fragment).
    JSON: {"generated": ISO time, "hosts": [{"host", "records": [{"name", "class", "type",
    "value"}], "notes": [comment text]}]}.
    """
    if not as_json:
        return "\n".join(f"; {now:%Y-%m-%d %H:%M} UTC\n" + "\n".join(lines)
                         for _, lines in reports)
    hosts = []
    for name, lines in reports:
        records, notes = [], []
        for line in lines:
            if line.startswith(";"):
                notes.append(line[1:].strip())
            else:
                owner, cls, rtype, value = line.split("\t", 3)
                records.append({"name": owner, "class": cls, "type": rtype, "value": value})
        hosts.append({"host": name, "records": records, "notes": notes})
    return json.dumps({"generated": now.isoformat(), "hosts": hosts}, indent=2)


def _parser():
    usage = __doc__.split("\n\n")
    return argparse.ArgumentParser(
        prog="python -m operations.dns_report", description=usage[0],
        epilog="examples:\n" + usage[1] + "\n\n" + "\n\n".join(usage[2:]).strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter)


class InventoryUnusable(Exception):
    """The inventory names no email host; the message says so."""


@contextlib.contextmanager
def email_hosts(inventory_path, before_connecting=None, group="email"):
    """The hosts of group `email` (or `group`) of an inventory file, connected over SSH
    (pyinfra's API), disconnected again on leaving: [(host, connected?)].

    `before_connecting(hosts)`, when given, runs once the inventory is read and before any
    host is contacted (to validate what the caller needs of their data: it raises to stop).

    A host that cannot be reached is listed with False (and pyinfra's own message printed to
    stderr), so that a caller can still report what it can tell without it.
    """
    from pyinfra.api import Config, State
    from pyinfra.api.connect import connect_all, disconnect_all
    from pyinfra.api.exceptions import PyinfraError
    from pyinfra.context import ctx_state
    from pyinfra_cli.inventory import make_inventory

    # As pyinfra's own CLI does: the inventory file is read with a state in context.
    state = State()
    ctx_state.set(state)
    inventory = make_inventory(inventory_path)
    hosts = inventory.get_group(group, [])
    if not hosts:
        raise InventoryUnusable(f"{inventory_path}: no host in group `{group}`")
    if before_connecting is not None:
        before_connecting(hosts)
    state.init(inventory, Config(), initial_limit=hosts)  # connect to the group's hosts only
    try:
        connect_all(state)
    except PyinfraError as exc:
        print(f"{inventory_path}: could not connect to the {group} host(s): {exc}",
              file=sys.stderr)
    try:
        yield [(host, host in state.activated_hosts) for host in hosts]
    finally:
        disconnect_all(state)


def report_data(host):
    """What `report` needs of a host's inventory data."""
    return {"mail_domain": host.data.mail_domain, "hostnames": host.data.hostnames,
            "relayhost": host.data.relayhost}


def main(argv=None):
    """`python -m operations.dns_report [--json] INVENTORY`: the records for each email host."""
    parser = _parser()
    parser.add_argument("inventory", help="inventory file, e.g. inventories/prod.py")
    parser.add_argument("--json", action="store_true",
                        help="machine-readable records (one JSON document) instead of "
                             "zone-file lines")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    reports = []
    try:
        with email_hosts(args.inventory) as hosts:
            for host, connected in hosts:
                if not connected:
                    print(f"{host.name}: could not connect", file=sys.stderr)
                    return 1
                reports.append((host.name, report(report_data(host), read_state(host))))
    except InventoryUnusable as exc:
        print(exc, file=sys.stderr)
        return 2
    print(render(reports, args.json, datetime.datetime.now(datetime.timezone.utc)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
