"""The messages digest of a run's snapshot (auth.ordered_messages_digest), taken in a process
of its own while the run fills the catalog.

Why a process: the digest is the canonical JSON of every message row, hashed; at a million
messages that is about 3 s of work that holds the interpreter lock (the JSON encoder lets go
of it only between chunks). In a thread beside the commit it took those 3 s all the same and
held up the commit's inserts meanwhile (each row SQLite inserts hands the lock back and waits
for it again): 10 900 object rows took 4.2 s beside it and 0.8 s after it (2026-12-06, 1M
messages). A process of its own runs on the other core and holds up nothing. Below
PROCESS_MIN_ROWS rows a thread takes it, as before: there the process cost more than it saved.

The process reads the rows from the run's index cache file (handed over as an open file,
which the run renames meanwhile), each chunk checked against the SHA-256 the run wrote it
with (index_cache.Cache); it gets no key and nothing secret. Should it fail to start or to
answer, the digest is taken in the calling thread as before: slower, never different.

    python -m mailstore.backup.rows_digest   (reads the job from standard input; internal)
"""
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from mailstore.backup import auth, index_cache


# From this many rows on the digest is taken in a process: below, starting one (a Python,
# its imports read from a cold disk) cost more than it saved (100 000 messages: 0.1 s
# slower, 2026-12-06).
PROCESS_MIN_ROWS = 300000


class Digest:
    """The digest being taken: `result()` gives its hex text (like a Future's)."""

    def __init__(self, cache):
        self.cache = cache
        self._value = None
        self._proc = self._thread = None
        if sum(map(cache.count_of, cache.users)) < PROCESS_MIN_ROWS:
            # in a thread, as before: what it raises, result() raises again
            self._thread = ThreadPoolExecutor(max_workers=1)
            self._future = self._thread.submit(
                auth.ordered_messages_digest, cache.chunks_in_id_order())
            return
        try:
            self._proc = _start(cache)
        except (OSError, ValueError):
            self._proc = None

    def result(self):
        if self._thread is not None:
            try:
                self._value = self._future.result()
            finally:
                self._thread.shutdown(wait=True)
                self._thread = None
        if self._value is None and self._proc is not None:
            proc, self._proc = self._proc, None
            with proc.stdout:
                out = proc.stdout.read()
            proc.wait()
            value = out.decode("ascii", "replace").strip()
            if proc.returncode == 0 and len(value) == 64 and \
                    all(c in "0123456789abcdef" for c in value):
                self._value = value
        if self._value is None:
            # the process did not start or did not answer: here, as before
            self._value = auth.ordered_messages_digest(self.cache.chunks_in_id_order())
        return self._value


def _start(cache):
    fd = cache.fileno()
    job = json.dumps({"fd": fd, "chunks": {
        user: [[o, n, c, sha.hex()] for o, n, c, sha in chunks]
        for user, chunks in cache.chunk_table().items()}}).encode("ascii")
    # isolated (-I: no PYTHON* variables, no current directory on sys.path); where this
    # mailstore is goes last on its sys.path: an installed one is found as the parent found it
    home = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen(
        [sys.executable, "-I", "-c", "import sys; sys.path.append(sys.argv[1]); "
         "from mailstore.backup.rows_digest import main; main()", home],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        pass_fds=(fd,), close_fds=True)
    try:
        proc.stdin.write(job)
        proc.stdin.close()
    except OSError:
        proc.kill()
        proc.wait()
        raise
    return proc


def main():
    job = json.loads(sys.stdin.read())
    chunks = {user: [(o, n, c, bytes.fromhex(sha)) for o, n, c, sha in got]
              for user, got in job["chunks"].items()}
    with os.fdopen(job["fd"], "rb", closefd=False) as f:
        cache = index_cache.Cache(f, chunks, owns=False)
        sys.stdout.write(auth.ordered_messages_digest(cache.chunks_in_id_order()) + "\n")


if __name__ == "__main__":
    main()
