"""The plugin command line: usage errors are UNKNOWN (exit 3), ranges, timeouts."""
import os
import time

import pytest

from check_fixtures import check, perfdata
from mailstore.checks import plugin, volume


@pytest.mark.parametrize("args, reason", [
    ([], "Missing command"),
    (["nope"], "No such command"),
    (["volume"], "Missing argument"),
    (["volume", "--bogus", "/"], "No such option"),
    (["volume", "-w"], "requires an argument"),
    (["volume", "-w", "ten", "/"], "invalid range 'ten'"),
    (["volume", "-w", "20:10", "/"], "invalid range '20:10'"),
    (["volume", "-t", "-1", "/"], "--timeout"),
    (["cert"], "Missing argument 'FILE'"),
    (["backup"], "no repository: give REPO, -r/--repo REPO or set MAILSTORE_REPOSITORY"),
    (["maildir", "/", "--owner", "no-such-user-here"], "no such user"),
])
def test_bad_arguments_are_unknown_not_click_exit_2(args, reason):
    code, line, m = check(*args)
    assert code == 3
    assert m.group("state") == "UNKNOWN"
    assert reason in line


@pytest.mark.parametrize("spec, value, inside", [
    ("10", 10, True), ("10", 10.5, False), ("10", 0, True), ("9:10", 0, False),
    ("10:", 10, True), ("10:", 9.9, False), ("10:", 1e12, True),
    ("~:10", 0, True), ("~:10", 10, True), ("~:10", 10.1, False),
    ("10:20", 15, True), ("10:20", 21, False), ("10:20", 9, False),
    ("@10:20", 15, False), ("@10:20", 10, False), ("@10:20", 9, True), ("@10:20", 21, True),
])
def test_range_syntax_on_a_real_check(tmp_path, spec, value, inside):
    # free space in % is the value under test: feed it through a fake statvfs
    class St:
        f_frsize = 1
        f_blocks = 1000
        f_bavail = 0
        f_files = 0
        f_favail = 0
    st = St()
    st.f_bavail = value * 10   # percent of 1000 blocks
    real = os.statvfs
    os.statvfs = lambda path: st
    try:
        code, line, m = check("volume", tmp_path, "-w", spec, "-c", "~:")
    finally:
        os.statvfs = real
    assert code == (0 if inside else 1), line
    # the threshold is rendered back into the perfdata as given (each spec here is already
    # in its shortest form, so that is the form a reader of the perfdata should see)
    assert perfdata(m)["space_free_pct"][2] == spec


def test_timeout_is_unknown_and_names_the_limit(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "statvfs", lambda path: time.sleep(5))
    started = time.monotonic()
    code, line, m = check("volume", tmp_path, "-t", "1")
    assert time.monotonic() - started < 3
    assert code == 3
    assert "timeout" in line and "1s" in line


def test_run_returns_outcome_without_exiting(tmp_path):
    outcome = plugin.run(volume.make_check(str(tmp_path), space_warning="0:"))
    assert outcome.exitcode == 0
    assert outcome.text.startswith("VOLUME OK - ")
    assert outcome.text.endswith("\n") and outcome.text.count("\n") == 1


def test_unexpected_exception_is_unknown_without_traceback(monkeypatch, tmp_path):
    def boom(path):
        raise RuntimeError("disk on fire | really")
    monkeypatch.setattr(os, "statvfs", boom)
    code, line, m = check("volume", tmp_path)
    assert code == 3
    assert "RuntimeError: disk on fire / really" in line   # '|' would start perfdata


def test_help_is_not_an_error():
    from click.testing import CliRunner
    from mailstore.cli import main
    result = CliRunner().invoke(main, ["check", "volume", "--help"])
    assert result.exit_code == 0 and "--warning" in result.output
