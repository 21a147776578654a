"""tests/conftest.py: under CI a skip fails the run with its reason; outside CI it stays a skip
and its reason is printed."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"

TESTS = '''
import pytest

def test_runs():
    pass

def test_skips():
    pytest.skip("needs a thing this machine lacks")

@pytest.mark.xfail(reason="known", strict=True)
def test_expected_failure():
    assert False
'''


@pytest.fixture
def suite(tmp_path):
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "test_some.py").write_text(TESTS)
    (tmp_path / "test_module_skip.py").write_text(
        'import pytest\npytest.skip("no module here", allow_module_level=True)\n')
    return tmp_path


def run(suite, ci):
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--rootdir", str(suite), str(suite)], cwd=suite, env=env,
                          capture_output=True, text=True)


@pytest.mark.parametrize("ci", [None, "", "0", "false"])
def test_outside_ci_a_skip_is_a_skip_with_its_reason(suite, ci):
    result = run(suite, ci)
    assert result.returncode == 0, result.stdout
    assert "1 passed, 2 skipped, 1 xfailed" in result.stdout
    assert "needs a thing this machine lacks" in result.stdout
    assert "no module here" in result.stdout


@pytest.mark.parametrize("ci", ["true", "1"])
def test_under_ci_every_skip_fails_with_its_reason(suite, ci):
    result = run(suite, ci)
    assert result.returncode == 1, result.stdout
    assert "1 failed, 1 passed, 1 skipped, 1 xfailed" in result.stdout
    assert ("skipped under CI, which counts it as a failure: Skipped: needs a thing this "
            "machine lacks") in result.stdout
    assert "skipped under CI, which counts them as failures" in result.stdout
    assert "test_module_skip.py: Skipped: no module here" in result.stdout
