"""Rebuild the container from backups, in one command; or rehearse it in a scratch container.

    python -m operations.rebuild inventories/prod.py --from /srv/backup-copy/mailstore
    python -m operations.rebuild inventories/prod.py --from /srv/backup-copy/mailstore --dry
    python -m operations.rebuild inventories/prod.py --from /srv/backup-copy/mailstore --rehearse
    python -m operations.rebuild --json inventories/lab.py --from /srv/r --rehearse --cleanup

From this repository, the secrets directory ($CACERT_EMAIL_SECRETS, its `backup.key`) and a
backup repository REPO on Infra02 (--from: a local copy, or the backup host's copy made
available there), the container is created, deployed with the inbound hold (every RCPT
answered 450, nothing bounced), the database, keys, configs and every user's mail restored
(IMAP UIDs, UIDVALIDITY, flags and sieve scripts as they were), and only then deployed
without the hold (port 25 accepts mail for the restored users, the queue is flushed); the
status check is the gate. Each step is printed with what it restored and its duration.

--rehearse: the same into the scratch container `<name>-rehearsal` (eth0 = successor_net,
its own scratch data directory, nothing of production's mounted or taken over, the hold
left on), then Dovecot counts the restored messages and the checks that apply run; at the
end the scratch container is stopped (--cleanup: destroyed, its directory removed). A
stopped earlier rehearsal is replaced. For an operator or a monthly timer: it proves that
the backups restore, without touching production.

Refused before anything changes, every problem listed (exit 2): the container exists (a
rebuild never overwrites one: destroy it deliberately, or --rehearse), the data volume is
not empty, REPO is missing, does not open with the key, or lacks the snapshot, the inventory
is invalid. Exit 0 when every step succeeded, 1 when one failed (the output says what next).
With --dry the check runs and the steps are listed (--json: with their scripts).
"""
import argparse
import base64
import json
import os
import sys
import tempfile
from pathlib import Path

from operations import infra02_steps, rebuild_inventory, rebuild_plan, successor
from operations.check_result import FAIL
from operations.defaults import defaults
from operations.handover import Refused, bash
from operations.secrets import InventoryError, read_backup_key

PROG = "python -m operations.rebuild"
REBUILD_INVENTORY = "inventories/rebuild.py"
# One step's commands on Infra02: the mail's restore may take hours.
HOST_TIMEOUT = 8 * 3600


def _parser():
    usage = __doc__.split("\n\n")
    parser = argparse.ArgumentParser(
        prog=PROG, description=usage[0],
        epilog="examples:\n" + usage[1] + "\n\n" + "\n\n".join(usage[2:]).strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inventory", help="the inventory, e.g. inventories/prod.py")
    parser.add_argument("--from", dest="repository", required=True, metavar="REPO",
                        help="the backup repository: a directory on Infra02")
    parser.add_argument("--snapshot", default="latest",
                        help="the snapshot to restore (an id, default latest)")
    parser.add_argument("--rehearse", action="store_true",
                        help="into the scratch container <name>-rehearsal; production "
                             "untouched")
    parser.add_argument("--cleanup", action="store_true",
                        help="with --rehearse: destroy the scratch container at the end")
    parser.add_argument("--dry", action="store_true",
                        help="check and list the steps; change nothing")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object {steps, ok, restored, next}")
    return parser


def _hosts(inventory, rehearse):
    """(Infra02's merged data, the email host's merged data as the first deploy has it, the
    address the email host is reached at); InventoryError lists every problem."""
    groups = successor.serving(inventory)
    problems = [f"{inventory}: group `{g}` must hold exactly one host"
                for g in ("infra02", "email") if len(groups[g]) != 1]
    if problems:
        raise InventoryError("\n".join(problems))
    infra02_name, infra02_data = groups["infra02"][0]
    email_name, email_data = groups["email"][0]
    problems = [f"{email_name}: {line}" for line in
                rebuild_inventory.check({**defaults(), **email_data}, rehearse)]
    if problems:
        raise InventoryError("\n".join(problems))
    derived = {**defaults(), **rebuild_inventory.derive(email_data, rehearse)}
    if not rehearse:
        # Where the repository goes depends on Infra02's mounts (a separate disk).
        derived["container_mounts"] = {**defaults(), **infra02_data}["container_mounts"]
    if rehearse:
        address = successor.address_of({**defaults(), **email_data})
    else:
        address = email_data.get("ssh_hostname") or email_name
    return {**defaults(), **infra02_data}, derived, address


def _read_state(run, target, email_data, key_file, work_dir):
    """Every problem of Infra02's state and the repository, and whether a stopped earlier
    rehearsal is there."""
    disk = None if target.rehearse else rebuild_plan.repository_in_container(email_data)
    code, output = run(rebuild_plan.facts_command(target, disk))
    if code != 0:
        raise Refused(f"reading Infra02's state failed: {output}")
    facts = rebuild_plan.parse_facts(output)
    problems = rebuild_plan.check(target, facts, email_data)
    # The key and the snapshot are checked whenever there is a catalog to check them in,
    # so that a refusal lists them with the other problems.
    if facts["config"] is not None and \
            {"catalog.sqlite", "catalog.sealed"} & set(facts["catalog"]):
        files = {"config.json": facts["config"]}
        for name in facts["catalog"]:
            if name == rebuild_plan.SEALED_CHUNKS and "catalog.sqlite" in facts["catalog"]:
                continue    # a whole repository: its clear catalog is read
            code, text = run(rebuild_plan.catalog_command(target.repository, name))
            if code != 0:
                raise Refused(f"reading {target.repository}/{name} failed: {text}")
            files[name] = base64.b64decode("".join(text.split()))
        repo_dir = Path(work_dir) / "repository"
        repo_dir.mkdir(mode=0o700)
        problems += rebuild_plan.repository_problems(target, files, key_file, str(repo_dir))
    if problems:
        raise Refused("\n".join(problems))
    return target.name in facts["containers"]


def _known_hosts(output, address):
    """known_hosts lines trusting the public host keys in `output` (the .pub files) for
    `address`."""
    lines = []
    for line in output.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].startswith(("ssh-", "ecdsa-")):
            lines.append(f"{address} {fields[0]} {fields[1]}\n")
    return "".join(lines)


