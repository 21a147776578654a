"""operations/live_facts.py parsers and operations/adopt.py's adopted data, on outputs captured
from real servers: Debian 12's stock Postfix/Dovecot, the deployed lab container, and the lab's
Puppet-era bullseye container (adopt_samples/)."""
import datetime
from pathlib import Path

import pytest

from tests.unit.deploy import fake_host  # noqa: F401  (puts the repository on sys.path)
from operations import adopt, live_facts as lf

SAMPLES = Path(__file__).parent / "adopt_samples"
NOW = datetime.datetime(2026, 12, 6, tzinfo=datetime.timezone.utc)


def sample(name):
    return (SAMPLES / name).read_text()


def test_aliases_of_the_legacy_server():
    assert lf.parse_aliases(sample("legacy-aliases")) == {
        "postmaster": "alice@cacert.test", "webmaster": "bob@cacert.test",
        "abuse": "postmaster", "root": "postmaster", "mailer-daemon": "postmaster"}


def test_aliases_continuation_lines_and_bad_line():
    text = "# c\nlists: a@x,\n  b@x\n\nroot:   postmaster\n"
    assert lf.parse_aliases(text) == {"lists": "a@x, b@x", "root": "postmaster"}
    with pytest.raises(ValueError, match="not `name: target`"):
        lf.parse_aliases("no colon here\n")


def test_arbitration_rules_keep_the_regexp_without_slashes():
    rules, problems = lf.parse_regexp_map(sample("legacy-arbitration"))
    assert rules == [{"match": r"^arbitration-[0-9]+@cacert\.test$", "to": "bob@cacert.test"},
                     {"match": r"^(.+)\+deleted@cacert\.test$", "to": "alice@cacert.test"}]
    assert problems == []


def test_arbitration_rules_the_inventory_cannot_hold_are_named():
    rules, problems = lf.parse_regexp_map("/^a@x$/i b@x\nif /^c/\n/^d@x$/ e@x\n")
    assert rules == [{"match": "^d@x$", "to": "e@x"}]
    assert len(problems) == 2 and "flags 'i'" in problems[0] and "if /^c/" in problems[1]


def test_hash_maps_of_the_legacy_server():
    assert lf.parse_hash_map(sample("legacy-cacert-inc-bcc")) == {
        "alice@cacert.test": "bob@cacert.test"}
    assert lf.parse_hash_map(sample("legacy-transport")) == {
        "lists.cacert.test": "smtp:[lists.cacert.test]"}


def test_postconf_n_of_debian_and_of_the_legacy():
    stock = lf.parse_postconf(sample("debian12-postconf-n.txt"))
    assert stock["relayhost"] == "" and stock["recipient_delimiter"] == "+"
    assert stock["smtpd_relay_restrictions"] == \
        "permit_mynetworks permit_sasl_authenticated defer_unauth_destination"
    legacy = lf.parse_postconf(sample("legacy-postconf-n.txt"))
    assert legacy["virtual_alias_maps"] == ("regexp:/etc/postfix/arbitration "
                                            "proxy:mysql:/etc/postfix/mysql-virtual-alias-maps.cf")
    assert legacy["compatibility_level"] == "2" and legacy["mydomain"] == "cacert.test"


def test_doveconf_n_sections_flattened():
    deployed = lf.parse_doveconf(sample("deployed-doveconf-n.txt"))
    assert deployed["passdb/driver"] == "sql"
    assert deployed["passdb/args"] == "/etc/dovecot/dovecot-sql.conf.ext"
    assert deployed["service lmtp/unix_listener /var/spool/postfix/private/dovecot-lmtp/user"] \
        == "postfix"
    assert deployed["protocol lmtp/mail_plugins"] == "sieve"   # doveconf quotes " sieve"
    assert deployed["namespace inbox/mailbox Sent/special_use"] == r"\Sent"
    stock = lf.parse_doveconf(sample("debian12-doveconf-n.txt"))
    assert stock["passdb/driver"] == "pam" and stock["userdb/driver"] == "passwd"
    assert stock["ssl_key"] == "# hidden, use -P to show it"


