#!/usr/bin/env python3
"""How fast a nightly incremental can be on this machine at all, beside rsync --link-dest.

    sudo .venv/bin/python bench/incremental_floor.py [--messages 100000] [--users 50]
        [--repeat 3] [--work DIR] [--source DIR]

Any backup that finds new and renamed mail by its name has to see every name of the store
once: that is, cold, one read of each directory's blocks, which `find` does in C with
nothing else. mailstore, a Python program, must also start its interpreter and import its
modules (sqlite3, cryptography, its own packages) from a cold disk. This times, each on a
cold page cache (so it needs root, as bench/backup.py does), medians of `--repeat`:

- rsync -a --delete --link-dest of a day of traffic on the corpus (bench/corpus.py's
  --mutate: 10 % flag renames, 1 % new, 1 % expunged, on a hard-linked copy) onto a copy of
  the corpus as it was: the benchmark's reference;
- `find` of the changed corpus writing every name to /dev/null;
- `cat` of the day's new messages (read once, cold, as any backup must);
- the interpreter started with nothing to do (`python -c pass`);
- the interpreter importing what `mailstore backup run` imports;

and prints each beside rsync's time divided by 5 (the incremental goal of bench/README.md).
When `find`, `cat` and the imports together are above that, no incremental of this design
reaches the goal on this machine, whatever else it does (store, encrypt, write, fsync).
The corpus (bench/corpus.py, `--messages` in `--users` Maildirs) is made under `--work`
unless `--source` names one; the work directory is removed at the end unless it was given.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import backup  # noqa: E402  (drop_caches, ENV and compile_mailstore: the same as there)
import corpus  # noqa: E402

IMPORTS = "import mailstore.cli.backup, mailstore.backup.snapshot"


def cold(cmd, env=None, stdin=None):
    """Seconds of `cmd` (its output thrown away; `stdin`: bytes it reads) on a cold page
    cache; `env` defaults to backup.ENV."""
    backup.drop_caches()
    t = time.perf_counter()
    subprocess.run(cmd, env=backup.ENV if env is None else env, input=stdin, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def new_files(tree, before):
    """Paths of the regular files in `tree` whose inode `before` (a hard-linked copy of it
    made earlier) does not have: the day's new mail."""
    seen = set()
    for dirpath, _dirs, files in os.walk(before):
        for name in files:
            seen.add(os.lstat(os.path.join(dirpath, name)).st_ino)
    found = []
    for dirpath, _dirs, files in os.walk(tree):
        for name in files:
            path = os.path.join(dirpath, name)
            if os.lstat(path).st_ino not in seen:
                found.append(path)
    return found


def measure(source, work, repeat):
    """{step: [seconds...]}: the corpus as it was (`source`) copied as the previous backup,
    then a day of traffic on a hard-linked copy of it, the night's work against that."""
    prev, day, cur = (os.path.join(work, n) for n in ("prev", "day", "cur"))
    subprocess.run(["rsync", "-a", "--delete", source + "/", prev + "/"], check=True)
    shutil.rmtree(day, ignore_errors=True)
    subprocess.run(["cp", "-al", source, day], check=True)
    corpus.mutate(day, seed=2)          # what `bench/corpus.py --mutate` does: a day
    new = b"\0".join(os.fsencode(p) for p in new_files(day, source))
    backup.compile_mailstore()
    root = os.path.dirname(HERE)
    env_path = dict(backup.ENV, PYTHONPATH=root)
    steps = {"rsync --link-dest (a day's changes)": [], "find (every name, C)": [],
             "cat of the day's new messages": [], "python -c pass": [],
             "python, mailstore's imports": []}
    for _ in range(repeat):
        shutil.rmtree(cur, ignore_errors=True)
        steps["rsync --link-dest (a day's changes)"].append(cold(
            ["rsync", "-a", "--delete", "--link-dest=" + prev, day + "/", cur + "/"]))
        steps["find (every name, C)"].append(cold(["find", day]))
        steps["cat of the day's new messages"].append(cold(["xargs", "-0", "cat"], stdin=new))
        steps["python -c pass"].append(cold([sys.executable, "-c", "pass"]))
        steps["python, mailstore's imports"].append(
            cold([sys.executable, "-c", IMPORTS], env=env_path))
    return steps


def report(steps):
    rsync = statistics.median(steps["rsync --link-dest (a day's changes)"])
    goal = rsync / 5
    print("{:<40} {:>9} {:>13}".format("step (cold page cache)", "median s", "÷ rsync/5"))
    for name, runs in steps.items():
        m = statistics.median(runs)
        print("{:<40} {:>9.3f} {:>13.2f}".format(name, m, m / goal))
    floor = sum(statistics.median(steps[n]) for n in (
        "find (every name, C)", "cat of the day's new messages", "python, mailstore's imports"))
    print("{:<40} {:>9.3f} {:>13.2f}".format("floor: find + cat + the imports", floor,
                                              floor / goal))
    print("goal (rsync ÷ 5): {:.3f} s; the floor is {} it".format(
        goal, "above" if floor > goal else "below"))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=100000)
    p.add_argument("--users", type=int, default=50)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--work", help="work directory (default: a new one under /var/tmp)")
    p.add_argument("--source", help="an existing corpus of Maildirs instead of a new one")
    a = p.parse_args(argv)
    if not backup.drop_caches():
        p.error("cannot drop the page cache (/proc/sys/vm/drop_caches): run as root")
    if shutil.which("rsync") is None:
        p.error("rsync is not installed")
    work = a.work or tempfile.mkdtemp(prefix="mailstore-floor-", dir="/var/tmp")
    os.makedirs(work, exist_ok=True)
    try:
        source = a.source
        if source is None:
            source = os.path.join(work, "src")
            stats = corpus.generate(source, a.messages, a.users, seed=1)
            print("corpus: {} messages, {:.0f} MB".format(stats["messages"],
                                                          stats["bytes"] / 1e6))
        report(measure(os.path.abspath(source), work, a.repeat))
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
