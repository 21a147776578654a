"""The DNS report (operations/dns_report.py) against the container's real state."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def report(lab):
    env = dict(os.environ)
    env.setdefault("CACERT_EMAIL_SECRETS", str(REPO / ".lab" / "secrets"))
    result = subprocess.run([sys.executable, "-m", "operations.dns_report", "inventories/lab.py"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_sshfp_lines_match_the_container_host_keys(lab, ssh, report, tmp_path):
    """Computed independently here with ssh-keygen -r from the keys read over SSH."""
    name = lab["hostnames"]["email"]
    expected = set()
    keys = ssh("cat /etc/ssh/ssh_host_*_key.pub").stdout.splitlines()
    assert keys
    for i, key in enumerate(keys):
        pub = tmp_path / f"key{i}.pub"
        pub.write_text(key + "\n")
        out = subprocess.run(["ssh-keygen", "-r", name, "-f", str(pub)], capture_output=True,
                             text=True, check=True).stdout
        expected |= {tuple(line.split()[3:]) for line in out.splitlines()}
    got = {tuple(line.split()[3:]) for line in report
           if line.startswith(f"{name}.\t") and "\tSSHFP\t" in line}
    assert got == expected
    assert {fp[:2] for fp in got} >= {("4", "1"), ("4", "2")}


def test_address_mx_spf_and_dkim_lines(lab, report):
    domain, email = lab["domain"], lab["hostnames"]["email"]
    assert f"{email}.\tIN\tA\t{lab['address']}" in report
    assert f"{lab['hostnames']['community']}.\tIN\tA\t{lab['address']}" in report
    assert f"{domain}.\tIN\tMX\t10 {email}." in report
    assert any(line.startswith(f"{domain}.\tIN\tTXT\t\"v=spf1 ") for line in report)
    assert any("_domainkey" in line or "DKIM is not set up" in line for line in report)


def test_dkim_record_carries_the_key_opendkim_genkey_wrote(lab, ssh, report):
    """Checked against opendkim-genkey's own zone line (<selector>.txt) beside the key."""
    domain = lab["domain"]
    listing = ssh(f"for f in /etc/opendkim/keys/{domain}/*.txt; do [ -f \"$f\" ] && "
                  "echo \"== ${f##*/}\" && cat \"$f\"; done; true").stdout
    if not listing.strip():
        assert any("DKIM is not set up" in line for line in report)
        return
    for part in listing.split("== ")[1:]:
        selector = part.split("\n", 1)[0].removesuffix(".txt")
        genkey_text = "".join(re.findall(r'"([^"]*)"', part))
        line = next(line for line in report
                    if line.startswith(f"{selector}._domainkey.{domain}.\tIN\tTXT\t"))
        report_text = "".join(re.findall(r'"([^"]*)"', line))
        assert report_text.split("p=")[1] == genkey_text.split("p=")[1]