def test_doveconf_repeated_sections_are_numbered():
    text = "passdb {\n  driver = sql\n}\npassdb {\n  driver = pam\n}\n"
    assert lf.parse_doveconf(text) == {"passdb/driver": "sql", "passdb #2/driver": "pam"}


def test_lxc_config_with_three_nics_extra_keys_and_a_mount():
    parsed = lf.parse_lxc_config(sample("legacy-lxc.conf"))
    data, problems = lf.lxc_inventory(parsed, "/srv/mail")
    assert problems == []
    assert data["container_net"] == {"link": "labbr0", "hwaddr": "00:16:3e:ca:ce:29",
                                     "ipv4": "10.0.3.29/24", "ipv4_gateway": "10.0.3.1",
                                     "ipv6": None, "ipv6_gateway": None}
    assert data["container_extra_nets"] == [
        {"name": "eth1", "link": "labbr1", "hwaddr": "00:16:3e:ca:ce:a9",
         "ipv4": "10.0.4.19/24", "ipv4_gateway": None, "ipv6": None, "ipv6_gateway": None},
        {"name": "eth2", "link": "labbr2", "hwaddr": "00:16:3e:ca:ce:b9",
         "ipv4": "10.0.5.19/24", "ipv4_gateway": None, "ipv6": None, "ipv6_gateway": None}]
    assert data["container_mounts"] == [
        {"source": "/srv/cacert-lab/legacy-spool", "target": "var/spool/legacy-extra",
         "type": "none", "options": "bind,create=dir"}]
    assert lf.lxc_unmanaged_keys(parsed) == [
        ["lxc.start.order", "10"], ["lxc.start.delay", "5"],
        ["lxc.cgroup2.memory.max", "2G"], ["lxc.prlimit.nofile", "16384"]]
    assert parsed["comments"][0].startswith("# Managed by Puppet")


def test_lxc_data_volume_mount_is_not_an_extra_mount():
    text = ("lxc.net.0.type = veth\nlxc.net.0.link = br0\nlxc.net.0.name = eth0\n"
            "lxc.net.0.ipv4.address = 10.1.1.1/24\nlxc.net.0.ipv4.address = 10.1.1.2/24\n"
            "lxc.mount.entry = /srv/email-data srv/mail none bind,create=dir 0 0\n")
    data, problems = lf.lxc_inventory(lf.parse_lxc_config(text), "/srv/mail")
    assert data["container_mounts"] == []
    assert data["container_net"]["ipv4"] == "10.1.1.1/24" and data["container_net"]["hwaddr"] is None
    assert problems == ["NIC eth0: only the first ipv4 address is kept of "
                        "10.1.1.1/24, 10.1.1.2/24"]


def test_information_schema_rows():
    legacy = lf.parse_schema_rows(sample("legacy-information-schema.tsv"))
    assert legacy["users"] == {"kind": "table", "columns": [
        "login", "mailbox", "password", "active", "realname", "created"]}
    assert legacy["legacy_dovecot_passdb"] == {"kind": "view", "columns": ["login", "password"]}
    assert set(lf.parse_schema_rows(sample("deployed-information-schema.tsv"))) == {
        "aliases", "users", "dovecot_users", "mailstore_mailboxes", "postfix_aliases",
        "postfix_mailboxes", "postfix_sender_logins"}


def test_grant_rows():
    assert lf.parse_grant_rows(sample("legacy-grants.tsv")) == {
        "dovecot@localhost": ["SELECT on legacy_dovecot_passdb"],
        "postfix@localhost": ["SELECT on aliases", "SELECT on users"]}


