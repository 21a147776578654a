"""operations/fail2ban.py: the jails, who is never banned, check before activation."""
from tests.unit.deploy import fake_host  # noqa: F401  (puts the repository on sys.path)
from tests.unit.deploy.fake_host import run

from operations import fail2ban

STAGED = "/var/lib/cacert-deploy/staging/fail2ban/jail.local"
TRUSTED = {"monitor": ["10.0.3.2"], "community": ["10.0.3.3", "2001:db8::3"]}


def _jail_local(**data):
    ops = run(fail2ban.server, data={"trusted_hosts": TRUSTED, **data})
    (op,) = [op for op in ops if "jail.local" in op.name]
    return op, op.uploads[STAGED]


def _sections(text):
    sections, current = {}, None
    for line in text.splitlines():
        if line.startswith("["):
            current = line.strip("[]")
            sections[current] = {}
        elif current and "=" in line and not line.startswith("#"):
            key, value = (part.strip() for part in line.split("=", 1))
            sections[current][key] = value
    return sections


def test_jails_for_sshd_postfix_sasl_and_dovecot_read_the_rsyslog_files():
    _, text = _jail_local()
    jails = _sections(text)
    assert jails["sshd"] == {"enabled": "true", "port": "22", "logpath": "/var/log/auth.log",
                             "backend": "auto"}
    assert jails["postfix"]["logpath"] == jails["dovecot"]["logpath"] == "/var/log/mail.log"
    assert jails["postfix-sasl"]["filter"] == "postfix[mode=auth]"
    assert jails["postfix-sasl"]["port"] == "25,465,587"
    assert jails["dovecot"]["port"] == "143,993,110,995,4190"
    assert all(jails[j]["enabled"] == "true" for j in ("sshd", "postfix", "postfix-sasl",
                                                       "dovecot"))
    assert jails["DEFAULT"]["banaction"] == "nftables-multiport"


def test_ignoreip_is_loopback_trusted_hosts_and_the_extra_list_only():
    _, text = _jail_local(fail2ban_ignore=["192.0.2.7"])
    ignore = _sections(text)["DEFAULT"]["ignoreip"].split()
    assert ignore == ["127.0.0.1/8", "::1", "10.0.3.3", "2001:db8::3", "10.0.3.2", "192.0.2.7"]


def test_ignoreip_has_no_duplicates():
    assert fail2ban.ignoreip({"a": ["10.0.0.1"], "b": ["10.0.0.1"]}, ["10.0.0.1"]) == \
        ["127.0.0.1/8", "::1", "10.0.0.1"]


def test_staged_jail_local_is_checked_in_a_copy_of_the_config_before_install():
    op, _ = _jail_local()
    check = next(i for i, c in enumerate(op.commands) if "fail2ban-client -c $d -t" in c)
    stage = "/var/lib/cacert-deploy/staging/fail2ban"
    assert f"cp {stage}/*.local $d/" in op.commands[check]
    # the filter addition is checked where fail2ban reads it, beside the stock filter
    assert "mv -f $d/dovecot.local $d/filter.d/" in op.commands[check]
    assert "allowipv6 = auto" in op.uploads[STAGED.replace("jail", "fail2ban")]
    assert "%(known/failregex)s" in op.uploads[f"{stage}/dovecot.local"]
    install = next(i for i, c in enumerate(op.commands) if "mv -f" in c and i != check)
    assert check < install
