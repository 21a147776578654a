#!/usr/bin/env python3
"""Deterministic Maildir corpus for benchmarks: ``OUT/<user>/Maildir/`` like Dovecot leaves it.

    python bench/corpus.py OUT --messages 100000 --users 50 [--seed 1] [--owner UID:GID]
    python bench/corpus.py OUT --mutate [--seed 2]     # a day of IMAP traffic on OUT

Same seed, same arguments -> the same names, sizes, bytes and mtimes. What it makes:
- users ``user000``...; messages spread over them with a skew (a few big mailboxes),
- folders INBOX, Sent, Drafts, Trash, Junk, Archive, Archive.2023, Archive.2024 (nested),
- sizes: 97.5 % 2-50 KiB (log-uniform), 2.2 % 50 KiB-1 MiB, 0.3 % 1-10 MiB; bodies are
  base64 of seeded random bytes (mail-like text, no cross-message duplicates to flatter dedup),
- Dovecot names (``<time>.M<usec>P<pid>Q<n>.<host>,S=<size>,W=<vsize>:2,<flags>``), about 8 %
  still in new/, flags from a realistic mix; file mtime = a date in the last ten years,
- control files (dovecot-uidlist with the real UID map, dovecot-keywords, subscriptions,
  maildirfolder, dovecot-uidvalidity*) and small dovecot.index* files.

Library use (the backup and migration benchmarks import it)::

    from corpus import generate, mutate
    stats = generate(out, messages=20000, users=10, seed=1)
    changes = mutate(out, seed=2, renames=0.10, new=0.01, expunged=0.01)
"""
import argparse
import base64
import math
import os
import random
import sys
import time

FOLDERS = ["", ".Sent", ".Drafts", ".Trash", ".Junk", ".Archive", ".Archive.2023",
           ".Archive.2024"]
FOLDER_WEIGHTS = [50, 15, 1, 5, 6, 3, 10, 10]
FLAG_MIX = [("S", 55), ("RS", 12), ("FS", 4), ("", 12), ("ST", 1), ("DS", 1), ("FRS", 3),
            ("Sa", 4)]
NOW = 1_764_000_000          # fixed "now" (2025-11-24) so mtimes do not depend on the clock
TEN_YEARS = 10 * 365 * 86400
HOST = "mail.cacert.test"