def _restored(output, restored):
    """Add the `restored KEY VALUE` and `restored-json {...}` lines of a step's output."""
    for line in (output or "").splitlines():
        word, _, rest = line.partition(" ")
        if word == "restored-json":
            try:
                result = json.loads(rest)
            except ValueError:
                continue
            for key in ("messages", "bytes", "files", "snapshot"):
                if key in result:
                    restored["mail_files" if key == "files" else key] = result[key]
        elif word == "restored":
            key, _, value = rest.partition(" ")
            restored[key] = int(value) if value.strip().isdigit() else value.strip()


def _gate(args, env):
    from operations import status

    if args.rehearse:
        # Icinga's agent stays stopped in a rehearsal; port 25 answers (with the hold).
        results = infra02_steps.container_checks(
            REBUILD_INVENTORY, env, args.inventory, skip_ports=("icinga2",),
            skip_units=("icinga2",))
    else:
        results = status.collect(status.options(args.inventory))
    return (not any(r.status == FAIL for _, r in results),
            [r.as_dict() for _, r in results])


def run_steps(args, plan, run, env, address, state_dir, restored):
    """Run `plan`'s steps one after the other; the recorded steps."""
    steps = []
    for step in plan:
        def action(step=step):
            if step.kind == "pyinfra":
                inventory = REBUILD_INVENTORY if step.derived else args.inventory
                code = infra02_steps.pyinfra(inventory, env if step.derived else {},
                                             step.limit)
                return code == 0, f"pyinfra {inventory} --limit {step.limit}: exit {code}"
            if step.kind == "gate":
                try:
                    return _gate(args, env)
                except Exception as exc:   # noqa: BLE001 (one line, whatever went wrong)
                    return False, f"the checks did not run: {exc}"
            code, output = run(bash(step.script))
            if step.kind == "known_hosts":
                lines = _known_hosts(output or "", address) if code == 0 else ""
                if not lines:
                    return False, f"no host keys in the new container: {output}"
                path = state_dir / "new-container.known_hosts"
                path.write_text(lines)
                env[rebuild_inventory.ENV_KNOWN_HOSTS] = str(path)
                return True, f"{len(lines.splitlines())} keys trusted for {address}"
            _restored(output, restored)
            return code == 0, infra02_steps.output_tail(code, output)
        if not infra02_steps.record(steps, step.name, action, held=step.held):
            break
    return steps


