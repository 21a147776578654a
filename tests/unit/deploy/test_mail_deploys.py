"""The mail path's @deploy functions against a fake host (tests/unit/deploy/fake_host.py)."""
from conftest import NAMES

from operations.defaults import defaults
from operations import certificates, dovecot, mariadb, postfix, secret_file
from tests.unit.deploy import fake_host

# A Debian host that has none of the mail path yet.
FRESH = {"Os": "Linux", "LinuxName": "Debian", "Groups": [], "Users": {},
         "Which": "/usr/sbin/useradd"}


def run(deploy, data, facts=FRESH):
    """The operations of `deploy`, named without the "<Deploy> | " prefix."""
    ops = fake_host.run(deploy, facts=facts, data=data)
    for op in ops:
        op.name = op.name.split(" | ", 1)[-1]
    return ops


def _certificates(email_data):
    return {"certificates": email_data["certificates"]}


def test_certificates_on_a_fresh_host(secrets, email_data):
    ops = run(certificates.install, data=email_data)
    names = [op.name for op in ops]
    for key in NAMES:
        assert f"{key} certificate chain" in names and f"{key} private key" in names
    key_op = next(op for op in ops if op.name == "email private key")
    dest = "/etc/ssl/private/email.cacert.org.key.pem"
    staged = secret_file.staged_path(dest)
    assert f"chown root:root {staged} && chmod 600 {staged} && mv -f {staged} {dest} && " \
        f"rmdir {staged.rsplit('/', 1)[0]}" in key_op.commands
    assert key_op.uploads[staged] == (secrets / "email.key.pem").read_text()
    reload = next(op for op in ops if op.name.startswith("Reload the services using the "
                                                         "community"))
    assert reload.commands == certificates._reload_running(["postfix", "dovecot", "nginx"])


def test_a_key_group_makes_the_key_group_readable(secrets, email_data):
    email_data["certificates"]["selfservice_api"]["key_group"] = "cacert-selfservice-api"
    ops = run(certificates.install, data=email_data)
    key_op = next(op for op in ops if op.name == "selfservice_api private key")
    staged = secret_file.staged_path("/etc/cacert-selfservice-api/private/server.key.pem")
    assert any(f"chmod 640 {staged}" in c for c in key_op.commands)
    assert any("cacert-selfservice-api" in c and "chown" in c for c in key_op.commands)


def test_postfix_deploy_validates_before_reloading(secrets, email_data):
    ops = run(postfix.server, data=email_data)
    names = [op.name for op in ops]
    config = names.index("Postfix configuration (checked before it is used)")
    assert names.index("Reload Postfix") > config
    commands = ops[config].commands
    assert commands.index(postfix.CHECK.format(stage="/var/lib/cacert-deploy/staging/postfix")) \
        < min(i for i, c in enumerate(commands) if "mv -f" in c)
    assert "postmap /etc/postfix/transport" in commands
    assert "postalias /etc/aliases" in commands
    # Passwords travel in uploaded files, never in a command line.
    assert not any("postfix-Secret-1" in c for op in ops for c in op.commands)


def test_dovecot_and_mariadb_deploys_never_show_a_password(secrets, email_data):
    for deploy in (dovecot.server, mariadb.server):
        ops = run(deploy, data=email_data)
        assert ops
        for op in ops:
            for command in op.commands:
                assert "Secret" not in command and "alice-pw-123" not in command, op.name


def _vmail_op(email_data, users):
    ops = run(dovecot.server, email_data, facts=dict(FRESH, Users=users))
    return next(op for op in ops if op.name == "vmail user (owns every Maildir)")


def test_vmail_is_made_with_the_mail_root_as_its_home(secrets, email_data):
    email_data["mail_root"] = "/home/mailboxes"
    op = _vmail_op(email_data, {})
    assert any("useradd" in c and "-d /home/mailboxes" in c for c in op.commands), op.commands


def test_moving_the_mail_root_leaves_vmails_home_alone(secrets, email_data):
    # usermod -d refuses while any process runs as vmail (a Dovecot mail process, the
    # maildir check): the deploy that moves the mail failed on it now and then in the lab
    email_data["mail_root"] = "/srv/mail"
    uid = defaults()["vmail_uid"]
    existing = {defaults()["vmail_user"]: {
        "home": "/home/mailboxes", "shell": "/usr/sbin/nologin", "group": "vmail",
        "groups": [], "uid": uid, "gid": uid, "comment": None}}
    op = _vmail_op(email_data, existing)
    assert not any("usermod" in c for c in op.commands), op.commands
    assert not any("/home/mailboxes" in c or "/srv/mail" in c for c in op.commands), \
        op.commands


def test_the_rehash_user_exists_before_the_configuration_that_runs_as_it(secrets, email_data):
    ops = run(dovecot.server, data=email_data)
    names = [op.name for op in ops]
    user = names.index("Re-hash user (Dovecot's post-login step)")
    assert user < names.index("Dovecot configuration (checked before it is used)")
    commands = " ".join(ops[user].commands)
    assert "useradd" in commands and "dovecot-rehash" in commands
    assert "mkdir" not in commands and "/nonexistent" in commands   # no home is made


# SHOW GRANTS as MariaDB prints it for the re-hash account once accounts.sql has run.
REHASH_GRANTS = ["GRANT USAGE ON *.* TO `dovecot-rehash`@`localhost` IDENTIFIED VIA unix_socket",
                 "GRANT EXECUTE ON PROCEDURE `cacertusers`.`rehash_password` TO "
                 "`dovecot-rehash`@`localhost`"]
GRANT_AGAIN = "cacertusers: the re-hash account's EXECUTE grant"


def test_a_lost_rehash_grant_is_given_back_after_the_sql_files(secrets, email_data):
    # A loaded dump replaced rehash_password, and MariaDB dropped its grant with it.
    ops = run(mariadb.server, data=email_data,
              facts={**FRESH, "RehashGrants": REHASH_GRANTS[:1]})
    names = [op.name for op in ops]
    again = next(i for i, n in enumerate(names) if n.startswith(GRANT_AGAIN))
    assert again > next(i for i, n in enumerate(names) if n.startswith("cacertusers: schema"))
    assert ops[again].commands == ["mariadb --batch < /var/lib/cacert-deploy/mariadb/accounts.sql"]


def test_a_present_rehash_grant_adds_no_operation(secrets, email_data):
    ops = run(mariadb.server, data=email_data,
              facts={**FRESH, "RehashGrants": REHASH_GRANTS})
    assert not any(op.name.startswith(GRANT_AGAIN) for op in ops)
    # an older MariaDB's quoting
    quoted = [g.replace("`", "'") for g in REHASH_GRANTS]
    ops = run(mariadb.server, data=email_data,
              facts={**FRESH, "RehashGrants": quoted})
    assert not any(op.name.startswith(GRANT_AGAIN) for op in ops)
    # another database's procedure of that name is not the grant the deploy needs
    other = [g.replace("`cacertusers`", "`otherdb`") for g in REHASH_GRANTS]
    ops = run(mariadb.server, data=email_data,
              facts={**FRESH, "RehashGrants": other})
    assert any(op.name.startswith(GRANT_AGAIN) for op in ops)
