"""What every mailstore check plugin shares: running, timeouts, fact contexts, summaries.

nagiosplugin's own ``Check.main()`` prints and calls ``sys.exit`` through a process-wide
``Runtime`` singleton that keeps its output buffer between calls; :func:`run` does the same job
(nagiosplugin's ``Output`` formats the status line and perfdata, so ranges, perfdata and exit
codes come out right by construction) but returns an :class:`Outcome` instead, so the CLI, the
push command and the tests all go through one path.
"""
import io
import logging
import signal
import threading
from typing import NamedTuple

import nagiosplugin
from nagiosplugin.output import Output

# Monitoring-plugins convention: a plugin that is not told otherwise gives up after 10 s
# (Icinga's own check_timeout is 60 s, so the plugin's UNKNOWN arrives first and says why).
DEFAULT_TIMEOUT = 10

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATE_NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}


class Outcome(NamedTuple):
    exitcode: int    # 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN
    text: str        # "NAME STATE - summary | perfdata\n" plus long output lines


class CheckTimeout(Exception):
    pass


def unknown(name, reason):
    """The UNKNOWN outcome for a check that could not run (bad argument, unreadable target)."""
    reason = " ".join(str(reason).split()).replace("|", "/")
    return Outcome(UNKNOWN, "%s UNKNOWN - %s\n" % (name.upper(), reason))


def run(check, timeout=DEFAULT_TIMEOUT, verbose=0):
    """Run a nagiosplugin Check within `timeout` seconds (0: none); return its Outcome.

    An exception escaping the check (a resource that cannot read its target) becomes UNKNOWN
    with the exception's message; a timeout becomes UNKNOWN naming the limit.
    """
    name = check.name or "check"
    logchan = logging.StreamHandler(io.StringIO())
    output = Output(logchan, verbose=verbose)
    try:
        _with_alarm(timeout, check)
    except CheckTimeout:
        return unknown(name, "timeout: check aborted after %ss" % timeout)
    except nagiosplugin.CheckError as e:
        return unknown(name, e)
    except OSError as e:
        return unknown(name, "%s: %s" % (e.filename, e.strerror) if e.filename else e)
    except Exception as e:  # noqa: BLE001 - a plugin must answer UNKNOWN, never a traceback
        return unknown(name, "%s: %s" % (type(e).__name__, e))
    output.add(check)
    return Outcome(check.exitcode, str(output))


def _with_alarm(timeout, func):
    # SIGALRM interrupts blocking system calls too (a hung NFS stat, a silent database);
    # nagiosplugin's own with_timeout does the same but raises its Timeout from deep inside
    # our resources, where a broad except could swallow it.
    if not timeout or threading.current_thread() is not threading.main_thread():
        func()          # signals reach the main thread only; elsewhere the caller times out
        return

    def expired(signum, frame):
        raise CheckTimeout()

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, float(timeout))
    try:
        func()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Fact(nagiosplugin.Context):
    """A yes/no finding (key matches, chain complete, not revoked) without perfdata.

    The metric's value is ``(good, text)``; a bad fact yields `bad_state` with `text`.
    """

    def __init__(self, name, bad_state=nagiosplugin.Critical):
        super().__init__(name)
        self.bad_state = bad_state

    def evaluate(self, metric, resource):
        good, text = metric.value
        return nagiosplugin.Result(nagiosplugin.Ok if good else self.bad_state, text, metric)

    def describe(self, metric):
        return None


class Headline(nagiosplugin.Summary):
    """OK: the resource's headline; problem: every non-OK finding, worst first, then it."""

    def __init__(self, headline):
        self.headline = headline

    def ok(self, results):
        return self.headline()

    def problem(self, results):
        bad = [r for r in results if r.state != nagiosplugin.Ok]
        bad.sort(key=lambda r: -int(r.state))
        text = "; ".join(_result_text(r) for r in bad)
        # the findings first, then the context an operator would look up next
        try:
            context = self.headline()
        except Exception:  # noqa: BLE001 - the probe failed before it had any context
            context = ""
        return "%s; %s" % (text, context) if context else text


def _result_text(result):
    if result.metric is not None and result.metric.contextobj is not None \
            and isinstance(result.metric.contextobj, Fact):
        return result.hint or ""
    return str(result)
