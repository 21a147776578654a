#!/usr/bin/env python3
"""The upgrade's window, in the lab: how long a cut-over and a rollback hold delivery and keep
IMAP away (goals: delivery held at most 60 s, IMAP away at most 30 s).

    sudo .venv/bin/python bench/cutover.py [--runs 1]

Needs the lab up on bullseye (./lab/up --release bullseye: production's release). Each run is
the lab test tests/lab/test_upgrade_cutover.py (mail moved to the data volume, a trixie
successor prepared, cut-over and rollback while a client sends mail every 0.25 s and another
logs in over IMAP every 0.5 s, the lab put back), whose `window` lines are the figures; a run
whose test failed is reported as failed, its figures are not used. Prints a table and writes
bench/out/cutover.json. Not a test.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST = "tests/lab/test_upgrade_cutover.py"
WINDOW = re.compile(r"^window (?P<name>[\w-]+): held (?P<held>[\d.]+) s, IMAP away at most "
                    r"(?P<imap>[\d.]+) s, longest wait (?P<wait>[\d.]+) s", re.M)
GOALS = {"held": 60, "imap": 30}


def one_run():
    """{handover: {held, imap, wait}} of one passing run of the lab test, or None."""
    result = subprocess.run(
        [os.path.join(REPO, ".venv", "bin", "python"), "-m", "pytest", "-q", "-s",
         "-p", "no:cacheprovider", TEST], cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        print(result.stdout[-3000:], file=sys.stderr)
        return None
    return {m["name"]: {k: float(m[k]) for k in ("held", "imap", "wait")}
            for m in WINDOW.finditer(result.stdout)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="lab test runs (about 6 min each)")
    args = parser.parse_args(argv)
    if not os.path.isfile(os.path.join(REPO, ".lab", "lab.json")):
        sys.exit("bench/cutover.py: the lab is not up: run ./lab/up --release bullseye")
    runs = []
    for i in range(args.runs):
        print(f"run {i + 1} of {args.runs} ...", file=sys.stderr, flush=True)
        runs.append(one_run())
    good = [r for r in runs if r]
    print(f"{'handover':<10} {'held s (goal 60)':>18} {'IMAP away s (goal 30)':>22} "
          f"{'longest wait s':>15}   runs: {len(good)} passed of {len(runs)}")
    for name in ("cut-over", "rollback"):
        figures = [r[name] for r in good if name in r]
        if not figures:
            continue
        median = {k: statistics.median(f[k] for f in figures) for k in ("held", "imap", "wait")}
        met = all(median[k] <= goal for k, goal in GOALS.items())
        print(f"{name:<10} {median['held']:>18.1f} {median['imap']:>22.1f} "
              f"{median['wait']:>15.1f}   {'met' if met else 'NOT met'} (medians)")
    os.makedirs(os.path.join(REPO, "bench", "out"), exist_ok=True)
    with open(os.path.join(REPO, "bench", "out", "cutover.json"), "w") as f:
        json.dump(runs, f, indent=2)
    return 0 if good and len(good) == len(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
