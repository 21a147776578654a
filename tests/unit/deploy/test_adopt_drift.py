"""operations/drift.py comparisons on captured outputs of the lab's Puppet-era bullseye server
(adopt_samples/) against the deploy's own templates rendered for it."""
import io
from pathlib import Path

from tests.unit.deploy import fake_host  # noqa: F401  (puts the repository on sys.path)
from operations import drift, live_facts as lf, mariadb
from operations.defaults import defaults
from operations.secret_file import staged_path
from operations.staging import render

SAMPLES = Path(__file__).parent / "adopt_samples"


def sample(name):
    return (SAMPLES / name).read_text()


def whats(findings, kind=None):
    return [f["what"] for f in findings if kind is None or f["kind"] == kind]


def legacy_data(**extra):
    data = defaults()
    data.update(debian_release="bullseye", mail_domain="cacert.test",
                hostnames={"email": "email.cacert.test", "community": "community.cacert.test",
                           "infra": "email.infra.cacert.test",
                           "intra": "email.intra.cacert.test"}, **extra)
    return data


def test_schema_drift_against_the_deploy_schema():
    deploy = drift.parse_schema_sql(render("files/mariadb/schema.sql.j2", **legacy_data()))
    assert deploy["users"]["columns"] == ["login", "mailbox", "password", "active"]
    assert deploy["postfix_sender_logins"] == {"kind": "view", "columns": ["address", "owner"]}
    live = lf.parse_schema_rows(sample("legacy-information-schema.tsv"))
    found = whats(drift.schema_drift("h", deploy, live, "cacertusers"))
    assert "cacertusers.dovecot_users: view added (login, mailbox, password)" in found
    assert ("cacertusers.users: live column(s) realname, created unknown to the deploy (kept)"
            in found)
    assert ("cacertusers.legacy_dovecot_passdb: live view unknown to the deploy (kept; nothing "
            "of the deploy reads it)") in found
    assert not any(w.startswith("cacertusers.aliases:") for w in found)   # same columns


def test_schema_drift_a_missing_column_is_not_added_by_the_deploy():
    deploy = drift.parse_schema_sql(render("files/mariadb/schema.sql.j2", **legacy_data()))
    live = {"users": {"kind": "table", "columns": ["login", "password"]},
            **{n: o for n, o in deploy.items() if n != "users"}}
    found = whats(drift.schema_drift("h", deploy, live, "cacertusers"))
    assert found == ["cacertusers.users: lacks column(s) mailbox, active; CREATE TABLE IF NOT "
                     "EXISTS does not add them: the views on it would fail (ALTER first)"]


def test_deployed_schema_has_no_drift():
    deploy = drift.parse_schema_sql(render("files/mariadb/schema.sql.j2", **legacy_data()))
    live = lf.parse_schema_rows(sample("deployed-information-schema.tsv"))
    assert drift.schema_drift("h", deploy, live, "cacertusers") == []


def test_grants_drift_sets_and_revokes_and_names_unmanaged_accounts():
    live = lf.parse_grant_rows(sample("legacy-grants.tsv"))
    live["backup@localhost"] = ["SELECT on *"]
    found = whats(drift.grants_drift("h", mariadb.ACCOUNT_VIEWS, live, "cacertusers"))
    assert "dovecot@localhost: granted SELECT on dovecot_users" in found
    assert "dovecot@localhost: revoked SELECT on legacy_dovecot_passdb" in found
    assert "postfix@localhost: revoked SELECT on aliases, SELECT on users" in found
    assert ("backup@localhost: not managed by operations/mariadb.py (kept): SELECT on *"
            in found)


def test_vmail_drift():
    live = {"vmail": {"user": "vmail", "uid": 2000, "gid": 2000, "home": "/x"},
            "owners": {"2000:2000": ["alice", "bob"]}}
    found = whats(drift.vmail_drift("h", "vmail", 5000, live))
    assert found[0].startswith("vmail is 2000:2000 live, the deploy says 5000")
    assert found[1] == "2 Maildir(s) owned by 2000:2000, the deploy's vmail is 5000:5000"
    assert drift.vmail_drift("h", "vmail", 2000, live) == []


def legacy_settings_drift(tool, parse, template, captured, live_defaults, **data):
    """The settings drift of the legacy's captured `tool -n` output against `template`
    rendered for it; `live_defaults`: what the tool reports for settings its file leaves out."""
    rendered = parse(render(template, **legacy_data(**data)))
    live_set = parse(sample(captured))
    keys = drift.POSTFIX_SETTINGS if tool == "postconf" else drift.DOVECOT_SETTINGS
    return whats(drift.settings_drift("s", "h", tool, {**live_defaults, **live_set}, rendered,
                                      keys, live_set))


def test_postfix_settings_drift_legacy_against_main_cf():
    # Postfix's own defaults for what the legacy main.cf leaves out (postconf NAME).
    found = legacy_settings_drift("postconf", lf.parse_postconf, "files/postfix/main.cf.j2",
                                  "legacy-postconf-n.txt",
                                  {"recipient_delimiter": "", "smtpd_milters": ""})
    assert ("postconf smtpd_sender_login_maps: 'proxy:mysql:/etc/postfix/mysql-sender-login-"
            "maps.cf' -> 'proxy:mysql:/etc/postfix/mysql-sender-logins.cf'") in found
    assert "postconf recipient_delimiter: '' -> '+'" in found
    assert "postconf message_size_limit: '52428800' -> (not set: the default)" in found
    # Same value, other spelling (commas, spaces): no line.
    assert not any(w.startswith("postconf mydestination") for w in found)
    assert not any(w.startswith("postconf virtual_transport") for w in found)


