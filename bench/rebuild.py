#!/usr/bin/env python3
"""Rebuild from backups at scale, in the lab: how long `python -m operations.rebuild` takes
for N messages (goal: 100 000 messages in at most 15 min).

    .venv/bin/python bench/rebuild.py [--messages 100000] [--sizes small|mail] [--keep]

DESTRUCTIVE for the lab's mail and container: needs the lab up (./lab/up, any release) and
holds the lab lock throughout. Steps:
  1. the Maildirs of the lab's first two accounts are replaced by a corpus of N messages
     (bench/corpus.py, owned by the container's vmail user), written into the container's
     mail_root from the lab host;
  2. the nightly job (`mailstore-backup-job`) in the container: its time;
  3. the repository copied to the lab host; the container destroyed, the data volume emptied
     (as after a loss of both);
  4. `python -m operations.rebuild --json inventories/lab.py --from COPY`: the total and each
     step's time;
  5. the messages in the rebuilt mail_root counted against the corpus;
  6. unless --keep: the seeded Maildirs removed and the nightly job run again, so that later
     lab runs do not carry them.
Prints a table and writes bench/out/rebuild.json. Not a test.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "bench"))

from corpus import generate  # noqa: E402
from lab import lock  # noqa: E402
from lab import topology as t  # noqa: E402
from operations.defaults import defaults  # noqa: E402

ROOTFS = f"/var/lib/lxc/{t.CONTAINER}/rootfs"
COPY = "/var/lib/cacert-lab/bench-rebuild-repository"
JOB = "/usr/local/sbin/mailstore-backup-job"


def _say(text):
    print(text, file=sys.stderr, flush=True)


def _in_container(command, check=True):
    result = subprocess.run(["lxc-attach", "-n", t.CONTAINER, "--", "sh", "-c", command],
                            capture_output=True, text=True)
    if check and result.returncode != 0:
        sys.exit(f"bench/rebuild.py: `{command}` in {t.CONTAINER} failed: "
                 f"{(result.stdout + result.stderr).strip()[-2000:]}")
    return result.stdout


def _timed(what, function):
    _say(f"{what} ...")
    started = time.monotonic()
    value = function()
    seconds = time.monotonic() - started
    _say(f"{what}: {seconds:.1f} s")
    return value, seconds


def _count(root, users):
    """Message files below cur/ and new/ of every folder of `users` under `root`."""
    count = 0
    for user in users:
        for dirpath, _dirs, files in os.walk(os.path.join(root, user)):
            if os.path.basename(dirpath) in ("cur", "new"):
                count += len(files)
    return count


def _seed(mail_root, users, messages, sizes, owner):
    scratch = os.path.join(mail_root, ".bench-rebuild")
    shutil.rmtree(scratch, ignore_errors=True)
    stats = generate(scratch, messages=messages, users=len(users), owner=owner,
                     progress=sys.stderr.isatty(), sizes=sizes)
    for i, user in enumerate(users):
        shutil.rmtree(os.path.join(mail_root, user), ignore_errors=True)
        os.rename(os.path.join(scratch, "user%03d" % i), os.path.join(mail_root, user))
    shutil.rmtree(scratch)
    return stats


def _rebuild():
    env = dict(os.environ)
    env.setdefault("CACERT_EMAIL_SECRETS", os.path.join(REPO, ".lab", "secrets"))
    result = subprocess.run(
        [sys.executable, "-m", "operations.rebuild", "--json", "inventories/lab.py",
         "--from", COPY], cwd=REPO, env=env, capture_output=True, text=True, timeout=7200)
    try:
        report = json.loads(result.stdout)
    except ValueError:
        report = None
    if result.returncode != 0 or report is None:
        sys.exit("bench/rebuild.py: the rebuild failed:\n" +
                 (result.stdout + result.stderr)[-4000:])
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100000)
    parser.add_argument("--sizes", choices=("small", "mail"), default="small",
                        help="corpus sizes (default small: the cost of a rebuild is per file)")
    parser.add_argument("--keep", action="store_true",
                        help="leave the seeded mail in the rebuilt container")
    args = parser.parse_args(argv)
    lab_json = os.path.join(REPO, ".lab", "lab.json")
    if not os.path.isfile(lab_json):
        sys.exit("bench/rebuild.py: the lab is not up (.lab/lab.json missing): run ./lab/up")
    lab = json.load(open(lab_json))
    users = [a["user"] for a in lab["accounts"][:2]]
    mail_root = ROOTFS + lab["mail_root"]
    figures = {"messages": args.messages, "sizes": args.sizes, "release": lab["release"]}
    with lock.held():
        uid, gid = (int(x) for x in _in_container("id -u vmail; id -g vmail").split())
        stats, figures["seed_seconds"] = _timed(
            f"seeding {args.messages} messages", lambda: _seed(mail_root, users, args.messages,
                                                               args.sizes, (uid, gid)))
        figures["bytes"] = stats["bytes"]
        _, figures["backup_seconds"] = _timed("nightly backup job", lambda: _in_container(JOB))
        repository = ROOTFS + defaults()["backup_repository"]
        shutil.rmtree(COPY, ignore_errors=True)
        _timed("copying the repository", lambda: shutil.copytree(repository, COPY,
                                                                 symlinks=True))
        subprocess.run(["lxc-stop", "-n", t.CONTAINER, "-t", "60"], capture_output=True)
        subprocess.run(["lxc-destroy", "-n", t.CONTAINER], check=True, capture_output=True)
        subprocess.run(f"find {t.DATA_VOLUME_HOST_PATH} -mindepth 1 -maxdepth 1 "
                       "! -name lost+found -exec rm -rf {} +", shell=True, check=True)
        report, figures["rebuild_seconds"] = _timed("rebuild", _rebuild)
        figures["steps"] = [(s["step"], s.get("seconds")) for s in report["steps"]]
        figures["held_seconds"] = report.get("held_seconds")
        figures["restored"] = report.get("restored")
        figures["messages_after"] = _count(mail_root, users)
        shutil.rmtree(COPY, ignore_errors=True)
        if not args.keep:
            for user in users:
                shutil.rmtree(os.path.join(mail_root, user), ignore_errors=True)
            _in_container(JOB, check=False)
    print(f"rebuild of {args.messages} messages ({args.sizes}, {stats['bytes'] / 1e6:.0f} MB,"
          f" {len(users)} users), lab on Debian {lab['release']}:")
    for step, seconds in figures["steps"]:
        print(f"  {step:<60} {seconds if seconds is not None else '-':>8}")
    print(f"  {'whole rebuild':<60} {figures['rebuild_seconds']:>8.1f}   (goal: 900 s)")
    print(f"  {'inbound hold (port 25 answers 450)':<60} {figures['held_seconds']!s:>8}")
    print(f"  messages after the rebuild: {figures['messages_after']} of {args.messages}")
    print(f"  (seeding {figures['seed_seconds']:.0f} s, backup job "
          f"{figures['backup_seconds']:.0f} s; not part of the rebuild)")
    os.makedirs(os.path.join(REPO, "bench", "out"), exist_ok=True)
    with open(os.path.join(REPO, "bench", "out", "rebuild.json"), "w") as f:
        json.dump(figures, f, indent=2)
    return 0 if figures["messages_after"] == args.messages else 1


if __name__ == "__main__":
    sys.exit(main())