def test_password_schemes_counted_and_weak_ones_named():
    schemes = lf.parse_scheme_rows(sample("legacy-user-schemes.tsv"))
    assert schemes["counts"] == {"MD5-CRYPT": 2, "SHA512-CRYPT": 2}
    assert schemes["weak"] == {"MD5-CRYPT": ["bob@cacert.test", "dave@cacert.test"]}
    assert schemes["users"] == 4 and schemes["active"] == 3
    more = lf.parse_scheme_rows("a@x\tPLAIN-MD5\t1\nb@x\tPLAIN\t1\nc@x\tBLF-CRYPT\t1\n")
    assert more["weak"] == {"PLAIN-MD5": ["a@x"]} and more["cleartext"] == ["b@x"]


def test_scheme_query_never_selects_the_hash():
    sql = lf.UserSchemes().command(database="cacertusers")
    select = sql.split("SELECT", 1)[1].split("FROM `users`")[0]
    # `password` appears only inside the CASE conditions, never as a selected column.
    assert select.strip().startswith("login, CASE")
    assert select.rstrip().endswith("END, active")


def test_certificate_blocks():
    text = ("== postfix /etc/ssl/certs/email.cacert.test.pem\n" + sample("legacy-openssl-x509.txt")
            + "== nginx /etc/ssl/gone.pem\n" + lf.MISSING + "\n")
    certs = lf.parse_certificates(text)
    assert certs[0]["names"] == ["email.cacert.test"]
    assert certs[0]["not_after"] == "Dec  6 01:32:50 2027 GMT" and not certs[0]["missing"]
    assert certs[1]["missing"] and certs[1]["service"] == "nginx"


def test_mail_root_from_mail_location():
    assert lf.mail_root_of("maildir:/home/mailboxes/%n/Maildir") == "/home/mailboxes"
    assert lf.mail_root_of("maildir:~/Maildir") is None
    assert lf.mail_root_of(None) is None


def test_vmail_owner_rows():
    assert lf.parse_owner_rows("2000:2000 /home/mailboxes/alice/Maildir\n"
                               "0:0 /home/mailboxes/bob/Maildir\n") == {
        "0:0": ["bob"], "2000:2000": ["alice"]}
    assert lf.parse_getent_passwd("vmail:x:2000:2000::/home/mailboxes:/usr/sbin/nologin") == {
        "user": "vmail", "uid": 2000, "gid": 2000, "home": "/home/mailboxes"}


def _legacy_live():
    arbitration = lf.parse_regexp_map(sample("legacy-arbitration"))
    postconf = lf.parse_postconf(sample("legacy-postconf-n.txt"))
    return {
        "host": "email.cacert.test",
        "etc_aliases": lf.parse_aliases(sample("legacy-aliases")),
        "arbitration": arbitration,
        "recipient_bcc": lf.parse_hash_map(sample("legacy-cacert-inc-bcc")),
        "transports": lf.parse_hash_map(sample("legacy-transport")),
        "postconf": postconf, "doveconf": lf.parse_doveconf(sample("legacy-doveconf-n.txt")),
        "default_pass_scheme": "SHA512-CRYPT",
        "tables": lf.parse_schema_rows(sample("legacy-information-schema.tsv")),
        "grants": lf.parse_grant_rows(sample("legacy-grants.tsv")),
        "schemes": lf.parse_scheme_rows(sample("legacy-user-schemes.tsv")),
        "certificates": lf.parse_certificates(
            "== postfix /etc/ssl/certs/email.cacert.test.pem\n"
            + sample("legacy-openssl-x509.txt")),
        "packages": {"postfix": ["3.5.25-0+deb11u1"]},
        "mail_root": "/home/mailboxes",
        "vmail": {"vmail": {"user": "vmail", "uid": 2000, "gid": 2000, "home": "/x"},
                  "owners": {"2000:2000": ["alice", "bob"], "0:0": ["root-made"]}},
    }


