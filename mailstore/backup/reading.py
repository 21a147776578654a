"""Reading the mail root during a run: files read safely, read-ahead hints, renamed messages.

A run reads files that Dovecot may rename, expunge or (in theory) replace at any moment, so
every read here opens without following a symlink, checks that it got a regular file, and
treats a file that vanished as normal. Safe to call from the run's worker threads.
"""
import errno
import os
import queue
import stat
import threading

from mailstore import maildir


def read_file(path):
    """(bytes, stat) of a regular file, never through a symlink; None if it vanished; a
    warning text if it is no longer a regular file or cannot be read (a permission, an I/O
    error): one unreadable message is skipped and named, it never costs the whole snapshot.
    Safe to call from worker threads."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NOATIME", 0))
    except PermissionError:
        # O_NOATIME is refused unless we own the file or are root: retry without it
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as e:
            return _unreadable(path, e)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "{}: became a symbolic link; not followed".format(path)
        return _unreadable(path, e)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return "{}: no longer a regular file; skipped".format(path)
        chunks = []
        # a message in the first read (a buffer of its size, not of a megabyte), then on
        # until end of file: it may have grown since the fstat
        want = min(st.st_size + 1, 1 << 26)
        while True:
            chunk = os.read(fd, want)
            if not chunk:
                break
            chunks.append(chunk)
            want = 1 << 20
    except OSError as e:
        return _unreadable(path, e)
    finally:
        os.close(fd)
    return b"".join(chunks), st


def _unreadable(path, e):
    return "{}: cannot read ({}); skipped".format(path, e.strerror or e)


class Prefetcher:
    """A thread that asks the kernel to start reading the files the workers will read soon
    (posix_fadvise WILLNEED): the disk then works on all queued messages at once instead of
    one read per worker at a time. The call can wait for the I/O queue, hence not done by
    the thread that decides what to read."""

    def __init__(self):
        self._queue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def put(self, path):
        self._queue.put(path)

    def stop(self):
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _loop(self):
        while True:
            path = self._queue.get()
            if path is None:
                return
            _prefetch(path)


def _prefetch(path):
    """Hint the kernel to read `path` ahead. Only a hint, never a read of our own: any error
    is ignored."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    except (OSError, AttributeError):
        pass
    finally:
        os.close(fd)


def folder_of(relpath):
    """The Maildir++ folder a path below the user dir belongs to; None outside Maildir."""
    parts = relpath.split("/")
    if parts[0] != maildir.MAILDIR:
        return None
    if len(parts) > 1 and parts[1].startswith(".") and parts[1] not in (".", ".."):
        return parts[1]
    return ""


def renamed(user_dir, m):
    """The message `m` under its current name if Dovecot renamed it since the scan, else None."""
    for subdir in maildir.MESSAGE_SUBDIRS:
        rel = maildir.message_relpath(m.folder, subdir, "")
        try:
            names = os.listdir(os.path.join(user_dir, rel))
        except OSError:
            continue
        for name in names:
            if name == m.unique or name.startswith(m.unique + ":"):
                unique, info, _s, _w = maildir.parse_name(name)
                return m._replace(subdir=subdir, name=name, info=info)
    return None
