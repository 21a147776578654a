"""Try to deploy a broken configuration through the real staging path, to prove it is refused.

`deploy_broken(...)` runs a one-operation pyinfra deploy against the lab container that hands
`operations.staging.files` the given text with a service's own check command (the same
constants its deploy uses). The caller asserts that the run failed, the live file is unchanged
and the service still runs.
"""
import os
import subprocess
from pathlib import Path

from lab import lock

REPO = Path(__file__).resolve().parents[2]

_DEPLOY = """
from operations import staging
staging.files(name="broken {dest}",
              config_files=[staging.ConfigFile({dest!r}, {content!r})],
              stage={stage!r}, check={check!r})
"""


def deploy_broken(tmp_path, dest, content, stage, check):
    """The finished pyinfra run (CompletedProcess) that tried to install `content` at `dest`."""
    deploy = tmp_path / "broken_deploy.py"
    deploy.write_text(_DEPLOY.format(dest=dest, content=content, stage=stage, check=check))
    env = dict(os.environ)
    env.setdefault("CACERT_EMAIL_SECRETS", str(REPO / ".lab" / "secrets"))
    with lock.held():
        return subprocess.run(
            [str(REPO / ".venv" / "bin" / "pyinfra"), "-y", "inventories/lab.py", str(deploy),
             "--limit", "email"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
