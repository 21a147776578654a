"""Puppet agent: stopped, disabled and purged, so that it cannot fight this deploy.

The server was managed by Puppet before; an agent left running would rewrite the files this
deploy owns every half hour. On a host without Puppet this changes nothing.
"""
from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.systemd import SystemdStatus
from pyinfra.operations import apt, systemd

# Debian's package is `puppet` up to bookworm and `puppet-agent` from trixie on; Puppet's own
# all-in-one package is also called `puppet-agent`.
PACKAGES = ("puppet-agent", "puppet")
# Units those packages ship that act on the host by themselves.
UNITS = ("puppet", "pxp-agent", "mcollective")


@deploy("Puppet agent removed")
def removed():
    """Stop, disable and purge the Puppet agent if it is installed; otherwise do nothing."""
    installed = [name for name in PACKAGES if name in host.get_fact(DebPackages)]
    if not installed:
        return
    units = host.get_fact(SystemdStatus)
    for unit in UNITS:
        if f"{unit}.service" in units:
            systemd.service(name=f"Stop and disable {unit}", service=f"{unit}.service",
                            running=False, enabled=False)
    apt.packages(name="Purge the Puppet agent", packages=installed, present=False,
                 extra_uninstall_args="--purge")
