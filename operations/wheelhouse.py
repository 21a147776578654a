"""Wheels for mailstore and its dependencies, made on the control machine.

The server installs mailstore from these files only (`pip --no-index`), so it needs no access
to PyPI and gets exactly what was tested. Wheels are built with a fixed SOURCE_DATE_EPOCH so
that an unchanged source gives byte-identical files: re-uploading them changes nothing, which
keeps a second deploy run at zero changes.
"""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "wheelhouse"

# The server's own Python, by Debian release: mailstore runs on it.
PYTHON_BY_RELEASE = {"bullseye": "3.9", "bookworm": "3.11", "trixie": "3.13"}
# Wheels for these platforms run on Debian 11-13 on amd64.
_PLATFORMS = ["manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64",
              "manylinux_2_31_x86_64"]
# Dependencies published only as source: built here as pure-Python wheels.
_SOURCE_ONLY = ["icinga2api==0.6.1"]
_EPOCH = "315532800"  # 1980-01-01, the earliest date a zip file can hold


class WheelhouseError(Exception):
    """A wheel could not be built or downloaded; the message holds pip's output."""


def _pip(*args):
    env = {**os.environ, "SOURCE_DATE_EPOCH": _EPOCH, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    result = subprocess.run([sys.executable, "-m", "pip", *args], env=env,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise WheelhouseError(f"pip {' '.join(args[:2])} failed:\n{result.stderr[-2000:]}")


def build(release):
    """Return a directory holding every wheel mailstore needs on `release`'s Python.

    + release: Debian release of the server (bullseye, bookworm, trixie)
    """
    python_version = PYTHON_BY_RELEASE[release]
    dest = CACHE / python_version
    with tempfile.TemporaryDirectory(prefix="wheelhouse-") as tmp:
        staging = Path(tmp) / "wheels"
        # Build from a copy: setuptools leaves build/ and *.egg-info beside the source.
        source = Path(tmp) / "src"
        shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
            ".git", ".venv*", ".lab", ".cache", "build", "*.egg-info", "__pycache__",
            ".pytest_cache", ".hypothesis", "tests", "bench"))
        _pip("wheel", "--no-deps", "-w", str(staging), str(source))
        _pip("wheel", "--no-deps", "-w", str(staging), *_SOURCE_ONLY)
        platform_args = [arg for p in _PLATFORMS for arg in ("--platform", p)]
        _pip("download", "--only-binary=:all:", "--python-version", python_version,
             "--implementation", "cp", *platform_args, "--find-links", str(staging),
             "-d", str(staging), "cacert-email")
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staging, dest)
    return dest