def _next(args, steps, target, plan):
    if all(s["ok"] for s in steps) and len(steps) >= len(plan):
        if args.rehearse:
            return None if args.cleanup else (
                f"the backups restore; {target.name} is stopped (`lxc-destroy -n "
                f"{target.name}` or the next rehearsal removes it)")
        return None
    failed = next((s["step"] for s in steps if not s["ok"]), steps[-1]["step"])
    if args.rehearse:
        return (f"the rehearsal failed at `{failed}`: the backups did NOT restore as they "
                f"should; production was not touched. Read the step's output")
    if failed == "status (gate)":
        return (f"{target.name} is rebuilt and accepts mail, but its status check failed: "
                "fix what failed")
    if failed == "deploy without hold":
        return (f"everything was restored, but the deploy that ends the hold failed: mail "
                f"is still deferred (450); fix the cause and run `pyinfra {args.inventory} "
                "deploy.py --limit email`")
    return (f"the rebuild stopped at `{failed}`: port 25 answers 450 (senders retry) or "
            f"nothing; fix the cause, then `lxc-destroy -n {target.name}`, empty "
            f"{target.volume_host_path} and run the rebuild again")


def rebuild(args, work_dir):
    """(steps, restored, next step). Refused (nothing changed) or InventoryError."""
    infra02_data, email_data, address = _hosts(args.inventory, args.rehearse)
    target = rebuild_plan.target(infra02_data, args.repository, args.snapshot, args.rehearse)
    # The key as a 0600 file of a 0700 directory: mailstore reads it there, no command line.
    key_file = None
    if email_data["backup_encrypt"]:
        key_file = Path(work_dir) / "backup.key"
        key_file.touch(mode=0o600)
        key_file.write_text(read_backup_key(email_data["backup_key_secret"]))
    env = {rebuild_inventory.ENV_INVENTORY: str(Path(args.inventory).resolve()),
           **({rebuild_inventory.ENV_REHEARSE: "1"} if args.rehearse else {})}
    restored = {}

    def work(run):
        previous = _read_state(run, target, email_data, key_file and str(key_file), work_dir)
        plan = rebuild_plan.plan(target, email_data, previous_rehearsal=previous)
        if args.dry:
            return [{"step": s.name, "ok": True, "seconds": 0,
                     "detail": (s.script or f"pyinfra --limit {s.limit}") if args.json else
                     ("(inbound hold)" if s.held else s.kind), **({"held": True} if s.held
                                                                 else {})}
                    for s in plan], "--dry: nothing was changed; without --dry these run"
        steps = run_steps(args, plan, run, env, address, Path(work_dir), restored)
        if args.rehearse and steps:
            # Whatever happened: the scratch container never stays running.
            finish = rebuild_plan.finish_rehearsal(target, args.cleanup)

            def stop():
                code, output = run(bash(finish.script))
                return code == 0, infra02_steps.output_tail(code, output)
            infra02_steps.record(steps, finish.name, stop)
        return steps, _next(args, steps, target, plan)

    try:
        steps, next_step = infra02_steps.on_infra02(args.inventory, work, HOST_TIMEOUT)
    except infra02_steps.Unreachable as exc:
        raise Refused(str(exc)) from None
    return steps, restored, next_step


def render(steps, restored, as_json, next_step):
    if as_json:
        return infra02_steps.render(steps, True, next_step, extra={"restored": restored})
    text = infra02_steps.render(steps, False, next_step,
                                held_text="inbound hold (port 25 answers 450)")
    if restored:
        text += "\nrestored: " + ", ".join(f"{k} {v}" for k, v in restored.items())
    return text


def main(argv=None):
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    problems = rebuild_plan.check_arguments(args.repository, args.snapshot)
    if args.cleanup and not args.rehearse:
        problems.append("--cleanup: only with --rehearse (a rebuild's container stays)")
    try:
        # every problem of the inventory and its derived data, before any host
        rebuild_inventory.load(args.inventory, args.rehearse)
    except InventoryError as exc:
        problems += str(exc).splitlines()
    if problems:
        for line in problems:
            print(f"{PROG}: {line}", file=sys.stderr)
        return 2
    try:
        with tempfile.TemporaryDirectory(prefix="cacert-rebuild-") as work_dir:
            os.chmod(work_dir, 0o700)
            steps, restored, next_step = rebuild(args, work_dir)
    except (Refused, InventoryError) as exc:
        return infra02_steps.print_refusal(
            f"{PROG}: {'rehearsal' if args.rehearse else 'rebuild'}", exc, args.json)
    print(render(steps, restored, args.json, next_step))
    return 0 if steps and all(s["ok"] for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
