"""The mail path's files rendered with the lab's and production's inventory data."""
import copy
import json
import os
import re
import runpy
import shutil
import subprocess
from pathlib import Path

import bcrypt
import pytest
from conftest import NAMES, REPO, write_secret

from inventories import validate
from operations.defaults import defaults
from operations.secrets import SECRETS_ENV, InventoryError
from operations import certificates, dovecot, mariadb, postfix


def merged(overrides):
    return {**defaults(), **copy.deepcopy(overrides)}


@pytest.fixture
def lab_data(secrets, email_data):
    validate.checked("email", email_data)
    return merged(email_data)


def write_prod_secrets(directory, pki):
    """A secrets directory with production-named certificates and every secret prod needs."""
    write_secret(directory, "ca.pem", pki.pem_root())
    for key, names in {"email": ["email.cacert.org"], "community": ["community.cacert.org"],
                       "selfservice_api": ["email.infra.cacert.org"]}.items():
        chain, private = pki.leaf_pem(names)
        write_secret(directory, f"{key}.chain.pem", chain)
        write_secret(directory, f"{key}.key.pem", private)
    write_secret(directory, "mysql_postfix.password", "p1-secret\n")
    write_secret(directory, "mysql_dovecot.password", "p2-secret\n")
    write_secret(directory, "backup.key", "fedcba9876543210" * 4 + "\n")
    write_secret(directory, "icinga2_api.password", "p3-secret\n")
    write_secret(directory, "icinga2-agent.ticket", "0123456789abcdef" * 2 + "01234567\n")
    write_secret(directory, "icinga2_api_backup_copy.password", "p4-secret\n")
    return directory


