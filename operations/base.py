"""Base system of the email container: packages, security updates, logging, cron, SSH, names."""
from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, server, systemd

from operations import staging

PACKAGES = ["rsyslog", "cron", "openssh-server", "unattended-upgrades", "ca-certificates",
            "python3", "procps", "less", "dbus"]

SSHD_DROPIN = "/etc/ssh/sshd_config.d/cacert.conf"
# sshd reads the staged drop-in first, then the whole live config: with sshd's "first value
# wins", that is exactly what sshd will see once the drop-in is in place.
SSHD_CHECK = ("printf 'Include {stage}/cacert.conf\\nInclude /etc/ssh/sshd_config\\n' "
              "> {stage}/check.conf && sshd -t -f {stage}/check.conf")


@deploy("Base system")
def system():
    data = host.data
    fqdn = data.hostnames["email"]
    short = fqdn.split(".")[0]

    # Lists younger than this are good enough; a second run within it changes nothing.
    apt.update(name="apt lists", cache_time=6 * 3600)
    apt.packages(name="Base packages", packages=PACKAGES)

    files.template(name="Periodic apt runs", src="files/base/20auto-upgrades.j2",
                   dest="/etc/apt/apt.conf.d/20auto-upgrades", mode="644")
    files.template(name="Unattended upgrades: security only",
                   src="files/base/51cacert-unattended-upgrades.j2",
                   dest="/etc/apt/apt.conf.d/51cacert-unattended-upgrades", mode="644")

    # hostnamectl asks systemd-hostnamed over the system bus; a server that never ran dbus
    # (the Puppet-era container: installed, never started) fails "Failed to connect to bus".
    systemd.service(name="D-Bus running (hostnamectl needs it)", service="dbus", running=True)
    server.hostname(name="Hostname", hostname=short)
    files.template(name="/etc/hosts", src="files/base/hosts.j2", dest="/etc/hosts", mode="644",
                   fqdn=fqdn, short=short)
    files.template(name="/etc/mailname", src="files/base/mailname.j2", dest="/etc/mailname",
                   mode="644", fqdn=fqdn)

    for service in ("rsyslog", "cron"):
        systemd.service(name=f"{service} running", service=service, running=True, enabled=True)

    _sshd()


def _sshd():
    # Checked before it is used: a typo can never lock the deploy out, now or after a reboot.
    config = staging.files(
        name="sshd settings (checked with sshd -t before they are used)",
        config_files=[staging.ConfigFile(SSHD_DROPIN, staging.render("files/base/sshd.conf.j2"))],
        stage=f"{staging.STAGING_ROOT}/sshd",
        check=SSHD_CHECK,
    )
    systemd.service(name="Reload sshd", service="ssh", running=True, enabled=True,
                    reloaded=True, _if=config.did_change)
