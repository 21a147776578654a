"""operations/dkim.py: data checks, opendkim.conf and Postfix's milter lines, the key made only
when absent (decided on the host and re-checked by the shell), config checked before use."""
import os
import subprocess

import pytest

from tests.unit.deploy import fake_host  # noqa: F401  (puts the repository on sys.path)
from tests.unit.deploy.fake_host import run

from operations.defaults import defaults
from operations import dkim, staging

LAB = {"mail_domain": "cacert.test", "dkim_selector": "202611"}
KEY = "/etc/opendkim/keys/cacert.test/202611.private"


def data(**overrides):
    return {**defaults(), **LAB, **overrides}


def test_settings_name_the_key_file_the_dns_report_reads():
    from operations import dns_report
    values = dkim.settings(data())
    assert values["key_file"] == f"{dns_report.DKIM_KEY_DIR}/cacert.test/202611.private" == KEY
    assert values["port"] == 8891


@pytest.mark.parametrize("key, value", [
    ("dkim_selector", "bad selector"), ("dkim_selector", "-x"), ("dkim_selector", ""),
    ("dkim_selector", 2026), ("dkim_milter_port", 25), ("dkim_milter_port", "8891"),
    ("dkim_milter_port", True)])
def test_bad_data_is_refused_naming_the_key(key, value):
    with pytest.raises(dkim.DkimDataError, match=key):
        dkim.settings(data(**{key: value}))


def test_opendkim_conf_signs_for_the_domain_on_loopback():
    conf = dict(line.split(None, 1) for line in
                staging.render("files/dkim/opendkim.conf.j2", **dkim.settings(data()))
                .splitlines() if line.strip() and not line.startswith("#"))
    assert conf["Domain"] == "cacert.test"
    assert conf["Selector"] == "202611"
    assert conf["KeyFile"] == KEY
    assert conf["Socket"] == "inet:8891@127.0.0.1"
    assert conf["Mode"] == "s"
    assert conf["MTA"] == "ORIGINATING"  # master.cf: submission and smtps carry that name


def test_postfix_gets_the_milter_only_while_signing_is_on():
    def main_cf(**overrides):
        return staging.render("files/postfix/main.cf.j2", **data(**overrides))
    on = main_cf(dkim_milter_port=8899)
    assert "smtpd_milters = inet:127.0.0.1:8899" in on
    assert "non_smtpd_milters = $smtpd_milters" in on
    assert "milter_default_action = accept" in on
    assert "milter" not in main_cf(dkim_signing=False).replace("milter_macro", "")


def _file_fact(present):
    return lambda path, **kw: {"mode": 600, "user": "opendkim", "group": "opendkim"} \
        if path in present else None


def test_fresh_host_gets_a_key_then_a_checked_config_then_a_restart():
    ops = run(dkim.signer, data=LAB, facts={"File": _file_fact(set())})
    names = [op.name for op in ops]
    genkey = next(op for op in ops if "| DKIM key" in op.name)
    assert genkey.commands[0].startswith(f"test -e {KEY} || ")
    assert "opendkim-genkey -b 2048 -h sha256 -r -D /etc/opendkim/keys/cacert.test " \
           "-d cacert.test -s 202611" in genkey.commands[0]
    config = next(op for op in ops if "| OpenDKIM configuration" in op.name)
    check = config.commands.index(
        "opendkim -n -x /var/lib/cacert-deploy/staging/opendkim/opendkim.conf")
    assert check < next(i for i, c in enumerate(config.commands)
                        if "mv -f" in c and "/etc/opendkim.conf" in c)
    restart = next(op for op in ops if "| Restart OpenDKIM" in op.name)
    assert names.index(genkey.name) < names.index(config.name) < names.index(restart.name)


def test_host_with_the_key_never_generates_another():
    ops = run(dkim.signer, data=LAB, facts={"File": _file_fact({KEY})})
    assert not [op for op in ops if "genkey" in " ".join(op.commands)]


def test_signing_off_adds_nothing():
    assert run(dkim.signer, data={**LAB, "dkim_signing": False}) == []


def test_the_shell_guard_keeps_an_existing_key(tmp_path):
    """Even if the fact was stale, the command itself never replaces a key file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "genkey-ran"
    for tool in ("opendkim-genkey", "chown"):
        (bin_dir / tool).write_text(f"#!/bin/sh\necho \"$@\" >> {marker}\n")
        (bin_dir / tool).chmod(0o755)
    key_dir = tmp_path / "keys"
    key_dir.mkdir()
    values = {"key_file": str(key_dir / "s.private"), "key_dir": str(key_dir),
              "domain": "cacert.test", "selector": "s"}
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    (key_dir / "s.private").write_text("KEEP")
    subprocess.run(["sh", "-c", dkim.genkey_command(values)], check=True, env=env)
    assert not marker.exists() and (key_dir / "s.private").read_text() == "KEEP"
    (key_dir / "s.private").unlink()
    # Without the key the (faked) generator runs; the faked one writes no file to chmod.
    subprocess.run(["sh", "-c", dkim.genkey_command(values).replace("chmod 600", "true")],
                   check=True, env=env)
    assert "-s s" in marker.read_text()


def test_lab_dns_gets_the_record_the_dns_report_prints():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from operations import dns_report
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key() \
        .public_bytes(serialization.Encoding.PEM,
                      serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    [(name, strings)] = dkim.dnsmasq_txt_records("cacert.test", {"202611": pem})
    assert name == "202611._domainkey.cacert.test"
    assert len(strings) == 2 and all(len(s) <= 255 for s in strings)
    report = dns_report.dkim_record("cacert.test", "202611", pem)
    assert report.endswith(" ".join(f'"{s}"' for s in strings))
    assert dkim.dnsmasq_txt_records("cacert.test", {}) == []