def prod_completion(tmp_path, pki):
    """What inventories/prod.py leaves to the operators (keys, gateway, the further NICs'
    bridges, MACs and prefix lengths, trusted hosts, the self-service API's repository and
    client CA), with test values."""
    files = tmp_path / "prod-files"
    files.mkdir(exist_ok=True)
    (files / "archive-key.asc").write_text("-----BEGIN PGP PUBLIC KEY BLOCK-----\n")
    (files / "client-ca.pem").write_text(pki.pem_root())
    (files / "icinga-ca.pem").write_text(pki.pem_root())
    return {
        "root_authorized_keys": [
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE "
            "deploy@control"],
        "gateway": "213.154.225.1",
        "nets": {"eth1": {"link": "br-intra", "hwaddr": "00:16:3e:00:02:19", "prefix": "24"},
                 "eth2": {"link": "br-infra", "hwaddr": "00:16:3e:00:00:19", "prefix": "24"}},
        "trusted_hosts": {"monitor": ["192.0.2.10"], "community": ["192.0.2.20"]},
        "selfservice_api_repo": {"url": "https://apt.example.org/debian", "suite": None,
                                 "components": ["main"], "key": str(files / "archive-key.asc"),
                                 "direct": False},
        "selfservice_api_client_ca": str(files / "client-ca.pem"),
        "backup_pull_keys": [
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEQn+9vii7ZoNLvksPT1HnD50j+fCM89lt8x9M159MsY "
            "mailstore-copies@backup"],
        "backup_pull_from": ["192.0.2.39"],
        "backup_host": {
            "ssh_hostname": "192.0.2.39",
            "backup_copy_source_host_keys": [
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIbG5tgdi2RhF0123456789abcdefghijklmnopq"],
            "backup_copy_icinga": {
                "host": "backup.infra.cacert.org", "url": "https://192.0.2.10:5665",
                "tls_name": "monitor.cacert.org", "ca": str(files / "icinga-ca.pem"),
                "user": "mailstore-backup-copy",
                "password_secret": "icinga2_api_backup_copy.password"},
        },
    }


# inventories/prod.py with prod_completion()'s values filled in, as an inventory file (for
# pyinfra, and loaded in-process by the prod_data fixture).
COMPLETED_PROD = """
import copy, json, runpy
from inventories import validate

_fill = json.loads(FILL)
_stop_unless_valid = validate.stop_unless_valid


def _completed(production=False, **groups):
    for group, hosts in groups.items():
        for _name, _data in hosts:
            if group == "backup_host":
                _data.update(copy.deepcopy(_fill["backup_host"]))
                continue
            _data.update(copy.deepcopy({k: v for k, v in _fill.items()
                                        if k not in ("gateway", "nets", "backup_host")}))
            _data["container_net"] = dict(_data["container_net"], ipv4_gateway=_fill["gateway"])
            _data["container_extra_nets"] = [
                dict(_net, link=_fill["nets"][_net["name"]]["link"],
                     hwaddr=_fill["nets"][_net["name"]]["hwaddr"],
                     ipv4=_net["ipv4"].replace("PLACEHOLDER-prefix-length",
                                               _fill["nets"][_net["name"]]["prefix"]))
                for _net in _data["container_extra_nets"]]
    _stop_unless_valid(production=production, **groups)


validate.stop_unless_valid = _completed
try:
    _prod = runpy.run_path(PROD)
finally:
    validate.stop_unless_valid = _stop_unless_valid
infra02, email, backup_host = _prod["infra02"], _prod["email"], _prod["backup_host"]
"""


def completed_prod_inventory(tmp_path, pki):
    """The path of a COMPLETED_PROD inventory file."""
    fill = json.dumps(prod_completion(tmp_path, pki))
    path = tmp_path / "completed_prod.py"
    path.write_text(COMPLETED_PROD.replace("FILL", repr(fill))
                    .replace("PROD", repr(str(REPO / "inventories" / "prod.py"))))
    return path


@pytest.fixture
def prod_data(tmp_path, monkeypatch, pki):
    """inventories/prod.py, loaded (and so validated, as production) with production-named
    test secrets and test values where the operators fill in theirs."""
    directory = write_prod_secrets(tmp_path / "prod-secrets", pki)
    monkeypatch.setenv(SECRETS_ENV, str(directory))
    inventory = runpy.run_path(str(completed_prod_inventory(tmp_path, pki)))
    (name, data), = inventory["email"]
    assert name == "email.cacert.org"
    return merged(data)


def by_dest(files):
    return {f.dest: f for f in files}


# --- production inventory -----------------------------------------------------------------

def test_prod_inventory_without_secrets_stops_before_any_host(monkeypatch, capsys):
    monkeypatch.delenv(SECRETS_ENV, raising=False)
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(REPO / "inventories" / "prod.py"))
    assert exit_.value.code == 2
    assert "email.cacert.org: $CACERT_EMAIL_SECRETS is not set" in capsys.readouterr().err


def test_prod_inventory_holds_the_documented_facts(prod_data):
    assert prod_data["container_net"]["hwaddr"] == "00:ff:8f:e0:4a:90"
    assert prod_data["container_net"]["ipv4"].startswith("213.154.225.228/")
    assert prod_data["container_net"]["ipv6"].startswith("2001:7b8:616:162:2::228/")
    assert [(net["name"], net["ipv4"].split("/")[0])
            for net in prod_data["container_extra_nets"]] == [("eth1", "172.16.2.19"),
                                                              ("eth2", "10.0.0.19")]
    assert prod_data["mysql_database"] == "cacertusers"
    assert prod_data["ports"]["mariadb"] == {"port": 3306, "from": "local"}
    assert prod_data["ports"]["selfservice_api"] == {"port": 9443, "from": "community"}
    assert prod_data["certificates"]["community"]["cert"] == \
        "/etc/ssl/public/community.cacert.org.chain.pem"
    assert prod_data["mail_accounts"] == [] and prod_data["mail_aliases"] == []


def _pyinfra(*args, env):
    result = subprocess.run([str(REPO / ".venv" / "bin" / "pyinfra"), *args], cwd=REPO,
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO), **env})
    return result, result.stdout + result.stderr      # pyinfra logs to stderr


def test_pyinfra_loads_the_completed_prod_inventory_without_connecting(tmp_path, pki):
    directory = write_prod_secrets(tmp_path / "prod-secrets", pki)
    inventory = completed_prod_inventory(tmp_path, pki)
    result, output = _pyinfra(str(inventory), "debug-inventory",
                              env={SECRETS_ENV: str(directory)})
    assert result.returncode == 0, output
    assert "[infra02]" in output and "[email.cacert.org]" in output
    assert "--> Groups: email" in output


