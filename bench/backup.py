#!/usr/bin/env python3
"""Backup benchmark: mailstore vs rsync --link-dest (rsnapshot's method), borg and restic.

    .venv/bin/python bench/backup.py [--messages 100000] [--users 50] [--work bench/out/backup]
                                     [--days 1]
    .venv/bin/python bench/backup.py --scale 10000,100000,1000000 [--scale-dir DIR] [--users 50]

Same corpus (bench/corpus.py), same machine, one run, every tool in turn:
  1. initial backup of the corpus (mailstore twice: compression "fast", the default, and
     "small"; ratios are against "fast"),
  2. a day of IMAP use (corpus.mutate: 10 % flag renames, 1 % new mail, 1 % expunged),
     then the incremental backup; "new bytes" is how much the repository grew on day 1;
     with --days N that many days, each tool's incremental after each (table: the median;
     the machine is shared, so each day's side-by-side ratios are printed as well),
  3. restore of one user (the biggest mailbox) into an empty directory,
  4. repository size after all backups.
Page cache is dropped before every timed step when /proc/sys/vm/drop_caches is writable
(root), so reads come from the disk as they would for a nightly run. mailstore, borg and
restic all encrypt (borg repokey, restic always, mailstore with a key file); borg and restic
use their default compression. Prints a table with ratios (other tool / mailstore). Not a test.

--scale N,N,...: the cost per file instead. For each size, a corpus of N small messages
(0.5-2 KiB: the cost is per file) under --scale-dir (default: a new directory in /var/tmp,
removed afterwards), a full backup by mailstore, restic and borg, then 10 % flag renames and
1 % new mail, then each tool's incremental. Prints side by side per tool the full backup's
seconds, the incremental's seconds, microseconds per message, and the incremental's peak RSS
(`/usr/bin/time -v` when present, else the rusage of the child); a tool that is not
installed is reported as such. Results also go to bench/out/backup-scale.json.
"""
import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import corpus  # noqa: E402

