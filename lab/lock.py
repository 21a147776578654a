"""The one lab lock: `lab up`, `lab down` and every deploy a lab test runs take it.

Two pyinfra runs against the same container at once would interleave apt and config changes;
`flock` on a file in /run serialises them (the lock goes away with the process, so a killed
run never leaves it held).
"""
import contextlib
import fcntl
import os
import sys
import time

LOCK_PATH = "/run/cacert-lab.lock"


@contextlib.contextmanager
def held(timeout=1800, path=LOCK_PATH):
    """Hold the lab lock for the duration of the `with` block; wait up to `timeout` seconds."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    print(f"waiting for the lab lock {path} (another lab up/down or deploy "
                          "holds it)", file=sys.stderr, flush=True)
                    waited = True
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the lab lock {path} is still held after {timeout}s "
                                       "(another lab up/down or deploy is running)")
                time.sleep(1)
        yield
    finally:
        os.close(fd)