def test_pyinfra_stops_on_the_prod_inventory_listing_every_problem(tmp_path, pki):
    """As prod.py stands (values the operators must still fill in) and with two secrets
    missing: every problem on one line each, the run ends before any connection, without
    a traceback."""
    directory = write_prod_secrets(tmp_path / "prod-secrets", pki)
    (directory / "icinga2_api.password").unlink()
    (directory / "icinga2-agent.ticket").unlink()
    result, output = _pyinfra("inventories/prod.py", "deploy.py", "--dry",
                              env={SECRETS_ENV: str(directory)})
    assert result.returncode == 2, output
    assert "Traceback" not in output and "Connecting" not in output, output
    problems = [line.strip() for line in result.stderr.splitlines() if line.startswith("  ")]
    expected = [
        "infra02: root_authorized_keys: empty",
        *(f"infra02, email.cacert.org: container_extra_nets[{i}][{field!r}]: "
          f"'{value}' is a placeholder"
          for i, nic in enumerate(("eth1", "eth2"))
          for field, value in (("link", f"PLACEHOLDER-{('intranet', 'internal')[i]}-bridge"),
                               ("hwaddr", f"PLACEHOLDER-{nic}-mac"),
                               ("ipv4", f"{('172.16.2.19', '10.0.0.19')[i]}/"
                                        "PLACEHOLDER-prefix-length"))),
        "infra02, email.cacert.org: container_net ipv4_gateway: missing",
        "infra02, email.cacert.org: trusted_hosts['monitor']: empty, so nothing may reach "
        "ports['icinga2'] (port 5665)",
        "infra02, email.cacert.org: trusted_hosts['community']: empty, so nothing may reach "
        "ports['selfservice_api'] (port 9443)",
        "infra02, email.cacert.org: selfservice_api_repo['url']: 'https://PLACEHOLDER",
        "infra02, email.cacert.org: selfservice_api_repo['key']: 'files/selfservice_api/"
        "PLACEHOLDER",
        "infra02, email.cacert.org: selfservice_api_client_ca: 'files/selfservice_api/"
        "PLACEHOLDER",
        "email.cacert.org: backup_pull_keys: 'PLACEHOLDER-backup-host-pull-key'... is not "
        "one SSH public key line",
        f"email.cacert.org: secret {directory.resolve()}/icinga2_api.password is missing",
        "email.cacert.org: backup_pull_keys[0]: 'PLACEHOLDER-backup-host-pull-key' is a "
        "placeholder",
        "email.cacert.org: backup_pull_from[0]: 'PLACEHOLDER-backup-host-address' is a "
        "placeholder",
        f"email.cacert.org: secret {directory.resolve()}/icinga2-agent.ticket is missing",
        "backup.cacert.org: backup_copy_source_host_keys: must list the mail server's SSH host "
        "keys",
        "backup.cacert.org: ssh_hostname: 'PLACEHOLDER-backup-host-address' is a placeholder",
        "backup.cacert.org: backup_copy_source_host_keys[0]: 'ssh-ed25519 "
        "PLACEHOLDER-email-ssh-host-key' is a placeholder",
        *(f"backup.cacert.org: backup_copy_icinga[{key!r}]: '{value}' is a placeholder"
          for key, value in (("host", "PLACEHOLDER-backup-host-icinga-name"),
                             ("url", "https://PLACEHOLDER-icinga-master-address:5665"),
                             ("tls_name", "PLACEHOLDER-icinga-master-node-name"),
                             ("ca", "PLACEHOLDER-icinga-ca.pem"))),
    ]
    assert len(problems) == len(expected), result.stderr
    for line, start in zip(problems, expected):
        assert line.startswith(start), (line, start)
    assert f"The inventory has {len(expected)} problems; no host was contacted:" in \
        result.stderr