def _size(rng):
    r = rng.random()
    if r < 0.975:
        lo, hi = 2 * 1024, 50 * 1024
    elif r < 0.997:
        lo, hi = 50 * 1024, 1024 * 1024
    else:
        lo, hi = 1024 * 1024, 10 * 1024 * 1024
    return int(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _small_size(rng):
    """Sizes of the scale runs (bench/backup.py --scale): 0.5-2 KiB, log-uniform. Their cost
    is per file, so small messages keep a million-message corpus quick to make."""
    return int(math.exp(rng.uniform(math.log(512), math.log(2048))))


SIZES = {"mail": _size, "small": _small_size}


def _body(rng, size, header):
    raw_len = max(0, (size - len(header)) * 3 // 4)
    body = base64.encodebytes(rng.randbytes(raw_len)) if hasattr(rng, "randbytes") else \
        base64.encodebytes(rng.getrandbits(raw_len * 8).to_bytes(raw_len, "little"))
    return (header + body)[:size]


def _pick(rng, items, weights):
    return rng.choices(items, weights=weights)[0]


def _msg_name(rng, seq, size, t):
    unique = "%d.M%dP%dQ%d.%s,S=%d,W=%d" % (t, rng.randrange(1000000), rng.randrange(2, 65000),
                                           seq, HOST, size, size + size // 40)
    return unique


def _write(path, data, mtime, owner):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)
    os.utime(path, (mtime, mtime))
    if owner:
        os.chown(path, *owner)


def _user_weights(users, rng):
    # Zipf-ish: a few big mailboxes, a long tail of small ones
    return [1.0 / (i + 1) ** 0.8 for i in range(users)]


def generate(out, messages=1000, users=5, seed=1, owner=None, progress=False, sizes="mail"):
    """Create the corpus under ``out`` (must not contain users yet). Returns a stats dict.

    `sizes`: "mail" (the mix above) or "small" (0.5-2 KiB each, for runs at scale)."""
    rng = random.Random(seed)
    pick_size = SIZES[sizes]
    os.makedirs(out, exist_ok=True)
    names = ["user%03d" % i for i in range(users)]
    weights = _user_weights(users, rng)
    per_user = {n: 0 for n in names}
    for _ in range(messages):
        per_user[_pick(rng, names, weights)] += 1
    total_bytes = 0
    started = time.time()
    done = 0
    seq = 0
    for user in names:
        home = os.path.join(out, user)
        md = os.path.join(home, "Maildir")
        folders = [f for f in FOLDERS]
        uidlists = {f: [] for f in folders}
        for f in folders:
            for sub in ("new", "cur", "tmp"):
                os.makedirs(os.path.join(md, f, sub), exist_ok=True)
        for _ in range(per_user[user]):
            seq += 1
            folder = _pick(rng, folders, FOLDER_WEIGHTS)
            size = pick_size(rng)
            t = NOW - rng.randrange(TEN_YEARS)
            unique = _msg_name(rng, seq, size, t)
            header = ("Return-Path: <sender%d@example.org>\r\nMessage-ID: <%d@%s>\r\n"
                      "Subject: corpus message %d\r\n\r\n" % (seq, seq, HOST, seq)).encode()
            data = _body(rng, size, header)
            if folder == "" and rng.random() < 0.16:
                sub, name = "new", unique
            else:
                sub, name = "cur", unique + ":2," + _pick(rng, *zip(*FLAG_MIX))
            _write(os.path.join(md, folder, sub, name), data, t, owner)
            uidlists[folder].append((t, unique))
            total_bytes += size
            done += 1
            if progress and done % 5000 == 0:
                print("  %d/%d messages, %.0f MB, %.0f s" % (
                    done, messages, total_bytes / 1e6, time.time() - started), file=sys.stderr)
        for f in folders:
            d = os.path.join(md, f)
            entries = sorted(uidlists[f])
            uidvalidity = 1500000000 + rng.randrange(10 ** 8)
            lines = ["3 V%d N%d G%032x" % (uidvalidity, len(entries) + 1, rng.getrandbits(128))]
            lines += ["%d :%s" % (i + 1, u) for i, (_t, u) in enumerate(entries)]
            _write(os.path.join(d, "dovecot-uidlist"), ("\n".join(lines) + "\n").encode(),
                   NOW - rng.randrange(86400), owner)
            _write(os.path.join(d, "dovecot.index.log"), rng.randbytes(2048)
                   if hasattr(rng, "randbytes") else b"\0" * 2048, NOW, owner)
            if f:
                _write(os.path.join(d, "maildirfolder"), b"", NOW - TEN_YEARS, owner)
            else:
                _write(os.path.join(d, "dovecot-keywords"), b"0 $Forwarded\n1 $Junk\n",
                       NOW - TEN_YEARS, owner)
                _write(os.path.join(d, "subscriptions"),
                       ("\n".join(x[1:] for x in folders if x) + "\n").encode(),
                       NOW - TEN_YEARS, owner)
                _write(os.path.join(d, "dovecot-uidvalidity"), b"%08x" % uidvalidity,
                       NOW - TEN_YEARS, owner)
                _write(os.path.join(d, "dovecot-uidvalidity.%08x" % uidvalidity), b"",
                       NOW - TEN_YEARS, owner)
                _write(os.path.join(d, "dovecot.list.index.log"), b"\0" * 512, NOW, owner)
        # directories last, deepest first, so their own mtimes are what we set
        for dirpath, dirnames, _files in sorted(os.walk(home), key=lambda w: -len(w[0])):
            os.chmod(dirpath, 0o700)
            if owner:
                os.chown(dirpath, *owner)
            os.utime(dirpath, (NOW - 3600, NOW - 3600))
    return {"users": users, "messages": messages, "bytes": total_bytes,
            "seconds": time.time() - started}


def _messages(out):
    """(path, folder dir, subdir, name) of every message, in a stable order."""
    found = []
    for user in sorted(os.listdir(out)):
        if user.startswith("."):
            continue
        md = os.path.join(out, user, "Maildir")
        for folder in sorted([""] + [d for d in os.listdir(md) if d.startswith(".")]):
            for sub in ("new", "cur"):
                d = os.path.join(md, folder, sub)
                for name in sorted(os.listdir(d)):
                    found.append((os.path.join(d, name), os.path.join(md, folder), sub, name))
    return found


def mutate(out, seed=2, renames=0.10, new=0.01, expunged=0.01, owner=None, sizes="mail"):
    """What a day of IMAP use does: flag changes (renames; new/ ones move to cur/), fresh
    deliveries to new/, expunges. Fractions of the current message count; `sizes` of the new
    mail as generate's. Returns counts."""
    rng = random.Random(seed)
    msgs = _messages(out)
    n = len(msgs)
    chosen = rng.sample(range(n), int(n * (renames + expunged)))
    n_exp = int(n * expunged)
    expunge, rename = chosen[:n_exp], chosen[n_exp:]
    for i in expunge:
        os.unlink(msgs[i][0])
    for i in rename:
        path, fdir, sub, name = msgs[i]
        unique, _, info = name.partition(":")
        flags = info[2:] if info.startswith("2,") else ""
        old = "".join(sorted(flags))
        for letter in "FRS":
            if rng.random() < 0.3:
                flags = flags.replace(letter, "") if letter in flags else flags + letter
        flags = "".join(sorted(set(flags) | {"S"}))
        if sub == "cur" and flags == old:
            # every chosen message really changes its name: a flag change that happens to
            # land on the flags it had would be no rename at all (it did for ~4 in 10)
            flags = "".join(sorted(set(flags) ^ {rng.choice("FR")}))
        os.rename(path, os.path.join(fdir, "cur", unique + ":2," + flags))
    users = sorted(u for u in os.listdir(out) if not u.startswith("."))
    for k in range(int(n * new)):
        user = rng.choice(users)
        d = os.path.join(out, user, "Maildir", rng.choice(["", ".Sent", ".Junk"]), "new")
        size = SIZES[sizes](rng)
        t = NOW + 86400 + k
        name = _msg_name(rng, 10 ** 8 + k, size, t)
        _write(os.path.join(d, name), _body(rng, size, b"Subject: new\r\n\r\n"), t, owner)
    return {"renamed": len(rename), "new": int(n * new), "expunged": len(expunge),
            "before": n}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out")
    p.add_argument("--messages", type=int, default=100000)
    p.add_argument("--users", type=int, default=50)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--owner", help="UID:GID for every file (needs root)")
    p.add_argument("--mutate", action="store_true",
                   help="instead of creating OUT, change it like a day of IMAP use: 10 %% flag "
                        "renames, 1 %% new, 1 %% expunged (seeded by --seed)")
    a = p.parse_args(argv)
    owner = tuple(int(x) for x in a.owner.split(":")) if a.owner else None
    if a.mutate:
        print(mutate(a.out, seed=a.seed, owner=owner))
        return
    stats = generate(a.out, a.messages, a.users, a.seed, owner, progress=sys.stderr.isatty())
    print("%(users)d users, %(messages)d messages, %(bytes)d bytes in %(seconds).1f s" % stats)


if __name__ == "__main__":
    main()
