"""A backup run's malloc arenas: one, so that its peak memory stays where its own data puts it.

glibc's malloc gives a thread that finds the main arena busy an arena of its own (up to eight
per CPU), and frees into the arena a block came from. A run's scan threads build short-lived
tables of names beside the long-lived rows of the main thread: spread over up to nine arenas,
the freed space of one cannot serve the next allocation of another. At a million messages
(2026-12-07; MB: KiB / 1024) the run's peak RSS was 282-307 MB so, 274-282 MB with two
arenas and 268-277 MB with one (268-269 MB before the scan made those tables), and one arena
was no slower: the interpreter lock already lets one thread at a time allocate most of what
Python allocates, and what the workers allocate without it (zlib's and OpenSSL's buffers)
is small beside what they do with it.

An operator's MALLOC_ARENA_MAX wins (glibc reads it at start); on a C library without
mallopt (musl) nothing changes.
"""
import ctypes
import os

# mallopt's parameter number for the arena limit (glibc's malloc.h: M_ARENA_MAX)
_M_ARENA_MAX = -8
ARENAS = 1


def limit_arenas(arenas=ARENAS):
    """Limit this process's malloc arenas to `arenas`, before its threads start; True if set.
    Arenas made already stay."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt(_M_ARENA_MAX, arenas) == 1