def test_no_secret_in_the_repository():
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    assert not [f for f in tracked if f.endswith((".key.pem", ".password"))]


# --- Postfix -------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["lab_data", "prod_data"])
def test_postfix_renders_for_both_inventories(request, which):
    data = request.getfixturevalue(which)
    files = by_dest(postfix.config_files(data, "pw-x"))
    main = files["/etc/postfix/main.cf"].content
    assert f"myhostname = {data['hostnames']['email']}" in main
    assert f"smtpd_tls_cert_file = {data['certificates']['email']['cert']}" in main
    assert f"smtp_tls_cert_file = {data['certificates']['email']['cert']}" in main
    assert "mailbox_transport = lmtp:unix:private/dovecot-lmtp" in main
    assert "smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, " \
           "reject_unauth_destination" in main
    assert "relayhost = \n" in main
    master = files["/etc/postfix/master.cf"].content
    for port in (25, 465, 587):
        assert f"\n{port} " in "\n" + master
    assert master.count(f"smtpd_tls_cert_file={data['certificates']['community']['cert']}") == 2
    assert master.count("smtpd_sender_restrictions=reject_sender_login_mismatch") == 2
    assert master.count("smtpd_tls_security_level=encrypt") == 2
    assert "smtpd_tls_wrappermode=yes" in master


def test_postfix_maps_and_aliases_for_the_lab(lab_data):
    files = by_dest(postfix.config_files(lab_data, "pw-x"))
    transport = files["/etc/postfix/transport"]
    assert "lists.cacert.test smtp:[10.0.3.1]:2525\n" in transport.content
    assert transport.then == "postmap /etc/postfix/transport"
    assert transport.product == "/etc/postfix/transport.db"
    aliases = files["/etc/aliases"]
    assert "postmaster: alice@cacert.test\n" in aliases.content       # send_as False
    assert "pr:" not in aliases.content                               # send_as: the table
    assert aliases.then == "postalias /etc/aliases"
    sender = files["/etc/postfix/mysql-sender-logins.cf"]
    assert (sender.mode, sender.group) == ("640", "postfix")
    assert "password = pw-x\n" in sender.content
    assert "query = SELECT owner FROM postfix_sender_logins WHERE address = '%s'" in sender.content


def test_arbitration_and_bcc_from_inventory(lab_data):
    lab_data["arbitration_rewrites"] = [
        {"match": r"^gone@cacert\.test$", "to": "support+deletedaccounts@cacert.test"}]
    lab_data["recipient_bcc"] = {"pr@cacert.test": "bob@cacert.test"}
    files = by_dest(postfix.config_files(lab_data, "pw"))
    assert "/^gone@cacert\\.test$/ support+deletedaccounts@cacert.test\n" in \
        files["/etc/postfix/arbitration"].content
    assert "pr@cacert.test bob@cacert.test\n" in files["/etc/postfix/cacert-inc-bcc"].content


def test_relayhost_and_extra_parameters(lab_data):
    lab_data["relayhost"] = "[emailout.cacert.test]"
    lab_data["postfix_main_cf_extra"] = {"message_size_limit": 52428800}
    main = by_dest(postfix.config_files(lab_data, "pw"))["/etc/postfix/main.cf"].content
    assert "relayhost = [emailout.cacert.test]\n" in main
    assert main.rstrip().endswith("message_size_limit = 52428800")


def test_a_missing_datum_is_an_error_not_an_empty_value(lab_data):
    del lab_data["relayhost"]
    with pytest.raises(Exception, match="relayhost"):
        postfix.config_files(lab_data, "pw")


# --- Dovecot -------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["lab_data", "prod_data"])
def test_dovecot_renders_for_both_inventories(request, which):
    data = request.getfixturevalue(which)
    files = by_dest(dovecot.config_files(data, "pw-d"))
    conf = files["/etc/dovecot/dovecot.conf"].content
    assert "ssl = required\n" in conf and "disable_plaintext_auth = yes\n" in conf
    assert f"ssl_cert = <{data['certificates']['community']['cert']}\n" in conf
    assert "unix_listener /var/spool/postfix/private/dovecot-lmtp" in conf
    assert "unix_listener /var/spool/postfix/private/auth" in conf
    assert "mail_plugins = $mail_plugins sieve" in conf
    sql = files["/etc/dovecot/dovecot-sql.conf.ext"]
    assert (sql.mode, sql.group) == ("640", "dovecot")
    assert f"CONCAT('{data['mail_root']}/', mailbox) AS home" in sql.content
    assert "password=pw-d" in sql.content
    assert "!include dovecot-auth.conf.ext\n" in conf


