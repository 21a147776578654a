"""Deploying the mail path in the lab: a broken config never reaches the running service,
inventory-driven maps (arbitration, cacert-inc-bcc) take effect, a second run changes nothing.

These tests run the real deploy with `--data` overrides. `--data` is applied after the
inventory was validated, which is exactly what a template bug looks like to the server: a
config the inventory checks could not catch. The staged validation must catch it.
"""
import json
import re
import time

from mailclients import deploy_failure, message, smtp_25, wait_for_delivery

OUTSIDE = "someone@example.net"


def _sha(ssh, path):
    return ssh(f"sha256sum {path}").stdout.split()[0]


def _ehlo_works(lab):
    with smtp_25(lab, starttls=False) as smtp:
        return smtp.noop()[0] == 250


def test_broken_main_cf_fails_the_deploy_and_postfix_keeps_the_old_one(lab, ssh, run_deploy):
    before = _sha(ssh, "/etc/postfix/main.cf")
    master_pid = ssh("cat /var/spool/postfix/pid/master.pid").stdout.strip()

    result = run_deploy("--data", 'postfix_main_cf_extra={"not a parameter": "x"}')

    output = result.stdout + result.stderr
    assert result.returncode != 0, "the deploy accepted an invalid main.cf"
    assert "Postfix configuration (checked before it is used)" in output
    # The reason, as the validator gave it, naming the staged file and the bad line.
    assert re.search(r"staging/postfix/main\.cf, line \d+: missing '=' after attribute name: "
                     r"\"not a parameter = x\"", output), output[-3000:]
    assert _sha(ssh, "/etc/postfix/main.cf") == before, "the live main.cf was replaced"
    assert "not a parameter" not in ssh("cat /etc/postfix/main.cf").stdout
    assert ssh("systemctl is-active postfix").stdout.strip() == "active"
    assert ssh("cat /var/spool/postfix/pid/master.pid").stdout.strip() == master_pid
    assert _ehlo_works(lab)
    assert ssh("postfix check", check=False).returncode == 0


def test_arbitration_rewrite_and_bcc_map_take_effect(lab, ssh, run_deploy):
    alice, bob = lab["accounts"][0], lab["accounts"][1]
    domain = lab["domain"]
    gone = f"gone.away@{domain}"
    rules = [{"match": f"^{re.escape(gone)}$", "to": f"{alice['user']}+deletedaccounts@{domain}"}]
    bcc = {bob["email"]: alice["email"]}
    result = run_deploy("--data", "arbitration_rewrites=" + json.dumps(rules),
                        "--data", "recipient_bcc=" + json.dumps(bcc))
    assert result.returncode == 0, deploy_failure(result)
    try:
        lookup = ssh(f"postmap -q {bob['email']} hash:/etc/postfix/cacert-inc-bcc").stdout
        assert lookup.strip() == alice["email"]
        marker, msg = message(OUTSIDE, gone)
        with smtp_25(lab) as smtp:
            smtp.send_message(msg)
        wait_for_delivery(ssh, lab, alice["user"], marker)

        marker, msg = message(OUTSIDE, bob["email"])
        with smtp_25(lab) as smtp:
            smtp.send_message(msg)
        wait_for_delivery(ssh, lab, bob["user"], marker)
        wait_for_delivery(ssh, lab, alice["user"], marker)       # the blind copy
    finally:
        restored = run_deploy()
        assert restored.returncode == 0, deploy_failure(restored)
    assert ssh("postmap -s hash:/etc/postfix/cacert-inc-bcc").stdout.strip() == ""


def _rehash_grants(ssh):
    return ssh("mariadb --batch --skip-column-names -e "
               "\"SHOW GRANTS FOR 'dovecot-rehash'@'localhost'\"").stdout


def test_second_deploy_changes_nothing(lab, ssh, run_deploy):
    # As a loaded database dump leaves it (the procedure replaced, its grant dropped with
    # it): the first run gives the grant back although no SQL file changed.
    ssh("mariadb -e \"REVOKE EXECUTE ON PROCEDURE cacertusers.rehash_password "
        "FROM 'dovecot-rehash'@'localhost'\"")
    assert "rehash_password" not in _rehash_grants(ssh)
    started = time.monotonic()
    first = run_deploy()
    assert first.returncode == 0, deploy_failure(first)
    assert "GRANT EXECUTE ON PROCEDURE `cacertusers`.`rehash_password`" in _rehash_grants(ssh)
    converge = time.monotonic() - started
    started = time.monotonic()
    second = run_deploy("--json")
    rerun = time.monotonic() - started
    assert second.returncode == 0, deploy_failure(second)
    results = json.loads(second.stdout)["results"]
    changed = [op["name"] for op in results["operations"] if op["success"]]
    print(f"deploy: converge {converge:.1f}s, re-run {rerun:.1f}s, "
          f"{results['totals']['no_change']} operations unchanged")
    assert results["totals"]["error"] == 0
    assert results["totals"]["success"] == 0, f"changed on a re-run: {changed}"
    # One re-run serves every part (it runs after the backup tests made snapshots): the
    # backups' and the monitoring's operations exist and did nothing, and the checks are not
    # registered again with the master when nothing about them changed.
    names = [op["name"] for op in results["operations"]]
    assert any("Backups" in name for name in names) and any("Monitoring" in n for n in names)
    assert not any("Register the mailstore checks" in name for name in names)
