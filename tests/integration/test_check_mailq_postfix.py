"""`mailstore check mailq` against the real `postqueue -j` of a real Postfix (Debian's package).

The test runs its own Postfix instance: own config and queue directories in a temp dir, no
listener (nothing binds a port), every message relayed to a closed port on 127.0.0.1 so it
lands in the deferred queue with Postfix's own delay reason; one is put on hold with postsuper.
The check finds the instance through MAIL_CONFIG, which postqueue honours for root (the test
runs as root: starting a Postfix master needs it). No systemd; stopped after the module.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time

import pytest
from click.testing import CliRunner

from mailstore.cli import main

POSTFIX, POSTQUEUE = "/usr/sbin/postfix", "/usr/sbin/postqueue"

# Debian's master.cf, reduced to what queueing, relaying and showq need; no chroot (the temp
# queue has no copy of /etc and the libraries), no `smtp inet` listener.
MASTER_CF = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]       # closed again once the socket is: connect is refused


def _postqueue(config):
    out = subprocess.run([POSTQUEUE, "-c", config, "-j"], check=True, text=True,
                         stdout=subprocess.PIPE).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def postfix():
    if not os.path.exists(POSTFIX):
        if os.environ.get("CI"):
            pytest.fail("postfix is not installed (tests/packages lists it)")
        pytest.skip("postfix is not installed (apt install postfix)")
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("starting a Postfix master needs root")
        pytest.skip("starting a Postfix master needs root")
    # not below pytest's 0700 temp root: Postfix's daemons run as the postfix user
    base = tempfile.mkdtemp(prefix="mailstore-postfix-")
    os.chmod(base, 0o755)
    config = os.path.join(base, "etc")
    for d in ("etc", "spool", "data"):
        os.mkdir(os.path.join(base, d))
    shutil.chown(os.path.join(base, "data"), "postfix")
    with open(os.path.join(config, "main.cf"), "w") as f:
        f.write("\n".join([
            "compatibility_level = 3.6",
            "queue_directory = %s/spool" % base,
            "data_directory = %s/data" % base,
            "maillog_file_prefixes = %s" % base,
            "maillog_file = %s/maillog" % base,
            "mail_owner = postfix",
            "setgid_group = postdrop",
            "myhostname = mailq.test",
            "mydestination =",
            "inet_interfaces = loopback-only",
            "inet_protocols = ipv4",
            "relayhost = [127.0.0.1]:%d" % _closed_port(),
            "smtp_connect_timeout = 5s",
            "alias_maps =",
            "alias_database =",
            ""]))
    with open(os.path.join(config, "master.cf"), "w") as f:
        f.write(MASTER_CF)
    started = subprocess.run([POSTFIX, "-c", config, "start"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        assert started.returncode == 0, started.stdout
        ids = []
        for i in range(2):
            subprocess.run(["/usr/sbin/sendmail", "-C", config, "-f", "alice@cacert.test",
                            "user%d@example.org" % i], check=True, text=True,
                           input="Subject: queued %d\n\nhello\n" % i)
        deadline = time.monotonic() + 90
        while True:
            entries = _postqueue(config)
            deferred = [e for e in entries if e["queue_name"] == "deferred"]
            if len(deferred) == 2:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("no deferred messages after 90 s: %r; log: %s" % (
                    entries, open(os.path.join(base, "maillog")).read()[-2000:]))
            time.sleep(0.5)
        ids = sorted(e["queue_id"] for e in deferred)
        subprocess.run(["/usr/sbin/postsuper", "-c", config, "-h", ids[0]], check=True,
                       stderr=subprocess.DEVNULL)
        yield {"config": config, "held": ids[0], "deferred": ids[1]}
    finally:
        subprocess.run([POSTFIX, "-c", config, "abort"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        shutil.rmtree(base, ignore_errors=True)


def check(*args):
    result = CliRunner().invoke(main, ["check", "mailq", "--postqueue", POSTQUEUE]
                                + [str(a) for a in args])
    return result.exit_code, result.output.split("\n", 1)[0]


def test_the_real_queue_is_counted_by_queue(postfix, monkeypatch):
    entries = _postqueue(postfix["config"])
    # what this Postfix really prints: the fields the check reads, the reason of the delay
    deferred, = [e for e in entries if e["queue_name"] == "deferred"]
    assert deferred["queue_id"] == postfix["deferred"]
    assert isinstance(deferred["arrival_time"], int)
    assert "Connection refused" in deferred["recipients"][0]["delay_reason"]
    assert [e["queue_id"] for e in entries if e["queue_name"] == "hold"] == [postfix["held"]]

    monkeypatch.setenv("MAIL_CONFIG", postfix["config"])
    code, line = check()
    assert code == 0, line
    assert "2 queued" in line
    assert "deferred=1;" in line and "hold=1;" in line and "active=0;" in line
    # the held one is not deferred any more: the age is the other one's
    oldest = float(re.search(r"oldest_deferred=([0-9.]+)s", line).group(1))
    assert abs(oldest - (time.time() - deferred["arrival_time"])) < 3, line
    code, line = check("-w", "1", "-c", "5")
    assert code == 1 and "queue" in line


def test_a_stopped_postfix_is_still_read_by_root(postfix, monkeypatch):
    """postqueue reads the queue itself when the master is down (as root): still counted."""
    monkeypatch.setenv("MAIL_CONFIG", postfix["config"])
    subprocess.run([POSTFIX, "-c", postfix["config"], "stop"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        code, line = check()
        assert code == 0 and "2 queued" in line, line
    finally:
        subprocess.run([POSTFIX, "-c", postfix["config"], "start"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
