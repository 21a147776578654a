"""fail2ban: sshd, Postfix (rejections and SASL failures) and Dovecot jails, banning with
nftables. The jails read the rsyslog files; see files/fail2ban/jail.local.j2 for why.

The new jail.local is checked with `fail2ban-client -t` against a copy of /etc/fail2ban that
holds it, before it replaces the live one; only then is fail2ban reloaded.
"""
from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, systemd

from operations import staging

# A ban lasts an hour; five failures within ten minutes earn one. fail2ban's defaults (ten
# minutes) let a slow password guesser go on almost unhindered.
BANTIME = "1h"
FINDTIME = "10m"
MAXRETRY = 5
# The files the jails read (see files/fail2ban/jail.local.j2).
LOGS = ("/var/log/auth.log", "/var/log/mail.log")

CONFIG = "/etc/fail2ban/jail.local"
STAGE = f"{staging.STAGING_ROOT}/fail2ban"
# Check the staged *.local files inside a throw-away copy of the configuration directory: that
# is what fail2ban-client -t can test without touching the live one.
# dovecot.local belongs in filter.d/, beside the stock filter it extends.
CHECK = ("d=$(mktemp -d) && cp -a /etc/fail2ban/. $d/ && cp {stage}/*.local $d/ && "
         "if [ -e $d/dovecot.local ]; then mv -f $d/dovecot.local $d/filter.d/; fi && "
         "fail2ban-client -c $d -t; rc=$?; rm -rf \"$d\"; exit $rc")


def ignoreip(trusted_hosts, extra):
    """Addresses fail2ban never bans: loopback, every trusted host, and `extra`."""
    addresses = ["127.0.0.1/8", "::1"]
    for name in sorted(trusted_hosts):
        addresses += [a for a in trusted_hosts[name] if a not in addresses]
    addresses += [a for a in extra if a not in addresses]
    return addresses


def template_vars(data):
    """The values files/fail2ban/jail.local.j2 needs, from inventory `data`."""
    return {
        "ignoreip": ignoreip(data.trusted_hosts, data.fail2ban_ignore),
        "ports": {name: entry["port"] for name, entry in data.ports.items()},
        "bantime": BANTIME,
        "findtime": FINDTIME,
        "maxretry": MAXRETRY,
    }


@deploy("fail2ban")
def server():
    """fail2ban installed, its jails configured, checked and (re)loaded."""
    apt.packages(name="fail2ban", packages=["fail2ban", "nftables"])
    # fail2ban refuses to start a jail whose log file does not exist yet (rsyslog creates it
    # with the first line): create them as rsyslog would.
    for log in LOGS:
        files.file(name=f"{log} exists", path=log, present=True, user="root", group="adm",
                   mode="640")
    config = staging.files(
        name="jail.local, fail2ban.local, dovecot.local (checked with fail2ban-client -t)",
        config_files=[
            staging.ConfigFile(
                CONFIG,
                staging.render("files/fail2ban/jail.local.j2", **template_vars(host.data))),
            staging.ConfigFile(
                "/etc/fail2ban/fail2ban.local",
                staging.render("files/fail2ban/fail2ban.local.j2")),
            # Dovecot 2.4's failed-login lines (see the file); harmless on 2.3.
            staging.ConfigFile(
                "/etc/fail2ban/filter.d/dovecot.local",
                (staging.REPO / "files/fail2ban/dovecot.local").read_text()),
        ],
        stage=STAGE, check=CHECK)
    systemd.service(name="fail2ban running", service="fail2ban", running=True, enabled=True)
    systemd.service(name="Reload fail2ban", service="fail2ban", reloaded=True,
                    _if=config.did_change)
