"""Is the deployed email host healthy? Non-destructive checks from the control machine.

    python -m operations.status inventories/prod.py
    python -m operations.status --json inventories/lab.py
    python -m operations.status --source 10.0.3.2 inventories/lab.py

For every host of group `email`: each port of the inventory's `ports` table answers where it
must and is refused where it must not (from this machine); the certificate served on each TLS
port (implicit TLS and STARTTLS) verifies, covers its names and is not near its end;
STARTTLS is offered and no login before TLS; the SMTP banner and EHLO name; the DNS records
`python -m operations.dns_report` says must be published; and over SSH, with read-only
commands: every service of the deploy active, fail2ban's jails, the mail queue and the age of
the newest backup. No mail is sent and nothing is changed.

One line per check: OK, WARN, FAIL or SKIP, the check's name, what was found. Exit status 0
when no check failed (WARN and SKIP included), 1 when one did, 2 on bad usage.
"""
import argparse
import ipaddress
import json
import sys
from pathlib import Path

from operations import dns_checks, dns_report, host_checks, network_checks, probes
from operations.check_result import FAIL, VERDICTS, Result

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TIMEOUT = 10.0
# Commands on the host (the backup check reads the repository's catalog) may take longer
# than one network answer.
SSH_TIMEOUT_FACTOR = 6


class UsageError(Exception):
    """Bad options or inventory data; one problem per line of the message."""


