"""The status checks read on the host over SSH, with read-only commands: services active,
fail2ban's jails, the mail queue, the age of the newest backup.

`run(command) -> (exit status, output)` is how a check reaches the host; operations/status.py
gives it pyinfra's SSH connection (`pyinfra_runner`). The queue and the backup are judged by
the server's own plugins (`mailstore check mailq`, `mailstore check backup`: the same code the
Icinga agent runs), so the status command and the monitoring never disagree on them.
"""
import re
import shlex
from pathlib import Path

from operations import crl, migration, monitoring
from operations.check_result import FAIL, OK, WARN, Result

REPO = Path(__file__).resolve().parents[1]
JAIL_TEMPLATE = REPO / "files" / "fail2ban" / "jail.local.j2"
# systemd units every deploy leaves running, whatever the data says (base, firewall,
# fail2ban, mariadb, postfix, dovecot, nginx, icinga2_agent); the data adds the rest.
DEPLOYED_UNITS = ("ssh", "cron", "rsyslog", "nftables", "fail2ban", "mariadb", "postfix",
                  "dovecot", "nginx", "icinga2", f"{crl.UNIT}.timer")
# monitoring-plugins exit status -> verdict (3 UNKNOWN: the check could not tell: a failure).
PLUGIN_VERDICTS = {0: OK, 1: WARN, 2: FAIL}
_EXIT_MARK = "__status_exit "


def expected_units(data):
    """The systemd units that must be active on the host, from the deploy and its data."""
    units = list(DEPLOYED_UNITS)
    for pair in data["certificates"].values():
        units += pair.get("services", [])
    units += data["crl_consumers"]
    if data["dkim_signing"]:
        units.append("opendkim")
    return sorted(set(units))


def expected_jails(template=JAIL_TEMPLATE):
    """The fail2ban jails the deploy writes: the sections of its jail.local template."""
    return sorted(set(re.findall(r"^\[([^\]\s]+)\]", template.read_text(), re.M)) - {"DEFAULT"})


# pyinfra's connector arguments an inventory may set as host data (e.g. production's Infra02
# reached as an operator who becomes root with sudo): pyinfra applies them to operations, but
# a command run directly on the host gets only what is passed here.
SUDO_ARGUMENTS = ("_sudo", "_sudo_user", "_use_sudo_login")


def pyinfra_runner(host, timeout):
    """`run(command)` over a connected pyinfra host: (exit status, stdout and stderr). Run
    with the host's sudo settings (SUDO_ARGUMENTS) when its data has them."""
    from pyinfra.api.command import StringCommand

    sudo = {name: host.data.get(name) for name in SUDO_ARGUMENTS
            if host.data.get(name) not in (None, False, "")}

    def run(command):
        wrapped = f"{{ {command} ; }} 2>&1; echo \"{_EXIT_MARK}$?\""
        try:
            _, output = host.run_shell_command(StringCommand(wrapped), _timeout=timeout,
                                               **sudo)
        except Exception as exc:   # noqa: BLE001 (gevent's Timeout is no Exception subclass)
            return None, f"{type(exc).__name__}: {exc}"
        return _split_exit("\n".join(output.stdout_lines + output.stderr_lines))
    return run


def _split_exit(text):
    """(exit status, output) of a wrapped command's output; the mark may follow output that
    did not end its last line. (None, text) when the mark is missing (the command was cut
    short)."""
    at = text.rfind(_EXIT_MARK)
    code = text[at + len(_EXIT_MARK):].strip() if at >= 0 else ""
    if not code.isdigit():
        return None, text
    return int(code), text[:at].rstrip("\n")


def _unreachable(check, code, output):
    if code is None:
        return Result(FAIL, check, f"command did not finish: {output.strip()[:200]}")
    return None


def service_checks(run, units):
    """One result per unit: `systemctl is-active` says active."""
    code, output = run("systemctl is-active " + " ".join(shlex.quote(u) for u in units))
    failed = _unreachable("services", code, output)
    if failed:
        return [failed]
    states = output.split("\n")
    results = []
    for i, unit in enumerate(units):
        state = states[i].strip() if i < len(states) else "(no answer)"
        results.append(Result(OK if state == "active" else FAIL, f"service {unit}", state))
    return results


def fail2ban_checks(run, jails):
    """fail2ban answers, and every jail of the deploy is running."""
    code, output = run("fail2ban-client status")
    failed = _unreachable("fail2ban", code, output)
    if failed:
        return [failed]
    if code != 0:
        return [Result(FAIL, "fail2ban", f"not running: {output.strip()[:200]}")]
    match = re.search(r"Jail list:\s*(.*)", output)
    running = [j.strip() for j in match.group(1).split(",")] if match else []
    missing = [j for j in jails if j not in running]
    if missing:
        return [Result(FAIL, "fail2ban", f"jails not running: {', '.join(missing)} "
                                         f"(running: {', '.join(running) or 'none'})")]
    return [Result(OK, "fail2ban", f"running, jails {', '.join(jails)}")]


def plugin_check(run, check, command):
    """A monitoring plugin run on the host: its status line is the detail."""
    code, output = run(command)
    failed = _unreachable(check, code, output)
    if failed:
        return failed
    # the status line without its perfdata
    line = output.strip().split("\n")[0].split(" | ")[0] if output.strip() else "(no output)"
    return Result(PLUGIN_VERDICTS.get(code, FAIL), check,
                  line if code in PLUGIN_VERDICTS else f"exit {code}: {line}")


def mailq_check(run):
    """The mail queue, by `mailstore check mailq` (also FAIL while the mail migration holds
    delivery)."""
    return plugin_check(run, "mail queue", f"{monitoring.MAILSTORE} check mailq --held "
                                           f"{migration.HELD_FILE}")


def backup_check(run, data, max_age):
    """The newest complete backup snapshot is at most `max_age` seconds old (and the last
    verify found nothing damaged), by `mailstore check backup`."""
    age = str(int(max_age))
    return plugin_check(run, "backup", " ".join(shlex.quote(a) for a in [
        monitoring.MAILSTORE, "check", "backup", "--repo", data["backup_repository"],
        "--key-file", data["backup_key_file"], "-w", age, "-c", age]))


def host_checks(run, data, backup_max_age):
    """Every check read on the host."""
    return (service_checks(run, expected_units(data))
            + fail2ban_checks(run, expected_jails())
            + [mailq_check(run), backup_check(run, data, backup_max_age)])
