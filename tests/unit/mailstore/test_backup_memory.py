"""memory.limit_arenas: a backup run's threads share one malloc arena.

Counted the way glibc itself reports them (malloc_stats(3) on stderr, one "Arena N:" line
each), in a Python of its own: an arena once made stays for the life of a process.
"""
import os
import subprocess
import sys

import pytest

import mailstore

_THREADS = 6

# Each thread makes its first allocation while every thread before it is still alive: glibc
# hands a new thread the arena of a thread that has exited, so threads that ran one after the
# other (as they may on a loaded machine) would share one and the count would depend on timing.
_CHILD = r"""
import ctypes, sys, threading
from mailstore.backup import memory
if sys.argv[1] == "limit":
    sys.stderr.write("limited: %s\n" % memory.limit_arenas())
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
threads = int(sys.argv[2])
everyone = threading.Barrier(threads, timeout=30)

def allocate():
    for _ in range(200):
        libc.malloc(4000)       # kept: each thread's own arena stays in use
    everyone.wait()             # no thread exits before the last has its arena

workers = [threading.Thread(target=allocate) for _ in range(threads)]
for t in workers:
    t.start()
for t in workers:
    t.join()
libc.malloc_stats()
"""


def _arenas(mode, **env):
    root = os.path.dirname(os.path.dirname(os.path.abspath(mailstore.__file__)))
    environ = dict(os.environ, PYTHONPATH=root)
    environ.pop("MALLOC_ARENA_MAX", None)
    environ.update(env)
    out = subprocess.run([sys.executable, "-c", _CHILD, mode, str(_THREADS)], env=environ,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True,
                         timeout=60).stderr.decode()
    return out.count("Arena "), out


def _glibc():
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError):
        return False


pytestmark = pytest.mark.skipif(not _glibc(), reason="malloc arenas are glibc's")


def test_threads_without_the_limit_get_arenas_of_their_own():
    count, out = _arenas("none")
    assert count == 1 + _THREADS, out


def test_limit_arenas_keeps_every_thread_in_the_main_arena():
    count, out = _arenas("limit")
    assert "limited: True" in out
    assert count == 1, out


def test_an_operators_malloc_arena_max_wins():
    count, out = _arenas("limit", MALLOC_ARENA_MAX="3")
    assert "limited: False" in out
    assert count == 3, out
