"""Upgrade by rebuild: a successor container of a newer Debian beside the serving one.

    python -m operations.upgrade inventories/prod.py prepare --release trixie
    python -m operations.upgrade inventories/lab.py prepare --dry
    python -m operations.upgrade --json inventories/lab.py prepare
    python -m operations.upgrade inventories/prod.py cutover --dry
    python -m operations.upgrade inventories/prod.py cutover
    python -m operations.upgrade inventories/prod.py rollback

prepare: builds `<container_name>-next` on Infra02 (Debian --release, eth0 = the inventory's
successor_net, the data volume mounted read-only), runs the full deploy in it, then the status
checks that make sense before a cut-over. The serving container is never touched: its rootfs
is only read (the successor boots with its SSH host keys, so SSHFP and known_hosts stay true),
and the volume's owner marker, which names it, keeps the successor's Dovecot off the volume
(operations/volume_owner.py). Re-running prepare finishes or refreshes the successor.

cutover: hands the service to the prepared successor (operations/handover.py): delivery
held on the old container (Postfix accepts and queues, nothing bounces), Dovecot stopped,
`cacertusers`, the Postfix queue, the DKIM key, the Icinga agent's certificate and the backup
repository carried over, the old container stopped (never destroyed: renamed `<name>-prev`,
no autostart), the successor renamed `<name>` with the old one's NICs, MACs and addresses and
the data volume read-write, started, delivery resumed; then the full status check
(operations/status.py) is the gate. rollback: the same handover back to the old container
(the database, queue and backup repository of the successor carried back when it served).
Both read Infra02's state first and refuse, listing every problem, when it does not fit
(no successor, not prepared, already cut over); a failed step stops the run and says to run
`rollback`; a failed gate leaves the service where it is and says so (no automatic rollback).
With --dry they stop after the check and list the steps they would run.

The deploy is pyinfra's own CLI on inventories/successor.py (the given inventory with the
successor's data, operations/successor.py): first `--limit infra02` (the container), then
`--limit email` (its contents), as for any container. pyinfra's output goes to stderr; each
step's result and duration to stdout (one JSON object with --json). Exit status 0 when every
step succeeded, 1 when one failed (or the gate), 2 on bad usage or inventory, or when the
state refuses a cut-over or rollback (nothing was changed).
"""
import argparse
import json
import os
import sys
from pathlib import Path

from operations import handover, infra02_steps, successor
from operations.check_result import FAIL, OK, Result
from operations.defaults import defaults
from operations.secrets import InventoryError

SUCCESSOR_INVENTORY = "inventories/successor.py"
# Dovecot's ports, and Icinga's: their daemons wait for the cut-over in a successor.
WAITING_PORTS = ("imap", "imaps", "pop3", "pop3s", "sieve", "icinga2")
WAITING_UNITS = ("dovecot", "icinga2")
# For one step's commands on Infra02 (the backup repository's copy may take minutes).
HOST_TIMEOUT = 1800


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
    for command, text in (("cutover", "hand the service to the prepared successor"),
                          ("rollback", "give the service back to the old container")):
        sub.add_parser(command, help=text).add_argument(
            "--dry", action="store_true",
            help="read Infra02's state, check it and list the steps; change nothing "
                 "(--json: with each step's script)")
    return parser


def _pyinfra(inventory, release, limit, dry):
    """One pyinfra run on the successor's inventory; its output to stderr; the exit status."""
    return infra02_steps.pyinfra(SUCCESSOR_INVENTORY, _env(inventory, release), limit, dry)


def _env(inventory, release):
    """What inventories/successor.py reads."""
    return {successor.ENV_INVENTORY: str(Path(inventory).resolve()),
            successor.ENV_RELEASE: release}


_step = infra02_steps.record


def checks_before_cutover(inventory, release):
    """The status checks that make sense before a cut-over, on the successor: its ports and
    certificates but Dovecot's and Icinga's, its services but those two, Dovecot kept off
    the volume, the mail queue. (No DNS: the records name the serving container; no backup:
    the successor has made none yet.) [(host name, Result)]."""
    return infra02_steps.container_checks(
        SUCCESSOR_INVENTORY, _env(inventory, release), inventory, WAITING_PORTS,
        WAITING_UNITS, lambda run, data: [_dovecot_waits(run, data)])


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


def _data(inventory):
    """(serving, successor): the merged Infra02 data of the serving inventory and of its
    successor (the release does not matter to the containers' configs)."""
    hosts = successor.serving(inventory)["infra02"]
    if len(hosts) != 1:
        raise InventoryError(f"{inventory}: group `infra02` must hold exactly one host, "
                             f"not {len(hosts)}")
    data = hosts[0][1]
    serving = {**defaults(), **data}
    problems = handover.check_data(serving)
    if problems:
        raise InventoryError("\n".join(f"{hosts[0][0]}: {line}" for line in problems))
    return serving, {**defaults(), **successor.derive(data, "trixie")}


