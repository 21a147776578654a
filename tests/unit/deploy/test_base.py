"""operations/base.py against a fake host: packages, security-only upgrades, names, sshd."""
from tests.unit.deploy import fake_host  # noqa: F401  (puts the repository on sys.path)
from tests.unit.deploy.fake_host import run

from operations import base

LAB = {"hostnames": {"email": "email.cacert.test", "community": "community.cacert.test",
                     "infra": "email.infra.cacert.test", "intra": "email.intra.cacert.test"}}


def _op(ops, suffix):
    (op,) = [op for op in ops if op.name.endswith(suffix)]
    return op


def test_fresh_container_gets_packages_and_names():
    ops = run(base.system, data=LAB)
    packages = " ".join(_op(ops, "Base packages").commands)
    for package in ("rsyslog", "cron", "openssh-server", "unattended-upgrades"):
        assert package in packages
    assert "127.0.1.1\temail.cacert.test email" in _op(ops, "/etc/hosts").uploads["/etc/hosts"]
    assert _op(ops, "/etc/mailname").uploads["/etc/mailname"] == "email.cacert.test\n"


def test_unattended_upgrades_replace_debians_origins_with_security_only():
    ops = run(base.system, data=LAB)
    text = _op(ops, "Unattended upgrades: security only").uploads[
        "/etc/apt/apt.conf.d/51cacert-unattended-upgrades"]
    assert "#clear Unattended-Upgrade::Origins-Pattern;" in text
    origins = [line.strip() for line in text.splitlines() if line.strip().startswith('"origin=')]
    assert origins and all("label=Debian-Security" in o for o in origins)


def test_sshd_settings_are_checked_in_staging_before_they_go_live():
    ops = run(base.system, data=LAB)
    sshd = _op(ops, "sshd settings (checked with sshd -t before they are used)")
    stage = "/var/lib/cacert-deploy/staging/sshd"
    check = [i for i, c in enumerate(sshd.commands) if f"sshd -t -f {stage}/check.conf" in c]
    install = [i for i, c in enumerate(sshd.commands)
               if "/etc/ssh/sshd_config.d/cacert.conf" in c and "install" in c]
    assert check and install and check[0] < install[0]
    staged = sshd.uploads[f"{stage}/cacert.conf"]
    assert "PasswordAuthentication no" in staged.splitlines()
    assert any(op.name.endswith("Reload sshd") for op in ops)


def test_up_to_date_sshd_settings_change_nothing():
    from operations import staging
    content = staging.render("files/base/sshd.conf.j2")
    ops = run(base.system, data=LAB, facts={
        "File": {"mode": 644, "user": "root", "group": "root", "mtime": None},
        "Sha1File": staging._sha1(content),
    })
    assert _op(ops, "sshd settings (checked with sshd -t before they are used)").commands == []