def test_dovecot_settings_drift_legacy_against_the_template():
    found = legacy_settings_drift("doveconf", lf.parse_doveconf,
                                  "files/dovecot/2.3/dovecot.conf.j2", "legacy-doveconf-n.txt",
                                  {"disable_plaintext_auth": "yes", "recipient_delimiter": "+"},
                                  vmail_uid=2000)
    assert ("doveconf mail_location: 'maildir:/home/mailboxes/%n/Maildir' -> "
            "'maildir:~/Maildir'") in found
    assert not any("first_valid_uid" in w for w in found)   # 2000 both
    assert not any("protocol lmtp/mail_plugins" in w for w in found)   # $mail_plugins sieve
    assert not any("disable_plaintext_auth" in w for w in found)   # default yes = yes


def test_lxc_drift_names_what_the_deploy_config_drops():
    live = lf.parse_lxc_config(sample("legacy-lxc.conf"))
    new_text = render("files/infra02/lxc.conf.j2", name_="legacy",
                      rootfs="/var/lib/lxc/legacy/rootfs",
                      net={"link": "labbr0", "hwaddr": "00:16:3e:ca:ce:29",
                           "ipv4": "10.0.3.29/24", "ipv4_gateway": "10.0.3.1",
                           "ipv6": None, "ipv6_gateway": None},
                      autostart=True, data_volume_host_path="/srv/cacert-lab/mail",
                      data_volume="srv/mail")
    found = whats(drift.lxc_drift("infra02", live, lf.parse_lxc_config(new_text)))
    assert "key dropped: lxc.cgroup2.memory.max = 2G" in found
    assert "NIC dropped: eth1 on labbr1 10.0.4.19/24" in found
    assert ("mount entry dropped: /srv/cacert-lab/legacy-spool var/spool/legacy-extra none "
            "bind,create=dir 0 0") in found
    assert "mount entry added: /srv/cacert-lab/mail srv/mail none bind,create=dir 0 0" in found
    assert not any("eth0" in w for w in found)
    assert drift.lxc_drift("infra02", live, live) == []


def test_command_effects():
    texts = ["DEBIAN_FRONTEND=noninteractive apt-get -y -o Dpkg::Options::=--force-confdef "
             "install postfix postfix-mysql",
             "apt-get -y remove --purge puppet",
             "install -D -o root -g root -m 644 /var/lib/cacert-deploy/staging/postfix/main.cf "
             "/etc/postfix/main.cf.new && mv -f /etc/postfix/main.cf.new /etc/postfix/main.cf",
             "rm -rf /var/lib/cacert-deploy/staging/postfix && install -d -m 700 "
             "/var/lib/cacert-deploy/staging/postfix",
             "mkdir -p /etc/ssl/private && rm -rf /etc/ssl/private/.k.pem.upload",
             "systemctl reload postfix"]
    assert drift.command_effects(texts, ["/etc/cron.d/x"]) == [
        "writes /etc/cron.d/x", "installs postfix postfix-mysql", "purges puppet",
        "replaces /etc/postfix/main.cf", "runs systemctl reload postfix"]


def test_secret_uploads_are_recognised_by_their_staged_path():
    dest = staged_path("/etc/ssl/private/email.key.pem")
    assert drift._is_secret_upload(dest)
    assert not drift._is_secret_upload("/etc/ssl/private/email.key.pem")
    assert not drift._is_secret_upload("/var/lib/cacert-deploy/staging/postfix/main.cf")
    assert drift._uploaded_text(io.BytesIO(b"abc")) == "abc"


def test_render_text_and_json():
    import datetime
    import json
    now = datetime.datetime(2026, 12, 6, tzinfo=datetime.timezone.utc)
    findings = [drift.finding("postfix", "h", "setting", "postconf a: 'x' -> 'y'"),
                drift.finding("mariadb", "h", "grant", "p@localhost: granted SELECT on v")]
    text = drift.render(findings, False, now)
    assert "nothing was written on any host" in text
    assert text.index("== mariadb") < text.index("== postfix")
    assert "postconf a: 'x' -> 'y'" in text
    doc = json.loads(drift.render(findings, True, now))
    assert doc["services"] == {"postfix": 1, "mariadb": 1} and doc["findings"] == findings
    assert "would change nothing" in drift.render([], False, now)


def test_prepare_reports_a_host_whose_deploy_stops_and_goes_on_with_the_others(monkeypatch):
    """No host here: the preparation itself is replaced (pyinfra needs connected hosts)."""
    class Host:
        def __init__(self, name):
            self.name = name

    class State:
        ops = {}

        def get_op_order(self):
            return []

    monkeypatch.setattr(drift, "_load_deploy",
                        lambda state, hosts: {"infra02": "DeployError: /srv/x is not mounted"})
    found, uploads = drift.prepare(State(), [Host("infra02"), Host("email")])
    assert found == [drift.finding(
        "deploy", "infra02", "blocked", "the deploy would stop on this host: DeployError: "
        "/srv/x is not mounted (its steps before that are listed under their services)")]
    assert uploads == {}
