#!/usr/bin/env python3
"""Lab timings: up from nothing, up again, first deploy, second deploy and its change count.

    .venv/bin/python bench/lab_timings.py [--cold] [--release bookworm]

DESTRUCTIVE for the lab: it runs ./lab/down first (the caches stay unless --cold). Steps:
  1. ./lab/down; with --cold also empty the LXC template cache and the apt-cacher-ng cache,
     so "from nothing" includes downloading Debian (what a fresh CI machine sees, minus the
     host packages);
  2. ./lab/up from nothing — its phase 2 is the first deploy of the container;
  3. ./lab/up again (everything exists);
  4. the full deploy once more with --json: time and pyinfra's change totals;
  5. how long the lab DNS takes to answer NXDOMAIN for a name outside the lab zone (the median
     of 20 queries from the lab host; tests/lab checks that it answers, and from its own data).
Prints a table and writes bench/out/lab_timings.json. Not a test.
"""
import argparse
import json
import os
import random
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from lab import topology  # noqa: E402

LXC_CACHE = "/var/cache/lxc/debian"
ACNG_CACHE = "/var/cache/apt-cacher-ng"


def timed(argv, **kwargs):
    start = time.monotonic()
    result = subprocess.run(argv, cwd=REPO, **kwargs)
    took = time.monotonic() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({result.returncode})")
    return took, result


def dns_nxdomain_ms(name="www.example.org", queries=20):
    """Median milliseconds from sending an A query for NAME to the lab DNS to its answer."""
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    times = []
    for _ in range(queries):
        qid = random.getrandbits(16)
        packet = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + question + \
            struct.pack(">HH", 1, 1)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(3.0)
            start = time.monotonic()
            s.sendto(packet, (topology.BRIDGE_ADDRESS, 53))
            reply = s.recv(4096)
            times.append((time.monotonic() - start) * 1000)
        if struct.unpack(">H", reply[:2])[0] != qid or reply[3] & 0xF != 3:
            sys.exit(f"the lab DNS did not answer NXDOMAIN for {name}")
    return round(statistics.median(times), 2)


def lab_timings():
    with open(os.path.join(REPO, ".lab", "timings.json")) as f:
        return json.load(f)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cold", action="store_true",
                        help="also empty the LXC template and apt-cacher-ng caches")
    parser.add_argument("--release", default="bookworm")
    args = parser.parse_args()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}

    timed(["./lab/down"], **quiet)
    if args.cold:
        shutil.rmtree(LXC_CACHE, ignore_errors=True)
        for name in os.listdir(ACNG_CACHE) if os.path.isdir(ACNG_CACHE) else ():
            shutil.rmtree(os.path.join(ACNG_CACHE, name), ignore_errors=True)
    up_cold, _ = timed(["./lab/up", "--release", args.release], **quiet)
    first = lab_timings()
    up_again, _ = timed(["./lab/up", "--release", args.release], **quiet)
    env = dict(os.environ, CACERT_EMAIL_SECRETS=os.path.join(REPO, ".lab", "secrets"))
    second, result = timed([".venv/bin/pyinfra", "-y", "inventories/lab.py", "deploy.py",
                            "--limit", "email", "--json"], env=env, capture_output=True,
                           text=True)
    results = json.loads(result.stdout)["results"]
    changed = [op["name"] for op in results["operations"] if op["success"]]

    figures = {
        "release": args.release,
        "caches": "emptied" if args.cold else "kept",
        "lab_up_from_nothing_s": round(up_cold, 1),
        "first_deploy_s": first.get("phase 2 (deploy over SSH)"),
        "container_provisioning_s": first.get("phase 1 (lab host + container)"),
        "lab_up_again_s": round(up_again, 1),
        "second_deploy_s": round(second, 1),
        "second_deploy_operations": results["totals"]["hosts"],
        "second_deploy_changes": results["totals"]["success"],
        "second_deploy_changed_operations": changed,
        "lab_dns_nxdomain_ms": dns_nxdomain_ms(),
    }
    os.makedirs(os.path.join(REPO, "bench", "out"), exist_ok=True)
    with open(os.path.join(REPO, "bench", "out", "lab_timings.json"), "w") as f:
        json.dump(figures, f, indent=2)
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    print(f"ratio up-again / up-from-nothing: {up_again / up_cold:.2f}")


if __name__ == "__main__":
    main()
