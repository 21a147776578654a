"""tests/setup: apt only for the packages dpkg says are missing (apt-get update only then), one
line saying what to install when not root, a Python environment left alone while its stamp
matches pyproject.toml. dpkg-query, apt-get, id and the environment's Python are stand-ins."""
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

FAKE_DPKG_QUERY = """#!/bin/sh
# like dpkg-query -W -f='${Package} ${db:Status-Abbrev}\\n' PKG...: installed = all but $MISSING;
# like the real one it exits 1 when it found no trace of any of them
shift 2
rc=0
for p in "$@"; do
    case " $MISSING " in *" $p "*) echo "dpkg-query: no packages found matching $p" >&2; rc=1 ;;
                          *) echo "$p ii " ;; esac
done
exit $rc
"""


@pytest.fixture
def repo(tmp_path):
    """A copy of the script and the package list, stand-ins on PATH, .venv made and stamped."""
    (tmp_path / "tests").mkdir()
    for name in ("setup", "packages"):
        shutil.copy(REPO / "tests" / name, tmp_path / "tests" / name)
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fakes = {"dpkg-query": FAKE_DPKG_QUERY,
             "apt-get": '#!/bin/sh\necho "apt-get $*" >>"$LOG"\n',
             "id": '#!/bin/sh\necho "$UID_IS"\n'}
    for name, text in fakes.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    python = tmp_path / ".venv/bin/python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\nexit 0\n")
    python.chmod(0o755)
    digest = hashlib.sha256((tmp_path / "pyproject.toml").read_bytes()).hexdigest()
    (tmp_path / ".venv/.setup-stamp").write_text(digest + " deploy,test\n")
    return tmp_path


def setup(repo, missing="", uid="0"):
    env = dict(os.environ, PATH=f"{repo / 'bin'}:{os.environ['PATH']}", MISSING=missing,
               UID_IS=uid, LOG=str(repo / "apt.log"))
    result = subprocess.run(["bash", str(repo / "tests/setup"), "--control"], env=env,
                            capture_output=True, text=True)
    apt = (repo / "apt.log").read_text() if (repo / "apt.log").exists() else ""
    return result, apt


def test_nothing_missing_does_nothing(repo):
    result, apt = setup(repo)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and apt == ""


def test_a_missing_package_is_installed_after_an_update(repo):
    result, apt = setup(repo, missing="python3-venv")
    assert result.returncode == 0, result.stderr
    assert apt.splitlines() == ["apt-get update -qq",
                                "apt-get install -y -qq --no-install-recommends python3-venv"]


def test_not_root_says_in_one_line_what_to_install(repo):
    result, apt = setup(repo, missing="python3-venv", uid="1000")
    assert result.returncode == 1 and apt == ""
    assert result.stderr == ("tests/setup: missing Debian packages; as root run: "
                             "apt-get install --no-install-recommends python3-venv\n")


def test_a_changed_pyproject_reinstalls_the_project(repo):
    (repo / "pyproject.toml").write_text("[project]\nname = 'y'\n")
    pip = repo / ".venv/bin/pip"
    pip.write_text(f'#!/bin/sh\necho "pip $*" >>{repo / "pip.log"}\n')
    pip.chmod(0o755)
    result, _ = setup(repo)
    assert result.returncode == 0, result.stderr
    assert (repo / "pip.log").read_text() == "pip install -q -e .[deploy,test]\n"
    # and the stamp now matches: the next run leaves it alone
    assert setup(repo)[0].stderr == ""
    assert (repo / "pip.log").read_text().count("pip install") == 1