def _parser():
    usage = __doc__.split("\n\n")
    parser = argparse.ArgumentParser(
        prog="python -m operations.status", description=usage[0],
        epilog="examples:\n" + usage[1] + "\n\n" + "\n\n".join(usage[2:]).strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inventory", help="inventory file, e.g. inventories/prod.py")
    parser.add_argument("--json", action="store_true",
                        help="a JSON list of {host, status, check, detail} instead of lines")
    parser.add_argument("--source", metavar="ADDR",
                        help="connect from this local address (default: inventory "
                             "status_source, else the route's)")
    parser.add_argument("--nameserver", metavar="ADDR",
                        help="resolver to ask for the DNS records (default: inventory "
                             "status_nameserver, else the system's)")
    parser.add_argument("--ca", metavar="FILE",
                        help="CA certificate(s), PEM, the served certificates must chain to "
                             "(default: inventory status_ca, else the system trust store)")
    parser.add_argument("--backup-max-age", metavar="HOURS", type=float,
                        help="FAIL when the newest backup is older (default: inventory "
                             "status_backup_max_age, 26 h)")
    parser.add_argument("--timeout", metavar="SECONDS", type=float, default=DEFAULT_TIMEOUT,
                        help=f"for each network answer (default {DEFAULT_TIMEOUT:g})")
    return parser


def _address(value, what, problems):
    try:
        ipaddress.ip_address(value)
    except ValueError:
        problems.append(f"{what}: {value!r} is not an IP address")


def settings(args, data):
    """The effective settings for one host: options over inventory data; UsageError listing
    every problem."""
    problems = []
    source = args.source or data.get("status_source")
    nameserver = args.nameserver or data.get("status_nameserver")
    ca = args.ca or data.get("status_ca")
    max_age = args.backup_max_age * 3600 if args.backup_max_age is not None \
        else data.get("status_backup_max_age")
    unpublished = data.get("status_dns_unpublished") or []
    if source is not None:
        _address(source, "--source/status_source", problems)
    if nameserver is not None:
        _address(nameserver, "--nameserver/status_nameserver", problems)
    if ca is not None:
        path = Path(ca) if Path(ca).is_absolute() or args.ca else REPO / ca
        if not path.is_file():
            problems.append(f"--ca/status_ca: {path} is not a readable file")
        ca = str(path)
    if not isinstance(max_age, (int, float)) or max_age <= 0:
        problems.append(f"--backup-max-age/status_backup_max_age: {max_age!r} must be a "
                        "positive number")
    bad = [k for k in unpublished if k not in dns_checks.KINDS]
    if bad:
        problems.append(f"status_dns_unpublished: {', '.join(map(str, bad))} not one of "
                        f"{', '.join(dns_checks.KINDS)}")
    if problems:
        raise UsageError("\n".join(problems))
    return {"source": source, "nameserver": nameserver, "ca": ca, "max_age": max_age,
            "unpublished": unpublished, "timeout": args.timeout}


def _check_options(args):
    """UsageError listing every problem of the command line (before the inventory is read)."""
    problems = []
    for value, what in ((args.source, "--source"), (args.nameserver, "--nameserver")):
        if value is not None:
            _address(value, what, problems)
    if args.ca is not None and not Path(args.ca).is_file():
        problems.append(f"--ca: {args.ca} is not a readable file")
    if args.backup_max_age is not None and not args.backup_max_age > 0:
        problems.append(f"--backup-max-age: {args.backup_max_age:g} must be positive")
    if not args.timeout > 0:
        problems.append(f"--timeout: {args.timeout:g} must be positive")
    if not Path(args.inventory).is_file():
        problems.append(f"{args.inventory}: no such inventory file")
    if problems:
        raise UsageError("\n".join(problems))


def network_results(data, address, opts):
    """Everything checked over the network from here."""
    ports, timeout, source = data["ports"], opts["timeout"], opts["source"]
    here = probes.local_address(address, 1, source)
    origins = network_checks.origin_of(here, data["trusted_hosts"])
    return (network_checks.port_checks(ports, data["trusted_hosts"], address, timeout, source)
            + network_checks.protocol_checks(ports, origins, address,
                                             data["hostnames"]["email"], timeout, source)
            + network_checks.certificate_checks(
                ports, data["certificates"], origins, address,
                data["certificate_warn_days"], timeout, ca_file=opts["ca"], source=source))


def ssh_results(host, data, opts):
    """Everything read from the host (DNS: what it needs, asked of the resolver)."""
    try:
        lines = dns_report.report(dns_report.report_data(host), dns_report.read_state(host))
    except Exception as exc:   # noqa: BLE001 (one line, whatever the host said)
        results = [Result(FAIL, "dns", f"cannot tell which records are needed: {exc}")]
    else:
        results = dns_checks.dns_checks(
            lines, dns_checks.resolver(opts["nameserver"], opts["timeout"]),
            opts["unpublished"])
    run = host_checks.pyinfra_runner(host, opts["timeout"] * SSH_TIMEOUT_FACTOR)
    return results + host_checks.host_checks(run, data, opts["max_age"])


def render(results, as_json):
    """The output for [(host name, Result)]: lines (the host prefixed when there are
    several), or one JSON list."""
    if as_json:
        return json.dumps([{"host": h, **r.as_dict()} for h, r in results], indent=2)
    several = len({h for h, _ in results}) > 1
    lines = [(f"{h}: " if several else "") + r.line() for h, r in results]
    counts = {v: sum(1 for _, r in results if r.status == v) for v in VERDICTS}
    lines.append("summary: " + ", ".join(f"{counts[v]} {v}" for v in VERDICTS))
    return "\n".join(lines)


def exit_status(results):
    return 1 if any(r.status == FAIL for _, r in results) else 0


def options(inventory):
    """The options of `python -m operations.status INVENTORY` given nothing else (everything
    left to the inventory's status_* data), for callers in this process."""
    return argparse.Namespace(inventory=inventory, json=False, source=None, nameserver=None,
                              ca=None, backup_max_age=None, timeout=DEFAULT_TIMEOUT)


def collect(args):
    """[(host name, Result)] of every check for parsed `args`; UsageError or
    dns_report.InventoryUnusable before any host is contacted when they are unusable."""
    _check_options(args)
    opts = {}

    def validate(hosts):
        problems = []
        for host in hosts:
            try:
                opts[host.name] = settings(args, host.data.dict())
            except UsageError as exc:
                problems += [f"{host.name}: {line}" for line in str(exc).splitlines()]
        if problems:
            raise UsageError("\n".join(problems))

    results = []
    with dns_report.email_hosts(args.inventory, before_connecting=validate) as hosts:
        for host, connected in hosts:
            data = host.data.dict()
            address = data.get("ssh_hostname") or host.name
            found = network_results(data, address, opts[host.name])
            if connected:
                found += ssh_results(host, data, opts[host.name])
            else:
                found.append(Result(FAIL, "ssh", f"cannot connect to {address}: DNS "
                                                 "and host checks not made"))
            results += [(host.name, r) for r in found]
    return results


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        results = collect(args)
    except (UsageError, dns_report.InventoryUnusable) as exc:
        for line in str(exc).splitlines():
            print(f"python -m operations.status: {line}", file=sys.stderr)
        return 2
    print(render(results, args.json))
    return exit_status(results)


if __name__ == "__main__":
    sys.exit(main())
