"""Postfix: MX on 25, submission on 587 and SMTPS on 465 for logged-in users, delivery to
Dovecot over LMTP, the maps (cacertusers views, transport, arbitration, cacert-inc-bcc,
/etc/aliases).

The whole configuration is one set: staged, checked with `postfix -c STAGE check` and
`postconf -c STAGE -M`, and only then moved into place; hash maps are postmap'ed and
/etc/aliases postalias'ed whenever they change; Postfix reloads once at the end.
"""
from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, systemd

from operations.secrets import read_password
from operations import staging

# Each map on the views: file name, what it answers, the query (%s is the looked-up address).
MYSQL_MAPS = {
    "mysql-mailboxes.cf": ("local_recipient_maps: the mailboxes",
                           "SELECT mailbox FROM postfix_mailboxes WHERE login = '%s'"),
    "mysql-aliases.cf": ("virtual_alias_maps: alias -> owner(s)",
                         "SELECT owner FROM postfix_aliases WHERE alias = '%s'"),
    "mysql-sender-logins.cf": ("smtpd_sender_login_maps: address -> who may send from it",
                               "SELECT owner FROM postfix_sender_logins WHERE address = '%s'"),
}
# Hash maps (postmap'ed into <name>.db): file name -> template.
HASH_MAPS = {"transport": "files/postfix/transport.j2",
             "cacert-inc-bcc": "files/postfix/cacert-inc-bcc.j2"}
# postconf reports syntax errors of main.cf/master.cf on stderr (shown by pyinfra); `postfix
# check` writes only to syslog when it has no terminal, so its complaint is fetched from there.
CHECK = ("postconf -c {stage} -n >/dev/null && postconf -c {stage} -M >/dev/null && "
         "{{ postfix -c {stage} check || {{ tail -n 5 /var/log/mail.log >&2; false; }}; }}")


def etc_aliases(data):
    """/etc/aliases as local part -> target: `etc_aliases`, then the aliases never sent from."""
    aliases = dict(data["etc_aliases"])
    for alias in data["mail_aliases"]:
        if not alias["send_as"]:
            aliases[alias["alias"].split("@")[0].lower()] = alias["owner"]
    return aliases


def config_files(data, mysql_password):
    """Every file of Postfix's configuration, rendered for `data`."""
    def postfix_file(name, template, **extra):
        return staging.ConfigFile(f"/etc/postfix/{name}", staging.render(template, **data, **extra))

    result = [
        postfix_file("main.cf", "files/postfix/main.cf.j2"),
        postfix_file("master.cf", "files/postfix/master.cf.j2"),
        postfix_file("arbitration", "files/postfix/arbitration.j2"),
    ]
    for name, (purpose, query) in sorted(MYSQL_MAPS.items()):
        # proxymap runs as postfix: the password is readable by that group only.
        result.append(staging.ConfigFile(
            f"/etc/postfix/{name}",
            staging.render("files/postfix/mysql.cf.j2", **data, purpose=purpose, query=query,
                           password=mysql_password),
            mode="640", group="postfix"))
    for name, template in sorted(HASH_MAPS.items()):
        path = f"/etc/postfix/{name}"
        result.append(postfix_file(name, template)._replace(
            then=f"postmap {path}", product=f"{path}.db"))
    result.append(staging.ConfigFile(
        "/etc/aliases", staging.render("files/postfix/aliases.j2", aliases=etc_aliases(data)),
        then="postalias /etc/aliases", product="/etc/aliases.db"))
    return result


@deploy("Postfix")
def server():
    data = staging.data_context(host.data)
    apt.packages(name="Postfix with MariaDB maps", packages=["postfix", "postfix-mysql"])
    config = staging.files(
        name="Postfix configuration (checked before it is used)",
        config_files=config_files(data, read_password("mysql_postfix.password")),
        stage=f"{staging.STAGING_ROOT}/postfix",
        check=CHECK,
    )
    systemd.service(name="Reload Postfix", service="postfix", running=True, enabled=True,
                    reloaded=True, _if=config.did_change)
    systemd.service(name="Postfix running", service="postfix", running=True, enabled=True)