def rehash_lines(files):
    """The re-hash at login as the rendered auth and SQL parts say it, whatever the version."""
    auth = files["/etc/dovecot/dovecot-auth.conf.ext"]
    sql = files["/etc/dovecot/dovecot-sql.conf.ext"].content
    assert (auth.mode, auth.user) == ("644", "root")      # no secret in it
    assert "pw-d" not in auth.content
    for service in ("imap", "pop3", "managesieve"):
        assert f"executable = {service} {service}-postlogin\n" in auth.content
        assert f"unix_listener {service}-postlogin {{" in auth.content
    assert ("executable = script-login /opt/mailstore/venv/bin/mailstore-rehash-login\n"
            in auth.content)
    assert "user = dovecot-rehash\n" in auth.content
    # The stored hash only when it is not {BLF-CRYPT}; the cleartext never in the query.
    assert ("IF(LEFT(password, 11) = '{BLF-CRYPT}', NULL, password) AS userdb_rehash_oldpass"
            in sql)
    query = [line for line in sql.splitlines() if "query" in line and "SELECT" in line]
    assert query and not any("%w" in line or "%{password}" in line for line in query)
    return auth.content, sql


def test_dovecot_2_3_hands_the_password_to_the_rehash_step_only(lab_data):
    auth, sql = rehash_lines(by_dest(dovecot.config_files(lab_data, "pw-d")))
    assert "  override_fields = userdb_rehash_pass=%w\n" in auth
    assert "auth_allow_weak_schemes" not in auth           # 2.3 has no such setting


@pytest.mark.parametrize("allow", [True, False])
def test_dovecot_2_4_allows_weak_schemes_as_the_inventory_says(lab_data, allow):
    lab_data.update(debian_release="trixie", dovecot_allow_weak_schemes=allow)
    auth, sql = rehash_lines(by_dest(dovecot.config_files(lab_data, "pw-d")))
    assert f"auth_allow_weak_schemes = {'yes' if allow else 'no'}\n" in auth
    assert "!include dovecot-sql.conf.ext\n" in auth
    assert "  fields {\n    userdb_rehash_pass = %{password}\n  }\n" in sql


def test_weak_schemes_are_allowed_by_default_and_must_be_a_bool(lab_data):
    assert defaults()["dovecot_allow_weak_schemes"] is True
    assert any("dovecot_allow_weak_schemes='no': must be True or False" in line
               for line in validate.problems("email", {**lab_data,
                                                       "dovecot_allow_weak_schemes": "no"}))


def test_trixie_gets_the_dovecot_2_4_templates(lab_data):
    lab_data["debian_release"] = "trixie"
    files = by_dest(dovecot.config_files(lab_data, "pw-d"))
    conf = files["/etc/dovecot/dovecot.conf"].content
    assert conf.startswith("# Managed by cacert-email (files/dovecot/2.4/")
    assert "dovecot_config_version = 2.4.0" in conf
    assert f"ssl_server_cert_file = {lab_data['certificates']['community']['cert']}" in conf
    assert "auth_allow_cleartext = no" in conf and "ssl = required" in conf
    # Included relatively: the staged dovecot.conf is validated with the staged parts.
    assert "!include dovecot-auth.conf.ext" in conf
    assert "!include dovecot-sql.conf.ext" in files["/etc/dovecot/dovecot-auth.conf.ext"].content
    sql = files["/etc/dovecot/dovecot-sql.conf.ext"].content
    assert "password = pw-d" in sql and "WHERE login = '%{user}'" in sql


