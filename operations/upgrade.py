"""Upgrade by rebuild: a successor container of a newer Debian beside the serving one.

    python -m operations.upgrade inventories/prod.py prepare --release trixie
    python -m operations.upgrade inventories/lab.py prepare --dry
    python -m operations.upgrade --json inventories/lab.py prepare

prepare: builds `<container_name>-next` on Infra02 (Debian --release, eth0 = the inventory's
successor_net, the data volume mounted read-only), runs the full deploy in it, then the status
checks that make sense before a cut-over. The serving container is never touched: its rootfs
is only read (the successor boots with its SSH host keys, so SSHFP and known_hosts stay true),
and the volume's owner marker, which names it, keeps the successor's Dovecot off the volume
(operations/volume_owner.py). Re-running prepare finishes or refreshes the successor.

The deploy is pyinfra's own CLI on inventories/successor.py (the given inventory with the
successor's data, operations/successor.py): first `--limit infra02` (the container), then
`--limit email` (its contents), as for any container. pyinfra's output goes to stderr; each
step's result and duration to stdout (one JSON object with --json). Exit status 0 when every
step succeeded, 1 when one failed, 2 on bad usage or inventory.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from operations import successor
from operations.check_result import FAIL, OK, Result
from operations.secrets import InventoryError

REPO = Path(__file__).resolve().parents[1]
SUCCESSOR_INVENTORY = "inventories/successor.py"
# Dovecot's ports, and Icinga's: their daemons wait for the cut-over in a successor.
WAITING_PORTS = ("imap", "imaps", "pop3", "pop3s", "sieve", "icinga2")
WAITING_UNITS = ("dovecot", "icinga2")


def _parser():
    usage = __doc__.split("\n\n")
    parser = argparse.ArgumentParser(
        prog="python -m operations.upgrade", description=usage[0],
        epilog="examples:\n" + usage[1] + "\n\n" + "\n\n".join(usage[2:]).strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true",
                        help="one JSON object with every step instead of lines")
    parser.add_argument("inventory", help="the serving inventory, e.g. inventories/prod.py")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    prepare = sub.add_parser("prepare", help="build and deploy the successor container")
    prepare.add_argument("--release", default="trixie", choices=successor.RELEASES,
                         help="Debian release of the successor (default trixie)")
    prepare.add_argument("--dry", action="store_true",
                         help="pyinfra --dry: say what the deploy would do, change nothing "
                              "(the container part only: the successor does not exist yet)")
    return parser


def _pyinfra(inventory, release, limit, dry):
    """One pyinfra run on the successor's inventory; its output to stderr; the exit status."""
    env = dict(os.environ, **{successor.ENV_INVENTORY: str(Path(inventory).resolve()),
                              successor.ENV_RELEASE: release})
    # --dry without -y: pyinfra then lists the changes it detected.
    command = [str(Path(sys.executable).with_name("pyinfra")), SUCCESSOR_INVENTORY,
               "deploy.py", "--limit", limit] + (["--dry"] if dry else ["-y"])
    return subprocess.run(command, cwd=REPO, env=env, stdout=sys.stderr).returncode


def _step(steps, name, action):
    """Run `action()` (True: succeeded), record the step with its duration; True if it
    succeeded."""
    started = time.monotonic()
    ok, detail = action()
    steps.append({"step": name, "ok": ok, "seconds": round(time.monotonic() - started, 1),
                  "detail": detail})
    return ok


def checks_before_cutover(inventory, release):
    """The status checks that make sense before a cut-over, on the successor: its ports and
    certificates but Dovecot's and Icinga's, its services but those two, Dovecot kept off
    the volume, the mail queue. (No DNS: the records name the serving container; no backup:
    the successor has made none yet.) [(host name, Result)]."""
    from operations import dns_report, host_checks, status

    # inventories/successor.py reads them, loaded here in this process.
    os.environ.update({successor.ENV_INVENTORY: str(Path(inventory).resolve()),
                       successor.ENV_RELEASE: release})
    # status's own options, all left to the inventory's status_* data.
    args = argparse.Namespace(source=None, nameserver=None, ca=None, backup_max_age=None,
                              timeout=status.DEFAULT_TIMEOUT)
    results = []
    with dns_report.email_hosts(str(REPO / SUCCESSOR_INVENTORY)) as hosts:
        for host, connected in hosts:
            data = host.data.dict()
            data["ports"] = {k: v for k, v in data["ports"].items() if k not in WAITING_PORTS}
            opts = status.settings(args, data)
            address = data["ssh_hostname"]
            found = status.network_results(data, address, opts)
            if not connected:
                found.append(Result(FAIL, "ssh", f"cannot connect to {address}"))
            else:
                run = host_checks.pyinfra_runner(
                    host, opts["timeout"] * status.SSH_TIMEOUT_FACTOR)
                units = [u for u in host_checks.expected_units(data) if u not in WAITING_UNITS]
                found += host_checks.service_checks(run, units)
                found.append(_dovecot_waits(run, data))
                found.append(host_checks.mailq_check(run))
            results += [(host.name, r) for r in found]
    return results


def _dovecot_waits(run, data):
    """Dovecot is not running and the volume's marker names the serving container."""
    marker = f"{data['data_volume']}/.cacert-owner"
    code, output = run(f"systemctl is-active dovecot; head -n 1 {marker}")
    lines = (output or "").split()
    state, owner = (lines + ["", ""])[:2]
    if state != "active" and owner == data["successor_of"]:
        return Result(OK, "dovecot waits", f"{state}; {marker} names {owner}")
    return Result(FAIL, "dovecot waits", f"dovecot {state or 'unknown'}, {marker} names "
                                         f"{owner or 'nobody'} (expected not running, "
                                         f"{data['successor_of']})")


def prepare(args):
    """The steps of `prepare`: [{step, ok, seconds, detail}]."""
    steps = []
    ok = _step(steps, "container (Infra02)", lambda: (
        _pyinfra(args.inventory, args.release, "infra02", args.dry) == 0,
        f"pyinfra --limit infra02{' --dry' if args.dry else ''}"))
    if ok and not args.dry:
        ok = _step(steps, "deploy (successor)", lambda: (
            _pyinfra(args.inventory, args.release, "email", False) == 0,
            "pyinfra --limit email"))
    if ok and not args.dry:
        def run_checks():
            results = checks_before_cutover(args.inventory, args.release)
            failed = [r for _, r in results if r.status == FAIL]
            return not failed, [r.as_dict() for _, r in results]
        _step(steps, "checks before cut-over", run_checks)
    return steps


def render(steps, as_json):
    if as_json:
        return json.dumps({"steps": steps, "ok": all(s["ok"] for s in steps)}, indent=2)
    lines = []
    for s in steps:
        lines.append(f"{'OK  ' if s['ok'] else 'FAIL'} {s['step']} ({s['seconds']:g} s)")
        if isinstance(s["detail"], list):
            lines += [f"       {r['status']} {r['check']}: {r['detail']}" for r in s["detail"]]
        else:
            lines.append(f"       {s['detail']}")
    lines.append(f"total {sum(s['seconds'] for s in steps):g} s")
    return "\n".join(lines)


def main(argv=None):
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        successor.load(args.inventory, args.release)   # every problem, before any host
    except InventoryError as exc:
        for line in str(exc).splitlines():
            print(f"python -m operations.upgrade: {line}", file=sys.stderr)
        return 2
    steps = prepare(args)
    print(render(steps, args.json))
    return 0 if all(s["ok"] for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