def _on_infra02(inventory, work):
    """`work(run)` with `run(command)` on the inventory's Infra02: its result. Refused when
    Infra02 cannot be reached."""
    try:
        return infra02_steps.on_infra02(inventory, work, HOST_TIMEOUT)
    except infra02_steps.Unreachable as exc:
        raise handover.Refused(str(exc)) from None


def _plan(args, serving, derived, run):
    """(the plan's steps, {"source"|"target": its Debian release}) from Infra02's state;
    Refused listing every problem."""
    name = serving["container_name"]
    code, output = run(handover.facts_command(name, serving["data_volume_host_path"]))
    if code != 0:
        raise handover.Refused(f"reading the containers' state on Infra02 failed: {output}")
    facts = handover.parse_facts(output)
    found, problems = handover.check(args.command, name, facts)
    if problems:
        raise handover.Refused("\n".join(problems))
    steps = handover.plan(args.command, found, facts, serving, derived)
    return steps, {role: facts["containers"][getattr(found, role)].release
                   for role in ("source", "target")}


def _run_plan(plan, steps, run):
    for step in plan:
        def action(step=step):
            code, output = run(handover.bash(step.script))
            return code == 0, infra02_steps.output_tail(code, output)
        if not _step(steps, step.name, action, held=step.held):
            return False
    return True


def handover_steps(args):
    """The steps of `cutover` or `rollback`, and what the operator does next (None when
    everything succeeded). Refused before anything changed."""
    from operations import status

    serving, derived = _data(args.inventory)
    name = serving["container_name"]
    steps = []
    # Validated first, everything at once; read again below (the checks take a while).
    plan, releases = _on_infra02(args.inventory, lambda run: _plan(args, serving, derived,
                                                                   run))
    if args.dry:
        return [{"step": s.name, "ok": True, "seconds": 0,
                 "detail": s.script if args.json else
                 ("(delivery held)" if s.held else "(before the hold)")} for s in plan], \
            f"--dry: nothing was changed; `{args.command}` without --dry runs these steps"
    if args.command == "cutover":
        def run_checks():
            results = checks_before_cutover(args.inventory, releases["target"] or "trixie")
            return (not any(r.status == FAIL for _, r in results),
                    [r.as_dict() for _, r in results])
        if not _step(steps, "checks before cut-over", run_checks):
            return steps, ("nothing was changed: make the successor's checks pass "
                           "(`prepare` again), then run cutover again")
    done = _on_infra02(args.inventory, lambda run: _run_plan(
        _plan(args, serving, derived, run)[0], steps, run))
    if not done and not any(s.get("held") for s in steps):
        return steps, (f"the {args.command} stopped at `{steps[-1]['step']}`, before "
                       f"delivery was held: the service never left the container that has "
                       f"it; fix the cause and run {args.command} again (`prepare` first "
                       f"when the successor was stopped)")
    if not done:
        return steps, (f"the {args.command} stopped at `{steps[-1]['step']}`: run "
                       f"`python -m operations.upgrade {args.inventory} rollback` to give "
                       f"the service back to the container that had it"
                       + (" (or fix the cause and run rollback, then prepare and cutover "
                          "again)" if args.command == "cutover" else
                          "; a rollback that stops too: read the step's output, fix the "
                          "cause and run it again"))

    def gate():
        try:
            results = status.collect(status.options(args.inventory))
        except Exception as exc:   # noqa: BLE001 (one line, whatever went wrong)
            return False, f"the status check did not run: {exc}"
        return (not any(r.status == FAIL for _, r in results),
                [r.as_dict() for _, r in results])
    if not _step(steps, "status (gate)", gate):
        if args.command == "cutover":
            return steps, (f"{name} (the successor) serves now, but its status check failed: "
                           f"fix what failed, or give the service back with `python -m "
                           f"operations.upgrade {args.inventory} rollback`")
        return steps, (f"{name} (the old container) serves again, but its status check "
                       "failed: fix what failed")
    release = releases["target"]
    if release and release != serving["debian_release"]:
        # Else the next deploy stops: the container runs another release than the inventory's.
        return steps, (f"{name} runs Debian {release} now: set debian_release = {release!r} "
                       f"in {args.inventory} before the next deploy")
    return steps, None


def render(steps, as_json, next_step=None):
    return infra02_steps.render(steps, as_json, next_step,
                                held_text="delivery held and Dovecot stopped")


def main(argv=None):
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        # every problem, before any host
        successor.load(args.inventory, getattr(args, "release", "trixie"))
    except InventoryError as exc:
        for line in str(exc).splitlines():
            print(f"python -m operations.upgrade: {line}", file=sys.stderr)
        return 2
    if args.command == "prepare":
        steps, next_step = prepare(args), None
    else:
        try:
            steps, next_step = handover_steps(args)
        except (handover.Refused, InventoryError) as exc:
            return infra02_steps.print_refusal(
                f"python -m operations.upgrade: {args.command}", exc, args.json)
    print(render(steps, args.json, next_step))
    return 0 if all(s["ok"] for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
