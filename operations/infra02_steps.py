"""The shape shared by the commands that rebuild containers on Infra02 (operations/upgrade.py,
operations/rebuild.py): steps run one after the other, each recorded with its result and
duration; pyinfra's own CLI on a derived inventory; commands on Infra02 through pyinfra's
connection; the checks that apply to a container before it serves; the output as lines or
as one JSON object.

A step is a dict {step, ok, seconds, detail[, held]}: `detail` a text (the last lines of a
script's output) or a list of check results (Result.as_dict()); `held` marks the steps during
which mail is held (the figures say for how long).
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def record(steps, name, action, held=False):
    """Run `action()` ((ok, detail)), append the step with its duration (and whether mail was
    held during it) to `steps`; True if it succeeded."""
    started = time.monotonic()
    ok, detail = action()
    steps.append({"step": name, "ok": ok, "seconds": round(time.monotonic() - started, 1),
                  "detail": detail, **({"held": True} if held else {})})
    return ok


def pyinfra(inventory_file, env, limit, dry=False):
    """One run of pyinfra's CLI on `inventory_file` (relative to the repository) with the
    extra `env`, `--limit limit`; its exit status. Its output goes to stderr as it comes on
    a terminal; otherwise (cron, a monthly rehearsal) only the end of a failed run's, so
    that a good run prints nothing there."""
    # --dry without -y: pyinfra then lists the changes it detected.
    command = [str(Path(sys.executable).with_name("pyinfra")), inventory_file, "deploy.py",
               "--limit", limit] + (["--dry"] if dry else ["-y"])
    env = dict(os.environ, **env)
    if sys.stderr.isatty():
        return subprocess.run(command, cwd=REPO, env=env, stdout=sys.stderr).returncode
    result = subprocess.run(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace")
    if result.returncode != 0:
        sys.stderr.write("\n".join(result.stdout.splitlines()[-60:]) + "\n")
    return result.returncode


class Unreachable(Exception):
    """Infra02 cannot be reached; nothing was changed."""


def on_infra02(inventory, work, timeout):
    """`work(run)` with `run(command) -> (exit status, output)` on the inventory's Infra02
    (each command at most `timeout` seconds): its result. Unreachable when Infra02 cannot
    be reached."""
    from operations import dns_report, host_checks

    with dns_report.email_hosts(inventory, group="infra02") as hosts:
        host, connected = hosts[0]
        if not connected:
            raise Unreachable(f"cannot connect to Infra02 ({host.name})")
        return work(host_checks.pyinfra_runner(host, timeout))


def output_tail(code, output, lines=12):
    """A script step's detail: the last `lines` lines of its output, or its exit status."""
    tail = (output or "").strip().splitlines()
    return "\n".join(tail[-lines:]) or ("done" if code == 0 else f"exit {code}")


def container_checks(inventory_file, env, options_inventory, skip_ports=(), skip_units=(),
                     extra=None):
    """The status checks of operations/status.py that apply to a container that does not
    serve yet, on the email hosts of `inventory_file` (a derived inventory, read with `env`):
    its ports (but `skip_ports`) and certificates, its services (but `skip_units`), the mail
    queue, and `extra(run, data)` -> [Result]. No DNS (the records name the serving
    container). [(host name, Result)]."""
    from operations import dns_report, host_checks, status
    from operations.check_result import FAIL, Result

    # The derived inventory reads them, loaded here in this process.
    os.environ.update(env)
    # status's own options, all left to the inventory's status_* data.
    args = status.options(options_inventory)
    results = []
    with dns_report.email_hosts(str(REPO / inventory_file)) as hosts:
        for host, connected in hosts:
            data = host.data.dict()
            data["ports"] = {k: v for k, v in data["ports"].items() if k not in skip_ports}
            opts = status.settings(args, data)
            address = data["ssh_hostname"]
            found = status.network_results(data, address, opts)
            if not connected:
                found.append(Result(FAIL, "ssh", f"cannot connect to {address}"))
            else:
                run = host_checks.pyinfra_runner(
                    host, opts["timeout"] * status.SSH_TIMEOUT_FACTOR)
                units = [u for u in host_checks.expected_units(data) if u not in skip_units]
                found += host_checks.service_checks(run, units)
                if extra:
                    found += extra(run, data)
                found.append(host_checks.mailq_check(run))
            results += [(host.name, r) for r in found]
    return results


def render(steps, as_json, next_step=None, held_text="delivery held", extra=None):
    """The steps as lines (each with its duration, the total, how long mail was held, what
    to do next), or as one JSON object {steps, ok[, held_seconds], **extra[, next]}."""
    held = any(s.get("held") for s in steps)
    held_seconds = round(sum(s["seconds"] for s in steps if s.get("held")), 1)
    if as_json:
        return json.dumps({"steps": steps, "ok": all(s["ok"] for s in steps),
                           **({"held_seconds": held_seconds} if held else {}),
                           **(extra or {}),
                           **({"next": next_step} if next_step else {})}, indent=2)
    lines = []
    for s in steps:
        lines.append(f"{'OK  ' if s['ok'] else 'FAIL'} {s['step']} ({s['seconds']:g} s)")
        if isinstance(s["detail"], list):
            lines += [f"       {r['status']} {r['check']}: {r['detail']}" for r in s["detail"]]
        else:
            lines += [f"       {line}" for line in str(s["detail"]).splitlines()]
    lines.append(f"total {sum(s['seconds'] for s in steps):g} s")
    if held:
        lines.append(f"{held_text} {held_seconds:g} s")
    if next_step:
        lines.append(f"next: {next_step}")
    return "\n".join(lines)


def print_refusal(command, exc, as_json):
    """A refused command's report (nothing was changed): its reasons on stderr, one per line,
    and with --json `{ok: false, refused: [...]}` on stdout. Returns the exit status, 2."""
    print(f"{command} refused, nothing was changed:", file=sys.stderr)
    for line in str(exc).splitlines():
        print(f"  {line}", file=sys.stderr)
    if as_json:
        print(json.dumps({"ok": False, "refused": str(exc).splitlines()}, indent=2))
    return 2
