#!/usr/bin/env python3
"""Run time of every `mailstore check` plugin on a 100 000-message store.

    python bench/checks.py [--store DIR] [--messages 100000] [--users 50] [--runs 7]

Builds (or reuses) a Dovecot-like store with bench/corpus.py, a backup repository of it
(`mailstore backup run`), a certificate chain + key + CRL, and a fake `postqueue -j` printing
200 queued messages. Then times each plugin as Icinga runs it: a fresh process (interpreter
start and imports included), median of --runs. `check maildir` is timed in its three
situations: cold (no cache: every directory listed), warm (nothing changed since the last run)
and after a few deliveries (the usual case every few minutes), plus after a "day of IMAP use"
(bench/corpus.py mutate: 10 % flag renames, 1 % new, 1 % expunged, which touches nearly every
directory). The budget for `check maildir` on this store is 0.3 s (bench/README.md).
"""
import argparse
import datetime
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import corpus  # noqa: E402  (bench/corpus.py, shared by the benchmarks)

BUDGET = 0.3


def timed(cmd, runs, before=None, env=None):
    times, out, code = [], "", None
    for _ in range(runs):
        if before:
            before()
        t = time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        times.append(time.perf_counter() - t)
        out, code = proc.stdout.decode("utf-8", "replace").split("\n")[0], proc.returncode
    return statistics.median(times), min(times), max(times), code, out


def make_pki(d):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(cn, key, issuer=None, issuer_key=None, ca=False):
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        return (x509.CertificateBuilder().subject_name(name)
                .issuer_name(issuer.subject if issuer else name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=200))
                .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                .sign(issuer_key or key, hashes.SHA256()))
    rk, ik, lk = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = cert("Bench Root", rk, ca=True)
    inter = cert("Bench Intermediate", ik, root, rk, ca=True)
    leaf = cert("community.cacert.test", lk, inter, ik)
    crl = (x509.CertificateRevocationListBuilder().issuer_name(inter.subject)
           .last_update(now).next_update(now + datetime.timedelta(days=7)))
    for serial in range(1, 2001):      # a CRL of realistic length
        crl = crl.add_revoked_certificate(x509.RevokedCertificateBuilder()
                                          .serial_number(serial).revocation_date(now).build())
    crl = crl.sign(ik, hashes.SHA256())
    pem = serialization.Encoding.PEM
    paths = {k: os.path.join(d, k) for k in ("chain.pem", "key.pem", "root.pem", "crl.pem")}
    with open(paths["chain.pem"], "wb") as f:
        f.write(leaf.public_bytes(pem) + inter.public_bytes(pem))
    with open(paths["key.pem"], "wb") as f:
        f.write(lk.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()))
    with open(paths["root.pem"], "wb") as f:
        f.write(root.public_bytes(pem))
    with open(paths["crl.pem"], "wb") as f:
        f.write(crl.public_bytes(pem))
    return paths


def make_postqueue(d, n=200):
    data = os.path.join(d, "queue.json")
    now = int(time.time())
    with open(data, "w") as f:
        for i in range(n):
            f.write(json.dumps({"queue_name": "deferred" if i % 3 else "active",
                                "queue_id": "Q%06X" % i, "arrival_time": now - i * 60,
                                "message_size": 4000, "forced_expire": False,
                                "sender": "a@cacert.test",
                                "recipients": [{"address": "x@example.org",
                                                "delay_reason": "connect timed out"}]}) + "\n")
    script = os.path.join(d, "postqueue")
    with open(script, "w") as f:
        f.write("#!/bin/sh\ncat '%s'\n" % data)
    os.chmod(script, 0o755)
    return script


