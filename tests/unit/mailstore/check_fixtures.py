"""Helpers for the check plugin tests: run the CLI and read its status line."""
import re

from click.testing import CliRunner

from mailstore.cli import main

# NAME STATE - text | perfdata ; perfdata items: label=value[uom];[warn];[crit];[min];[max]
STATUS_LINE = re.compile(r"^(?P<name>[A-Z ]+) (?P<state>OK|WARNING|CRITICAL|UNKNOWN)"
                         r"(?: - (?P<text>[^|\n]*?))?(?: \| (?P<perf>[^\n]*))?$")
PERF_ITEM = re.compile(r"^'?[^=']+'?=-?[0-9.]+(?:[a-zA-Z%]+)?(?:;[^;\s]*){0,4}$")
EXIT = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}


def check(*args):
    """Run `mailstore check ARGS`; return (exit code, first line, parsed status match)."""
    result = CliRunner().invoke(main, ["check"] + [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    out = result.stdout if hasattr(result, "stdout") else result.output
    first = out.split("\n", 1)[0]
    m = STATUS_LINE.match(first)
    assert m, "not a plugin status line: %r" % out
    assert EXIT[m.group("state")] == result.exit_code, (result.exit_code, out)
    if m.group("perf"):
        for item in m.group("perf").split(" "):
            assert PERF_ITEM.match(item), "bad perfdata item %r in %r" % (item, first)
    return result.exit_code, first, m


def perfdata(m):
    """{label: (value, uom, warn, crit, min, max)} from a status line match."""
    out = {}
    for item in (m.group("perf") or "").split(" "):
        if not item:
            continue
        label, rest = item.split("=", 1)
        fields = rest.split(";")
        vm = re.match(r"^(-?[0-9.]+)([a-zA-Z%]*)$", fields[0])
        fields += [""] * (5 - len(fields))
        out[label] = (float(vm.group(1)), vm.group(2)) + tuple(fields[1:5])
    return out