def test_a_release_without_templates_is_refused(lab_data):
    lab_data["debian_release"] = "forky"
    with pytest.raises(InventoryError, match="forky: no Dovecot templates"):
        dovecot.config_files(lab_data, "pw")


@pytest.mark.skipif(not shutil.which("doveconf"), reason="doveconf (dovecot-core) not installed")
@pytest.mark.skipif(not Path("/usr/lib/dovecot/managesieve").exists(),
                    reason="dovecot-managesieved is not installed: doveconf would refuse the "
                           "sieve protocol (tests/packages lists it)")
def test_rendered_dovecot_conf_passes_doveconf(lab_data, secrets, tmp_path):
    """The real validator accepts what the template makes (certificates at temporary paths)."""
    for key in NAMES:
        lab_data["certificates"][key]["cert"] = str(secrets / f"{key}.chain.pem")
        lab_data["certificates"][key]["key"] = str(secrets / f"{key}.key.pem")
    rendered = dovecot.config_files(lab_data, "pw")
    conf = by_dest(rendered)["/etc/dovecot/dovecot.conf"]
    assert "protocols = imap pop3 lmtp sieve" in conf.content
    for part in rendered:                                  # the parts are included relatively
        (tmp_path / os.path.basename(part.dest)).write_text(part.content)
    path = tmp_path / "dovecot.conf"
    result = subprocess.run(["doveconf", "-c", str(path), "-n"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "ssl = required" in result.stdout
    assert "executable = script-login /opt/mailstore/venv/bin/mailstore-rehash-login" in (
        result.stdout)


@pytest.mark.skipif(not shutil.which("doveconf"), reason="doveconf (dovecot-core) not installed")
def test_doveconf_refuses_a_broken_conf(tmp_path):
    path = tmp_path / "dovecot.conf"
    path.write_text("protocols = imap\nno_such_setting = 1\n")
    result = subprocess.run(["doveconf", "-c", str(path), "-n"], capture_output=True, text=True)
    assert result.returncode != 0 and "no_such_setting" in result.stderr


# --- MariaDB -------------------------------------------------------------------------------

def test_password_hash_is_stable_and_verifies():
    first = mariadb.password_hash("alice@cacert.test", "alice-pw-123")
    assert first == mariadb.password_hash("alice@cacert.test", "alice-pw-123")
    assert first != mariadb.password_hash("bob@cacert.test", "alice-pw-123")   # per-login salt
    assert first.startswith("{BLF-CRYPT}$2b$10$")
    hashed = first[len("{BLF-CRYPT}"):].encode()
    assert bcrypt.checkpw(b"alice-pw-123", hashed)
    assert not bcrypt.checkpw(b"alice-pw-124", hashed)


@pytest.mark.skipif(not shutil.which("doveadm"), reason="doveadm (dovecot-core) not installed")
def test_dovecot_verifies_the_hash():
    hashed = mariadb.password_hash("alice@cacert.test", "alice-pw-123")
    ok = subprocess.run(["doveadm", "pw", "-t", hashed, "-p", "alice-pw-123"],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "(verified)" in ok.stdout
    bad = subprocess.run(["doveadm", "pw", "-t", hashed, "-p", "wrong"], capture_output=True)
    assert bad.returncode != 0


def test_sql_files(lab_data):
    schema, accounts, seed = mariadb.sql_files(lab_data)
    assert all(f.mode == "600" for f in (schema, accounts, seed))
    assert "CREATE DATABASE IF NOT EXISTS `cacertusers`" in schema.content
    assert "CREATE TABLE IF NOT EXISTS users" in schema.content
    assert schema.content.count("CREATE OR REPLACE SQL SECURITY DEFINER VIEW") == 5
    assert "ALTER USER 'postfix'@'localhost' IDENTIFIED BY 'postfix-Secret-1';" in accounts.content
    grants = [line for line in accounts.content.splitlines() if line.startswith("GRANT")]
    assert grants == [
        "GRANT SELECT ON `cacertusers`.`dovecot_users` TO 'dovecot'@'localhost';",
        "GRANT SELECT ON `cacertusers`.`postfix_mailboxes` TO 'postfix'@'localhost';",
        "GRANT SELECT ON `cacertusers`.`postfix_aliases` TO 'postfix'@'localhost';",
        "GRANT SELECT ON `cacertusers`.`postfix_sender_logins` TO 'postfix'@'localhost';",
        "GRANT SELECT ON `cacertusers`.`mailstore_mailboxes` TO 'postfix'@'localhost';",
        "GRANT EXECUTE ON PROCEDURE `cacertusers`.`rehash_password`",
    ]
    # The re-hash account logs in as its system user: no password anywhere.
    assert ("CREATE USER IF NOT EXISTS 'dovecot-rehash'@'localhost' IDENTIFIED VIA unix_socket;"
            in accounts.content)
    assert "'dovecot-rehash'@'localhost' IDENTIFIED BY" not in accounts.content
    assert "CREATE OR REPLACE PROCEDURE rehash_password(" in schema.content
    assert "VALUES ('alice@cacert.test', 'alice', '{BLF-CRYPT}$2b$10$" in seed.content
    assert "VALUES ('pr@cacert.test', 'alice@cacert.test', 1)" in seed.content
    assert "postmaster@" not in seed.content               # send_as False: /etc/aliases
    assert "alice-pw-123" not in seed.content             # only the hash


def test_sql_files_for_prod_seed_nothing(prod_data):
    seed = mariadb.sql_files(prod_data)[2].content
    assert "INSERT" not in seed


# --- certificates -------------------------------------------------------------------------

def test_reload_only_running_services():
    assert certificates._reload_running(["postfix", "nginx"]) == [
        "if systemctl is-active --quiet postfix; then systemctl reload-or-restart postfix; fi",
        "if systemctl is-active --quiet nginx; then systemctl reload-or-restart nginx; fi",
    ]


def test_postfix_for_bullseye_uses_only_what_postfix_3_5_knows(lab_data):
    lab_data["debian_release"] = "bullseye"
    main = by_dest(postfix.config_files(lab_data, "pw"))["/etc/postfix/main.cf"].content
    assert "compatibility_level = 2\n" in main
    # Protocol ranges (">=TLSv1.2") need Postfix 3.6.
    protocols = [line for line in main.splitlines() if line.startswith("smtpd_tls_")
                 and "protocols" in line]
    assert protocols and not any(">=" in line for line in protocols)


def _postconf(main_cf):
    """{parameter: value} of a main.cf text, continuation lines joined (postconf -n's view)."""
    joined = re.sub(r"\n[ \t]+", " ", main_cf)
    return dict(line.split(" = ", 1) for line in joined.splitlines()
                if line and not line.startswith("#"))


@pytest.mark.parametrize("which", ["lab_data", "prod_data"])
def test_the_inbound_hold_defers_every_recipient_and_bounces_nothing(request, which):
    data = request.getfixturevalue(which)
    normal = _postconf(by_dest(postfix.config_files(data, "pw"))["/etc/postfix/main.cf"].content)
    data["postfix_inbound_hold"] = True
    held = _postconf(by_dest(postfix.config_files(data, "pw"))["/etc/postfix/main.cf"].content)
    # `defer` first: decided before the (empty) database could say "unknown user" (550).
    assert held["smtpd_recipient_restrictions"].split(", ")[0] == "defer"
    assert held["smtpd_recipient_restrictions"] == \
        "defer, " + normal["smtpd_recipient_restrictions"]
    assert held["soft_bounce"] == "yes"
    assert held["defer_transports"] == "local lmtp"
    assert {k: v for k, v in held.items() if k not in ("soft_bounce", "defer_transports")} \
        == {**normal, "smtpd_recipient_restrictions": held["smtpd_recipient_restrictions"]}
    assert "soft_bounce" not in normal and "defer_transports" not in normal
    assert "defer" not in normal["smtpd_recipient_restrictions"].split(", ")


def test_an_inbound_hold_that_is_not_true_or_false_is_named(email_data):
    found = validate.problems("email", {**email_data, "postfix_inbound_hold": "yes"})
    assert "postfix_inbound_hold='yes': must be True or False" in found