def deliver(store, n, seed):
    """n new messages into random users' new/ (what a few minutes of mail does)."""
    rng = random.Random(seed)
    users = sorted(u for u in os.listdir(store) if not u.startswith("."))
    for i in range(n):
        d = os.path.join(store, rng.choice(users), "Maildir", "new")
        name = "%d.M%dP%d.bench,S=100" % (time.time(), i, os.getpid())
        with open(os.path.join(d, name), "wb") as f:
            f.write(b"x" * 100)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--store", default=os.path.join(tempfile.gettempdir(), "bench-checks",
                                                   "store"))
    p.add_argument("--messages", type=int, default=100000)
    p.add_argument("--users", type=int, default=50)
    p.add_argument("--runs", type=int, default=7)
    a = p.parse_args()
    mailstore = [sys.executable, "-m", "mailstore"]
    work = os.path.dirname(os.path.abspath(a.store))
    os.makedirs(work, exist_ok=True)

    if not os.path.isdir(a.store) or not os.listdir(a.store):
        print("generating %d messages for %d users in %s ..." % (a.messages, a.users, a.store))
        stats = corpus.generate(a.store, messages=a.messages, users=a.users, seed=1)
        print("  %.0f MB in %.0f s" % (stats["bytes"] / 1e6, stats["seconds"]))
    count = sum(len(os.listdir(os.path.join(dp, s))) for dp, dn, _ in os.walk(a.store)
                for s in ("cur", "new") if s in dn)
    print("store: %s, %d messages" % (a.store, count))

    repo = os.path.join(work, "backup-repo")
    if not os.path.isdir(repo):
        subprocess.run(mailstore + ["backup", "init", repo], check=True)
        t = time.perf_counter()
        subprocess.run(mailstore + ["backup", "run", repo, a.store], check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run(mailstore + ["backup", "verify", repo], check=True,
                       stdout=subprocess.DEVNULL)
        print("backup repository made in %.0f s" % (time.perf_counter() - t))
    pki = make_pki(work)
    postqueue = make_postqueue(work)
    cache = os.path.join(work, "maildir-cache.json")
    maildir = mailstore + ["check", "maildir", a.store, "--cache", cache]

    def drop_cache():
        if os.path.exists(cache):
            os.unlink(cache)

    rows = []
    floor = timed([sys.executable, "-c", "pass"], a.runs)
    rows.append(("(python start, for reference)", floor))
    rows.append(("volume", timed(mailstore + ["check", "volume", a.store], a.runs)))
    rows.append(("cert (chain, key, CA, 2000-entry CRL)", timed(
        mailstore + ["check", "cert", pki["chain.pem"], "--key", pki["key.pem"],
                     "--ca", pki["root.pem"], "--crl", pki["crl.pem"]], a.runs)))
    rows.append(("mailq (200 queued)", timed(
        mailstore + ["check", "mailq", "--postqueue", postqueue], a.runs)))
    rows.append(("backup (repository of the store)", timed(
        mailstore + ["check", "backup", "--repo", repo], a.runs)))
    rows.append(("maildir, cold (no cache)", timed(maildir, a.runs, before=drop_cache)))
    timed(maildir, 1)
    # let the directories written by the cold run age past the "racy" window
    time.sleep(2.5)
    timed(maildir, 1)
    rows.append(("maildir, warm (nothing changed)", timed(maildir, a.runs)))
    seeds = iter(range(1000))
    def deliveries():
        deliver(a.store, 20, next(seeds))
        # Icinga runs the check minutes after mail arrived, not within the 2 s in which a
        # directory's mtime is not trusted yet (which would list it again next time too)
        time.sleep(2.1)
    rows.append(("maildir, after 20 deliveries", timed(maildir, a.runs, before=deliveries)))
    # the scan itself, in-process (no interpreter start, no imports): what the cache saves
    from mailstore.checks import maildir as maildir_check, plugin

    def in_process():
        t = time.perf_counter()
        outcome = plugin.run(maildir_check.make_check(a.store, cache_file=cache))
        return time.perf_counter() - t, outcome.exitcode, outcome.text.split("\n")[0]
    samples = []
    for _ in range(a.runs):
        deliveries()
        samples.append(in_process())
    ts = [x[0] for x in samples]
    rows.append(("maildir, after 20 deliveries, in-process",
                 (statistics.median(ts), min(ts), max(ts), samples[-1][1], samples[-1][2])))
    changes = corpus.mutate(a.store, seed=int(time.time()))
    rows.append(("maildir, after a day of IMAP use", timed(maildir, 1)))

    print("\n%-42s %8s %8s %8s  %s" % ("plugin", "median", "min", "max", "exit / first line"))
    for name, (med, lo, hi, code, out) in rows:
        print("%-42s %7.3fs %7.3fs %7.3fs  %s %s" % (name, med, lo, hi,
                                                      "" if code is None else code,
                                                      out[:70]))
    warm = dict(rows)["maildir, after 20 deliveries"][0]
    print("\nmaildir after deliveries: %.3f s = %.2f x the %.1f s budget; cold/warm ratio %.1f"
          % (warm, warm / BUDGET, BUDGET, dict(rows)["maildir, cold (no cache)"][0]
             / dict(rows)["maildir, warm (nothing changed)"][0]))
    print("day of IMAP use changed: %s" % changes)


if __name__ == "__main__":
    main()