def test_adopted_data_in_group_data_shapes():
    infra02 = {"host": "infra02", "container": "legacy",
               "lxc": lf.parse_lxc_config(sample("legacy-lxc.conf"))}
    data = {"vmail_user": "vmail", "mysql_database": "cacertusers", "data_volume": "/srv/mail",
            "mail_root": "/srv/mail"}
    adopted = adopt.adopted_data(_legacy_live(), infra02, data, NOW)
    assert adopted["etc_aliases"]["webmaster"] == "bob@cacert.test"
    assert adopted["arbitration_rewrites"][0]["to"] == "bob@cacert.test"
    assert adopted["recipient_bcc"] == {"alice@cacert.test": "bob@cacert.test"}
    assert adopted["transports"] == {"lists.cacert.test": "smtp:[lists.cacert.test]"}
    assert adopted["relayhost"] is None and adopted["vmail_uid"] == 2000
    assert adopted["mail_root"] == "/home/mailboxes" and adopted["mail_domain"] == "cacert.test"
    assert [n["name"] for n in adopted["container_extra_nets"]] == ["eth1", "eth2"]
    assert adopted["_password_schemes"] == {"MD5-CRYPT": 2, "SHA512-CRYPT": 2}
    findings = "\n".join(adopted["_findings"])
    assert "MD5-CRYPT, refused by Dovecot 2.4" in findings and "bob@cacert.test" in findings
    assert "Maildirs owned by 0:0, not vmail 2000:2000: root-made" in findings
    # Every non-"_" key is an inventory datum.
    from operations.defaults import defaults
    known = set(defaults()) | {"container_extra_nets", "container_mounts"}
    assert {k for k in adopted if not k.startswith("_")} <= known


def test_adopted_data_names_missing_files_and_expiring_certificates():
    live = _legacy_live()
    live.update(arbitration=None, recipient_bcc=None, etc_aliases=None)
    live["certificates"][0]["not_after"] = "Dec 20 00:00:00 2026 GMT"
    adopted = adopt.adopted_data(live, None, {"vmail_user": "vmail",
                                              "mysql_database": "cacertusers"}, NOW)
    assert adopted["arbitration_rewrites"] == [] and adopted["recipient_bcc"] == {}
    assert "etc_aliases" not in adopted
    findings = adopted["_findings"]
    assert "/etc/aliases is missing: etc_aliases not adopted" in findings
    assert any("expires in 14 day(s)" in f for f in findings)


def test_values_that_may_hold_a_secret_are_not_shown():
    dove = lf.parse_doveconf("sql_driver = mysql\nmysql localhost {\n  password = s3cret\n"
                             "  user = dovecot\n}\npassdb {\n  args = host=x password=s3cret "
                             "dbname=y\n}\nssl_key = # hidden, use -P to show it\n")
    assert dove["mysql localhost/password"] == lf.NOT_SHOWN
    assert dove["passdb/args"] == f"host=x password={lf.NOT_SHOWN} dbname=y"
    assert dove["mysql localhost/user"] == "dovecot"
    post = lf.parse_postconf("smtp_sasl_password_maps = hash:/etc/postfix/sasl_passwd\n"
                             "relay_password = static:u:s3cret\n")
    assert post["smtp_sasl_password_maps"] == "hash:/etc/postfix/sasl_passwd"
    assert post["relay_password"] == lf.NOT_SHOWN


def test_file_facts_tell_missing_from_unreadable(tmp_path):
    """The fact's shell command, run here on real files; a file of mode 0 is unreadable
    only when these tests do not run as root, so that case is also checked on its text."""
    import os
    import subprocess
    present = tmp_path / "aliases"
    present.write_text("root: postmaster\n")

    def fact_output(path):
        out = subprocess.run(["sh", "-c", lf.EtcAliases().command(path=str(path))],
                             capture_output=True, text=True).stdout
        return out.splitlines()

    assert lf.EtcAliases().process(fact_output(present)) == {"root": "postmaster"}
    assert fact_output(tmp_path / "missing") == [lf.MISSING]
    if os.geteuid() != 0:   # root reads everything: only the text form can be checked
        present.chmod(0)
        with pytest.raises(ValueError, match="not readable by the SSH user"):
            lf.EtcAliases().process(fact_output(present))
    with pytest.raises(ValueError, match="/etc/x is not readable by the SSH user"):
        lf.EtcAliases().process([f"{lf.UNREADABLE} /etc/x"])
