"""Passive results (``mailstore icinga push``): run a check, submit what it said.

The check runs in a child process (:func:`run_check`); its plugin text is split into output
and perfdata the way the monitoring-plugins API defines it (:func:`parse_plugin_output`) and
submitted through an :class:`~mailstore.icinga.Api` as the service's check result.
"""
import re
import socket

_PERF_ITEM = re.compile(r"'[^']*'=\S*|\S+")


def parse_plugin_output(text):
    """(output, [perfdata items]) from plugin text, per the monitoring-plugins API:
    ``first line | perf`` then long text lines, perfdata may continue after a later ``|``."""
    lines = text.rstrip("\n").split("\n") if text.strip() else [""]
    first, _, perf = lines[0].partition("|")
    long_text, long_perf, in_perf = [], [], False
    for line in lines[1:]:
        if in_perf:
            long_perf.append(line)
        elif "|" in line:
            t, _, p = line.partition("|")
            long_text.append(t.rstrip())
            long_perf.append(p)
            in_perf = True
        else:
            long_text.append(line)
    output = "\n".join([first.strip()] + long_text).strip()
    items = _PERF_ITEM.findall(" ".join([perf] + long_perf))
    return output, items


def run_check(args, timeout):
    """Run ``mailstore check ARGS`` in a child process; (exit status, plugin text).

    A child keeps a misbehaving check (a hang, a crash) from taking the push down with it;
    a crash or a kill is reported as UNKNOWN with what it printed.
    """
    import subprocess
    import sys
    cmd = [sys.executable, "-m", "mailstore", "check"] + list(args)
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 3, "MAILSTORE UNKNOWN - check %s did not finish within %ss" % (
            " ".join(args), timeout)
    out = proc.stdout.decode("utf-8", "replace")
    if proc.returncode not in (0, 1, 2, 3) or not out.strip():
        err = " ".join(proc.stderr.decode("utf-8", "replace").split())[-300:]
        return 3, "MAILSTORE UNKNOWN - check %s failed (exit %d): %s" % (
            " ".join(args), proc.returncode, (err or out.strip() or "no output").replace("|", "/"))
    return proc.returncode, out


def push(api, host, service, args, timeout=120, check_source=None):
    """Run the check, submit its result as a passive result; returns (status, output)."""
    status, text = run_check(args, timeout)
    output, perfdata = parse_plugin_output(text)
    api.process_check_result("%s!%s" % (host, service), status, output, perfdata,
                             check_source=check_source or socket.getfqdn())
    return status, output
