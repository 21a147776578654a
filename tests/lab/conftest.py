"""Fixtures for every lab test: the lab's description, a root shell in the container, a deploy.

The lab is built by `./lab/up`, which writes `.lab/lab.json` (contract: docs/architecture.md).
These tests never build it themselves; without it the run stops at once with one line saying so.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from lab import lock  # noqa: E402  (the repository root is not always on sys.path)
from mailclients import deploy_failure  # noqa: E402

LAB_JSON = REPO / ".lab" / "lab.json"
KNOWN_HOSTS = REPO / ".lab" / "known_hosts"


def pytest_sessionstart(session):
    # One line instead of an error for every test.
    if not LAB_JSON.is_file():
        pytest.exit(f"lab not up: run ./lab/up ({LAB_JSON.relative_to(REPO)} is missing)",
                    returncode=pytest.ExitCode.TESTS_FAILED)


# A module that matters on some releases only says so: LAB_RELEASES = ("bullseye",). On the
# lab's other releases its tests are deselected, not skipped (CI counts a skip as a failure,
# tests/conftest.py), so CI, which brings the lab up on each release in turn, runs them once.
# CACERT_LAB_ANY_RELEASE=1 runs them on whatever release the lab has.
_deselected_why = []


def pytest_collection_modifyitems(config, items):
    if os.environ.get("CACERT_LAB_ANY_RELEASE", "") not in ("", "0") or not LAB_JSON.is_file():
        return
    release = json.loads(LAB_JSON.read_text()).get("release")
    keep, drop, modules = [], [], {}
    for item in items:
        releases = getattr(getattr(item, "module", None), "LAB_RELEASES", None)
        if releases is not None and release not in releases:
            drop.append(item)
            modules[item.module.__name__] = releases
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
        only = sorted({r for releases in modules.values() for r in releases})
        _deselected_why.append(
            f"deselected {len(drop)} tests of {', '.join(sorted(modules))}: they run on the "
            f"lab's {' and '.join(only)} only, the lab runs {release} "
            "(CACERT_LAB_ANY_RELEASE=1 runs them anyway)")


def pytest_report_collectionfinish(config, start_path, items):
    return list(_deselected_why)


@pytest.fixture(scope="session")
def lab():
    """`.lab/lab.json` as a dict, with `ssh.key` and `ca_cert` made absolute."""
    if not LAB_JSON.is_file():
        pytest.fail(f"the lab is not up: {LAB_JSON} is missing (run ./lab/up as root first)")
    data = json.loads(LAB_JSON.read_text())
    data["ssh"]["key"] = str(REPO / data["ssh"]["key"])
    data["ca_cert"] = str(REPO / data["ca_cert"])
    return data


def ssh_command(lab, cmd, known_hosts=KNOWN_HOSTS, strict="no"):
    """The argv that runs `cmd` as root in the container (also used by tests that need Popen);
    `lab` is lab.json or a further container's record (`known_hosts` and `strict` then name
    its host keys and ask for them to be checked)."""
    return [
        "ssh", "-i", lab["ssh"]["key"], "-p", str(lab["ssh"]["port"]),
        "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
        "-o", f"StrictHostKeyChecking={strict}", "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "LogLevel=ERROR",
        f"{lab['ssh']['user']}@{lab['address']}", cmd,
    ]


def _shell(argv_of, where):
    """`run(cmd, check=True, input=None)`: `argv_of(cmd)` run, failing with its output."""
    def run(cmd, check=True, input=None, timeout=300):
        result = subprocess.run(argv_of(cmd), input=input, capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"in {where}, {cmd!r} exited {result.returncode}:\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result
    return run


@pytest.fixture(scope="session")
def ssh(lab):
    """`ssh(cmd, check=True, input=None)`: run a shell command as root in the container."""
    return _shell(lambda cmd: ssh_command(lab, cmd), "the container")


def _deploy(limit, extra_args):
    env = dict(os.environ)
    env.setdefault("CACERT_EMAIL_SECRETS", str(REPO / ".lab" / "secrets"))
    with lock.held():
        return subprocess.run(
            [str(REPO / ".venv" / "bin" / "pyinfra"), "-y", "inventories/lab.py", "deploy.py",
             "--limit", limit, *extra_args],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)


@pytest.fixture(scope="session")
def run_deploy(lab):
    """`run_deploy(*extra_args)`: the full deploy of the container, under the lab lock.

    Add "--json" to get pyinfra's results (`json.loads(result.stdout)["results"]["totals"]`).
    """
    def run(*extra_args):
        return _deploy("email", extra_args)
    return run


@pytest.fixture(scope="session")
def run_infra02_deploy(lab):
    """`run_infra02_deploy(*extra_args)`: the host side (lab host + container provisioning)."""
    def run(*extra_args):
        return _deploy("infra02", extra_args)
    return run


@pytest.fixture(scope="module")
def deployed(request, lab):
    """The lab as the deploy leaves it, once per test module.

    Deploys each `--limit` in the module's `DEPLOY` in turn (default: "infra02", the host side,
    then "email", the container) and fails with the deploy's errors. A module that needs more
    overrides `deployed` with a fixture that asks for this one under the same name.
    """
    for limit in getattr(request.module, "DEPLOY", ("infra02", "email")):
        result = _deploy(limit, ())
        assert result.returncode == 0, deploy_failure(result)


def lab_container(verb, name):
    """`python -m lab container VERB NAME`, failing with its output."""
    result = subprocess.run([sys.executable, "-m", "lab", "container", verb, name],
                            cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, (f"python -m lab container {verb} {name} failed:\n" +
                                    (result.stdout + result.stderr)[-4000:])


def legacy_record(lab):
    """The legacy container's lab.json record as it is now, shaped for mailclients (address,
    ports, ca_cert, ...), accounts by user name."""
    record = json.loads(LAB_JSON.read_text())["containers"]["legacy"]
    return {**record, "ports": lab["ports"], "ca_cert": str(REPO / record["ca_cert"]),
            "ssh": {**record["ssh"], "key": str(REPO / record["ssh"]["key"]),
                    "known_hosts": str(REPO / record["ssh"]["known_hosts"])},
            "accounts": {a["user"]: a for a in record["accounts"]}}


@pytest.fixture(scope="session")
def legacy(lab):
    """The legacy container (lab/legacy), brought up if it is not: legacy_record(lab)."""
    lab_container("up", "legacy")
    return legacy_record(lab)


def legacy_shell(legacy):
    """`run(cmd, check=True, input=None)`: a root shell in the legacy container described by
    `legacy` (legacy_record), its host key checked."""
    return _shell(lambda cmd: ssh_command(legacy, cmd, legacy["ssh"]["known_hosts"], "yes"),
                  "the legacy container")


@pytest.fixture(scope="session")
def legacy_ssh(legacy):
    """`legacy_ssh(cmd, check=True, input=None)`: a root shell in the legacy container."""
    return legacy_shell(legacy)


# The two lab accounts (lab.json "accounts"), for the tests that send mail between them.
@pytest.fixture(scope="session")
def alice(lab):
    return lab["accounts"][0]


@pytest.fixture(scope="session")
def bob(lab):
    return lab["accounts"][1]