PASSWORD = "benchmark-only-passphrase"
ENV = dict(os.environ, BORG_PASSPHRASE=PASSWORD, RESTIC_PASSWORD=PASSWORD,
           BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes", BORG_RELOCATED_REPO_ACCESS_IS_OK="yes")
# mailstore runs from bytecode compiled once, as installed on the server (pip and Debian's
# packaging compile it), not compiled afresh by every run as PYTHONDONTWRITEBYTECODE (set in
# many development shells) would have it: that alone is about 0.1 s of each run (measured
# 2026-12-06). compile_mailstore() writes the bytecode before the first timed run.
ENV.pop("PYTHONDONTWRITEBYTECODE", None)


def compile_mailstore():
    package = os.path.join(os.path.dirname(HERE), "mailstore")
    subprocess.run([sys.executable, "-m", "compileall", "-q", package], env=ENV, check=True,
                   stdout=subprocess.DEVNULL)
    # and what it imports (the standard library's and the venv's bytecode where missing)
    subprocess.run([sys.executable, "-c", "import mailstore.cli.backup, "
                    "mailstore.backup.snapshot, mailstore.backup.restore"], env=ENV, check=True)


def drop_caches():
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def du(path):
    """Bytes used under path (hard links counted once), like `du -s --block-size=1`."""
    out = subprocess.run(["du", "-s", "--block-size=1", path], stdout=subprocess.PIPE,
                         check=True, text=True).stdout
    return int(out.split()[0])


TIME_V = "/usr/bin/time"


def timed(cmd, cwd=None):
    """(seconds, stdout, peak RSS in kB) of `cmd`, run on a cold page cache.

    The peak RSS comes from GNU time's -v report when /usr/bin/time is there (its own
    start-up, ~1 ms, is in the seconds too), else from the child's rusage (wait4)."""
    drop_caches()
    use_time = os.access(TIME_V, os.X_OK)
    report = tempfile.NamedTemporaryFile(prefix="bench-time-", suffix=".txt") \
        if use_time else None
    full = [TIME_V, "-v", "-o", report.name] + cmd if use_time else cmd
    t = time.perf_counter()
    proc = subprocess.Popen(full, cwd=cwd, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()
    elapsed = time.perf_counter() - t
    peak_kb = None
    if use_time:
        with open(report.name) as f:
            for line in f:
                if "Maximum resident set size" in line:
                    peak_kb = int(line.rsplit(":", 1)[1])
        report.close()
    if proc.returncode not in (0,):
        raise RuntimeError("{} failed ({}): {}".format(" ".join(cmd), proc.returncode,
                                                         err[-2000:]))
    if peak_kb is None:
        # Popen.communicate reaped the child; RUSAGE_CHILDREN's ru_maxrss is the largest of
        # all children so far, so it is only an upper bound
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return elapsed, out, peak_kb


class Mailstore:
    name = "mailstore"
    compression = "fast"

    def __init__(self, work, src):
        self.repo, self.key, self.src = os.path.join(work, "ms-repo-" + self.compression), \
            os.path.join(work, "ms-key-" + self.compression), src
        self.cli = [sys.executable, "-m", "mailstore", "backup"]

    def init(self):
        subprocess.run(self.cli + ["init", self.repo, "--key-file", self.key, "--new-key",
                                   "--compression", self.compression], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def backup(self, label):
        t, out, self.peak_kb = timed(self.cli + ["run", self.repo, self.src, "--key-file",
                                                 self.key, "--json"])
        self.last = json.loads(out)
        return t

    def restore(self, user, target):
        return timed(self.cli + ["restore", self.repo, "latest", target, "--user", user,
                                 "--key-file", self.key])[0]

    def size(self):
        return du(self.repo)


class MailstoreSmall(Mailstore):
    name = "mailstore (small)"
    compression = "small"


class Rsync:
    name = "rsync --link-dest"

    def __init__(self, work, src):
        self.dest, self.src = os.path.join(work, "rsync"), src
        self.prev = None

    def init(self):
        os.makedirs(self.dest)

    def backup(self, label):
        cmd = ["rsync", "-a", "--delete"]
        if self.prev:
            cmd.append("--link-dest=" + os.path.join(self.dest, self.prev))
        cmd += [self.src + "/", os.path.join(self.dest, label) + "/"]
        t, _out, self.peak_kb = timed(cmd)
        self.prev = label
        return t

    def restore(self, user, target):
        os.makedirs(target)
        return timed(["rsync", "-a", os.path.join(self.dest, self.prev, user) + "/",
                      os.path.join(target, user) + "/"])[0]

    def size(self):
        return du(self.dest)


class Borg:
    name = "borg"

    def __init__(self, work, src):
        self.repo, self.src = os.path.join(work, "borg"), src

    def init(self):
        subprocess.run(["borg", "init", "--encryption=repokey", self.repo], env=ENV, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def backup(self, label):
        self.last = label
        t, _out, self.peak_kb = timed(["borg", "create", self.repo + "::" + label, "."],
                                      cwd=self.src)
        return t

    def restore(self, user, target):
        os.makedirs(target)
        return timed(["borg", "extract", self.repo + "::" + self.last, user], cwd=target)[0]

    def size(self):
        return du(self.repo)


class Restic:
    name = "restic"

    def __init__(self, work, src):
        self.repo, self.src = os.path.join(work, "restic"), src
        self.cache = os.path.join(work, "restic-cache")

    def init(self):
        subprocess.run(["restic", "init", "-r", self.repo, "--cache-dir", self.cache], env=ENV,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def backup(self, label):
        t, _out, self.peak_kb = timed(["restic", "-r", self.repo, "--cache-dir", self.cache,
                                       "backup", "-q", self.src])
        return t

    def restore(self, user, target):
        return timed(["restic", "-r", self.repo, "--cache-dir", self.cache, "restore",
                      "latest", "--target", target, "--include",
                      os.path.join(self.src, user)])[0]

    def size(self):
        return du(self.repo)


TOOLS = {"mailstore": Mailstore, "mailstore-small": MailstoreSmall, "rsync": Rsync,
         "borg": Borg, "restic": Restic}


SCALE_TOOLS = ("mailstore", "restic", "borg")


def scale(sizes, users, parent, tools=SCALE_TOOLS):
    """The scale run (module docstring): {N: {tool: {full, incremental, peak_mb} or None}}."""
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    installed = {t: t.startswith("mailstore") or shutil.which(t) is not None for t in tools}
    results = {}
    compile_mailstore()
    for n in sizes:
        work = tempfile.mkdtemp(prefix="mailstore-bench-scale-", dir=parent)
        try:
            src = os.path.join(work, "corpus")
            log("scale {}: generating {} small messages for {} users ...".format(n, n, users))
            stats = corpus.generate(src, n, users, seed=1, sizes="small")
            log("scale {}: corpus {:.0f} MB in {:.0f} s".format(n, stats["bytes"] / 1e6,
                                                              stats["seconds"]))
            runners = [TOOLS[t](work, src) for t in tools if installed[t]]
            row = {t: None for t in tools}
            for r in runners:
                r.init()
                full = r.backup("s1")
                row[r.name] = {"full": full, "full_peak_mb": r.peak_kb / 1024}
                log("scale {}: {} full {:.1f} s, peak {:.0f} MB".format(
                    n, r.name, full, r.peak_kb / 1024))
            changes = corpus.mutate(src, seed=2, renames=0.10, new=0.01, expunged=0.0,
                                    sizes="small")
            log("scale {}: mutated {}".format(n, changes))
            for r in runners:
                incremental = r.backup("s2")
                row[r.name].update(incremental=incremental, peak_mb=r.peak_kb / 1024,
                                   us_per_message=incremental / n * 1e6)
                log("scale {}: {} incremental {:.2f} s, peak {:.0f} MB".format(
                    n, r.name, incremental, r.peak_kb / 1024))
            results[n] = row
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return results


def print_scale(results, tools=SCALE_TOOLS):
    print()
    print("Scale: incremental backup after 10 % flag renames + 1 % new mail (messages of "
          "0.5-2 KiB), page cache dropped; peak RSS of the incremental")
    cell = "{:>9} {:>9} {:>7} {:>8}"
    print("{:>9}  ".format("") + "  ".join("{:<36}".format(t) for t in tools))
    print("{:>9}  ".format("messages") + "  ".join(
        cell.format("full s", "incr s", "us/msg", "peak MB") for _t in tools))
    for n, row in sorted(results.items()):
        cells = []
        for t in tools:
            r = row.get(t)
            cells.append("{:<36}".format("not installed") if r is None else cell.format(
                "{:.1f}".format(r["full"]), "{:.2f}".format(r["incremental"]),
                "{:.1f}".format(r["us_per_message"]), "{:.0f}".format(r["peak_mb"])))
        print("{:>9}  ".format(n) + "  ".join(cells))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--messages", type=int, default=100000)
    p.add_argument("--users", type=int, default=50)
    p.add_argument("--work", default=os.path.join(HERE, "out", "backup"))
    p.add_argument("--tools", default=None,
                   help="tools to run, separated by commas (default: mailstore,"
                        "mailstore-small,rsync,borg,restic; with --scale: mailstore,restic,"
                        "borg, of which any)")
    p.add_argument("--days", type=int, default=1,
                   help="days of changes, each followed by every tool's incremental backup "
                        "(the table shows the median; each day's ratios are printed too)")
    p.add_argument("--scale", metavar="N,N,...",
                   help="instead: the scale run at these message counts (small messages; "
                        "mailstore, restic, borg): incremental seconds and peak RSS")
    p.add_argument("--scale-dir", default="/var/tmp",
                   help="where the scale run's corpora and repositories go (a new directory "
                        "in it, removed afterwards; default /var/tmp)")
    a = p.parse_args(argv)
    if a.scale:
        try:
            sizes = [int(x) for x in a.scale.split(",")]
        except ValueError:
            p.error("--scale: message counts separated by commas, not {!r}".format(a.scale))
        if not sizes or min(sizes) <= 0:
            p.error("--scale: message counts above 0")
        if not os.path.isdir(a.scale_dir):
            p.error("--scale-dir {}: not a directory".format(a.scale_dir))
        tools = SCALE_TOOLS
        if a.tools:
            tools = tuple(t for t in a.tools.split(",") if t)
            if not tools or not set(tools) <= set(SCALE_TOOLS):
                p.error("--tools with --scale: some of {}".format(",".join(SCALE_TOOLS)))
        results = scale(sizes, a.users, a.scale_dir, tools)
        print_scale(results, tools)
        out = os.path.join(HERE, "out")
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "backup-scale.json"), "w") as f:
            json.dump({str(n): row for n, row in results.items()}, f, indent=1)
        return
    tools = [t for t in (a.tools or "mailstore,mailstore-small,rsync,borg,restic").split(",")]
    missing = [t for t in tools if not t.startswith("mailstore") and not shutil.which(t)]
    if missing:
        sys.exit("not installed: {} (apt-get install rsync borgbackup restic)".format(
            ", ".join(missing)))
    if os.path.exists(a.work):
        shutil.rmtree(a.work)
    os.makedirs(a.work)
    src = os.path.join(a.work, "corpus")
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    log("generating {} messages for {} users ...".format(a.messages, a.users))
    stats = corpus.generate(src, a.messages, a.users, seed=1)
    log("corpus: {} messages, {:.0f} MB in {:.0f} s; page cache dropped before each step: {}"
        .format(stats["messages"], stats["bytes"] / 1e6, stats["seconds"], drop_caches()))
    runners = [TOOLS[t](a.work, src) for t in tools]
    compile_mailstore()
    results = {r.name: {} for r in runners}
    for r in runners:
        r.init()
        results[r.name]["initial"] = r.backup("s1")
        results[r.name]["size1"] = r.size()
        log("{}: initial {:.1f} s".format(r.name, results[r.name]["initial"]))
    for day in range(1, a.days + 1):
        day_changes = corpus.mutate(src, seed=1 + day, renames=0.10, new=0.01, expunged=0.01)
        if day == 1:
            changes = day_changes       # the header names day 1's changes
        log("day {} mutated: {}".format(day, day_changes))
        for r in runners:
            results[r.name].setdefault("days", []).append(r.backup("s{}".format(day + 1)))
            if day == 1:
                results[r.name]["size2"] = r.size()
            log("{}: incremental (day {}) {:.2f} s".format(r.name, day,
                                                        results[r.name]["days"][-1]))
    for r in runners:
        results[r.name]["incremental"] = statistics.median(results[r.name]["days"])
        results[r.name]["size_end"] = r.size()
    biggest = max((u for u in os.listdir(src)), key=lambda u: du(os.path.join(src, u)))
    for r in runners:
        target = os.path.join(a.work, "restore-" + r.name.replace(" ", "").strip("()"))
        results[r.name]["restore"] = r.restore(biggest, target)
        log("{}: restore {:.1f} s".format(r.name, results[r.name]["restore"]))
        shutil.rmtree(target)
    ms = results.get("mailstore")
    print()
    print("Backup benchmark: {} messages, {} users, {:.0f} MB; day of changes: {} renamed, {} "
          "new, {} expunged; restore of {} ({:.0f} MB)".format(
              stats["messages"], stats["users"], stats["bytes"] / 1e6, changes["renamed"],
              changes["new"], changes["expunged"], biggest, du(os.path.join(src, biggest)) / 1e6))
    header = "{:<18} {:>10} {:>12} {:>14} {:>10} {:>12}".format(
        "tool", "initial s", "incremental s", "incr. new MB", "restore s", "repo MB")
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        print("{:<18} {:>10.1f} {:>12.2f} {:>14.1f} {:>10.1f} {:>12.0f}".format(
            name, r["initial"], r["incremental"], (r["size2"] - r["size1"]) / 1e6, r["restore"],
            r["size_end"] / 1e6))
    if ms:
        print()
        print("ratios (tool time / mailstore time; >1 means mailstore is faster)")
        for name, r in results.items():
            if name == "mailstore":
                continue
            print("{:<18} initial {:>6.2f}x   incremental {:>6.1f}x   restore {:>6.2f}x   "
                  "repo size {:>5.2f}x".format(
                      name, r["initial"] / ms["initial"], r["incremental"] / ms["incremental"],
                      r["restore"] / ms["restore"], r["size_end"] / ms["size_end"]))
        if a.days > 1:
            print()
            print("incremental ratio per day (tool time / mailstore time that day)")
            for name, r in results.items():
                if name != "mailstore":
                    print("{:<18} {}".format(name, "  ".join(
                        "{:.1f}x".format(t / m) for t, m in zip(r["days"], ms["days"]))))
    print()
    for r in runners:
        if isinstance(r, Mailstore):
            print("{} incremental ({} scan): read {} files ({:.1f} MB), {} new objects, "
                  "{:.1f} MB in packs ({} renamed messages: 0 reads, 0 bytes)".format(
                      r.name, r.last.get("scan", "full"), r.last["read_files"],
                      r.last["read_bytes"] / 1e6, r.last["new_objects"],
                      r.last["new_bytes"] / 1e6, changes["renamed"]))


if __name__ == "__main__":
    main()
