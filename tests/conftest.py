"""One rule for every tier: a skipped test is a test that did not run.

Outside CI a skip stays a skip and prints its reason at the end of the run (-rs). Under CI
(`CI` set and not "0"/"false", as .ci/run sets it) a skipped test becomes a failure that gives
the reason, and a module skipped as a whole fails the run, listed with its reason at the end.
tests/setup installs everything the tests need, so a test that cannot run in CI is a finding,
never a silent gap.
"""
import os

import pytest


def in_ci():
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def pytest_configure(config):
    # The reason of every skip in the short summary, in every tier, however pytest was called.
    chars = config.option.reportchars
    if "s" not in chars and "a" not in chars and "A" not in chars:
        config.option.reportchars = chars + "s"


def _skip_reason(report):
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:   # (file, line, "Skipped: why")
        return longrepr[2]
    return str(longrepr)


def _fail_the_skip(report):
    report.outcome = "failed"
    report.longrepr = "skipped under CI, which counts it as a failure: " + _skip_reason(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    # xfail is reported as "skipped" too, with `wasxfail`: an expected failure, not a skip.
    if report.skipped and not hasattr(report, "wasxfail") and in_ci():
        _fail_the_skip(report)


# A module skipped at collection cannot become a failed test: an error there would interrupt
# the whole session. It stays a skip, and under CI it fails the session at the end.
_skipped_modules = []


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and in_ci():          # pytest.skip(allow_module_level=True), importorskip
        _skipped_modules.append("{}: {}".format(report.nodeid, _skip_reason(report)))


def pytest_terminal_summary(terminalreporter):
    if _skipped_modules:
        terminalreporter.section("skipped under CI, which counts them as failures", red=True)
        for line in _skipped_modules:
            terminalreporter.line(line)


def pytest_sessionfinish(session):
    if _skipped_modules and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
