"""Puppet removal (operations/puppet.py): install the agent in the container, deploy, gone."""
import pytest

from lab import lock


def test_deploy_stops_and_purges_an_installed_puppet_agent(ssh, run_deploy):
    # Debian ships the agent as `puppet` up to bookworm and as `puppet-agent` from trixie on.
    # bullseye knows `puppet-agent` only as a name without a candidate: ask apt whether it
    # could install it, not whether it has heard of it.
    package = ssh("for p in puppet-agent puppet; do "
                  "apt-get install -s -qq --no-install-recommends $p >/dev/null 2>&1 "
                  "&& echo $p && exit 0; done; true").stdout.strip()
    if not package:
        pytest.skip("no Puppet agent package reachable through the lab's apt proxy")
    with lock.held():  # apt in the container: never beside someone else's deploy
        ssh(f"DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
            f"{package} && systemctl enable --now puppet.service || true", timeout=900)
    assert ssh(f"dpkg-query -W -f '${{Status}}' {package}").stdout == "install ok installed"

    result = run_deploy()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    # Purged, not just removed ("deinstall ok config-files"): its configuration is gone too.
    status = ssh(f"dpkg-query -W -f '${{Status}}' {package}", check=False).stdout
    assert status in ("", "unknown ok not-installed"), status
    assert ssh("systemctl is-active puppet.service", check=False).stdout.strip() != "active"
    assert ssh("command -v puppet", check=False).returncode != 0
