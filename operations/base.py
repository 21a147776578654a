"""Base system of the email container: packages, security updates, logging, cron, SSH, names."""
from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import Sha1File
from pyinfra.operations import apt, files, server, systemd

PACKAGES = ["rsyslog", "cron", "openssh-server", "unattended-upgrades", "ca-certificates",
            "python3", "procps", "less"]

# The drop-in is staged beside the live one and only copied over it after `sshd -t` passed
# on the combination: a typo can never lock the deploy out of the next run or a reboot.
SSHD_STAGED = "/etc/ssh/cacert-sshd.conf.staged"
SSHD_LIVE = "/etc/ssh/sshd_config.d/cacert.conf"
SSHD_CHECK = "/etc/ssh/cacert-sshd-check.conf"


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

    server.hostname(name="Hostname", hostname=short)
    files.template(name="/etc/hosts", src="files/base/hosts.j2", dest="/etc/hosts", mode="644",
                   fqdn=fqdn, short=short)
    files.template(name="/etc/mailname", src="files/base/mailname.j2", dest="/etc/mailname",
                   mode="644", fqdn=fqdn)

    for service in ("rsyslog", "cron"):
        systemd.service(name=f"{service} running", service=service, running=True, enabled=True)

    _sshd()


def _sshd():
    staged = files.template(name="sshd settings (staged)", src="files/base/sshd.conf.j2",
                            dest=SSHD_STAGED, mode="644")
    # Also retried when a previous run staged a file that failed the check.
    differs = host.get_fact(Sha1File, path=SSHD_STAGED) != host.get_fact(Sha1File, path=SSHD_LIVE)
    activate = server.shell(
        name="sshd -t, then activate the sshd settings",
        commands=[
            f"printf 'Include {SSHD_STAGED}\\nInclude /etc/ssh/sshd_config\\n' > {SSHD_CHECK}",
            f"sshd -t -f {SSHD_CHECK}",
            f"install -m 644 {SSHD_STAGED} {SSHD_LIVE}",
            f"sshd -t && rm -f {SSHD_CHECK}",
        ],
        _if=lambda: differs or staged.did_change(),
    )
    systemd.service(name="Reload sshd", service="ssh", running=True, enabled=True,
                    reloaded=True, _if=activate.did_change)
