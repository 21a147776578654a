"""Migration executor: carries out a :mod:`mailstore.migrate.plan` plan, and nothing else.

Crash safety does not depend on remembering individual files: the planner rescans both trees
on every run, so after a kill -9 the next run simply plans again. What this module guarantees
is that any state a kill can leave behind is one the planner handles:

- a file is written under a staging name in ``TARGET_ROOT/.mailstore-migrate/tmp/`` (same file
  system), gets owner, mode and mtime, and only then is renamed to its final name: a target
  message is either absent or complete, never torn;
- leftover staging files are removed at the start of every run;
- renames and unlinks are atomic; directory metadata is set after everything inside it.

Sources are opened with O_NOFOLLOW (and O_NOATIME where allowed, so that reading does not
even touch the source's atimes); nothing is ever written below the source root.

Durability: a kill -9 loses nothing the kernel has accepted, so files are not fsynced one by
one (that would make the copy several times slower than ``cp -a``). The orchestrator flushes
the target file system (:func:`sync_filesystem`, syncfs(2)) before it records a user as
migrated, and calls ``os.sync()`` before the source may be removed.

Test hook: ``MAILSTORE_TEST_KILL_AFTER=N`` makes the process SIGKILL itself at its N-th file
operation (crash tests); unset, it costs one integer comparison per operation.
"""
from concurrent.futures import ThreadPoolExecutor
import errno
import itertools
import os
import shutil
import signal
import stat
import struct
import sys
import threading
import time
from typing import Dict, List, NamedTuple, Optional, Set

from mailstore.migrate import plan as mp
from mailstore.maildir import Message

STATE_DIR = ".mailstore-migrate"
CHUNK = 1 << 20
# Copy threads. Measured on 2 cores: one is fastest; every rename out of the staging
# directory takes the file system's rename lock, and copies are bound by the page cache.
WORKERS = int(os.environ.get("MAILSTORE_MIGRATE_WORKERS", "1"))


_POOL = None


def thread_pool() -> ThreadPoolExecutor:
    """One process-wide pool (starting threads per user and per pass costs more than the
    small passes themselves)."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=max(WORKERS, 2))
    return _POOL


def shutdown_thread_pool() -> None:
    """Join the shared pool's threads (before fork: a child gets no copy of them, and forking
    a process with threads may leave a lock held forever in the child)."""
    global _POOL
    if _POOL is not None:
        _POOL.shutdown(wait=True)
        _POOL = None


def _parallel(fn, items, workers: int) -> None:
    """fn(item) for every item, on the shared threads when worth it; fn handles its errors."""
    if workers <= 1 or len(items) < 16:
        for item in items:
            fn(item)
        return
    pool = thread_pool()
    for future in [pool.submit(fn, item) for item in items]:
        future.result()


class _KillSwitch:
    """Counts file operations; SIGKILLs the migration at the configured one (tests only).

    The count is shared by the worker processes (mailstore.migrate.workers: anonymous
    shared memory, inherited through fork), and a worker that reaches the limit kills the
    main process first: the test then sees what an operator's kill -9 of the migration
    does (the workers die with it, PR_SET_PDEATHSIG)."""

    def __init__(self):
        value = os.environ.get("MAILSTORE_TEST_KILL_AFTER", "")
        self.limit = int(value) if value.isdigit() else 0
        self.count = 0
        self.pid = os.getpid()
        self._shared = None
        if self.limit:
            import mmap
            self._shared = mmap.mmap(-1, 8)      # MAP_SHARED | MAP_ANONYMOUS

    def tick(self) -> None:
        if self.limit:
            # not atomic across processes: a lost count only moves the kill point
            self.count = struct.unpack_from("q", self._shared)[0] + 1
            struct.pack_into("q", self._shared, 0, self.count)
            if self.count >= self.limit:
                if os.getpid() != self.pid:
                    os.kill(self.pid, signal.SIGKILL)
                os.kill(os.getpid(), signal.SIGKILL)


KILL = _KillSwitch()
_STAGE_SEQ = itertools.count(1)      # staging names; next() is atomic under the GIL


class Progress:
    """Messages and bytes done, rate and ETA on a terminal; silent otherwise (cron), and
    when ``quiet``."""

    def __init__(self, stream=None, interval: float = 0.5, quiet: bool = False):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = (not quiet and hasattr(self.stream, "isatty") and
                        self.stream.isatty())
        self.interval = interval
        self._lock = threading.Lock()
        self.label = ""
        self.total_msgs = self.total_bytes = 0
        self.msgs = self.bytes = 0
        self.started = self.last = time.monotonic()

    def start(self, label: str, total_msgs: int, total_bytes: int) -> None:
        self.label, self.total_msgs, self.total_bytes = label, total_msgs, total_bytes
        self.msgs = self.bytes = 0
        self.started = self.last = time.monotonic()

    def add_totals(self, msgs: int, nbytes: int) -> None:
        with self._lock:
            self.total_msgs += msgs
            self.total_bytes += nbytes

    def advance(self, msgs: int, nbytes: int) -> None:
        with self._lock:
            self.msgs += msgs
            self.bytes += nbytes
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self.started, 1e-6)
        rate = self.bytes / elapsed
        left = max(self.total_bytes - self.bytes, 0)
        eta = left / rate if rate > 0 else 0
        self.stream.write("\r%s: %d/%d messages, %.1f/%.1f MB, %.1f MB/s, ETA %d:%02d   " % (
            self.label, self.msgs, self.total_msgs, self.bytes / 1e6, self.total_bytes / 1e6,
            rate / 1e6, eta // 60, eta % 60))
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled and self.label:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()


class ExecResult(NamedTuple):
    copied: Set[str]            # relpaths written this run
    errors: List[mp.Difference]
    vanished: int               # sources gone between scan and copy (normal while live)
    # message relpath -> the copy as fstat saw it just before it was renamed into place
    # (renames keep size, mtime, owner and mode): lets the caller skip an lstat per copy
    written: Optional[Dict[str, Message]] = None


def staging_dir(target_root: str) -> str:
    return os.path.join(target_root, STATE_DIR, "tmp")


def clear_staging(target_root: str) -> None:
    """Remove what a killed run left in the staging directory; create it if missing."""
    d = staging_dir(target_root)
    os.makedirs(d, mode=0o700, exist_ok=True)
    for name in os.listdir(d):
        p = os.path.join(d, name)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.unlink(p)


def _open_source(path: str) -> int:
    flags = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    noatime = getattr(os, "O_NOATIME", 0)
    if noatime:
        try:
            return os.open(path, flags | noatime)
        except PermissionError:
            pass      # O_NOATIME needs ownership or CAP_FOWNER; fall back to a plain open
    return os.open(path, flags)


def _copy_fd(src: int, dst: int, size: int) -> int:
    copied = 0
    try:
        while True:
            n = os.sendfile(dst, src, copied, max(size - copied, CHUNK))
            if n == 0:
                break
            copied += n
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOSYS) or copied:
            raise
        while True:                                  # sendfile unsupported here
            buf = os.read(src, CHUNK)
            if not buf:
                break
            os.write(dst, buf)
            copied += len(buf)
    return copied


SMALL = 1 << 20      # files up to this size are copied through one buffer


def _copy_checked(src: int, dst: int, size: int) -> None:
    """Copy ``size`` bytes and read the copy back: verified here, against the very inode that
    was copied, while both are in the page cache (the cut-over then re-checks only
    metadata). Small files (nearly all mail) go through one buffer: three system calls;
    large ones through sendfile and a chunked comparison."""
    if size <= SMALL:
        data = os.pread(src, size + 1, 0)
        if len(data) != size:
            raise OSError(errno.EIO, "source changed size while being copied")
        view, written = memoryview(data), 0
        while written < size:
            written += os.write(dst, view[written:])
        if _read_back(dst, size) != data:
            raise OSError(errno.EIO, "copy differs from the source after writing")
        return
    n = _copy_fd(src, dst, size)
    if n != size:
        raise OSError(errno.EIO, "copied %d bytes of %d" % (n, size))
    if not _same_bytes(src, dst):
        raise OSError(errno.EIO, "copy differs from the source after writing")


def _read_back(fd: int, size: int) -> bytes:
    return os.pread(fd, size + 1, 0)


def _same_bytes(a: int, b: int) -> bool:
    offset = 0
    while True:
        x = os.pread(a, CHUNK, offset)
        if x != os.pread(b, CHUNK, offset):
            return False
        if not x:
            return True
        offset += len(x)


class Executor:
    """Runs plans for one user: source ``src_dir`` (ROOT/<user>) into ``dst_dir``."""

    def __init__(self, src_dir: str, dst_dir: str, target_root: str,
                 progress: Optional[Progress] = None, live: bool = False,
                 workers: int = WORKERS):
        self.src_dir, self.dst_dir = src_dir, dst_dir
        self.workers = workers
        self.staging = staging_dir(target_root)
        self.progress = progress or Progress(stream=open(os.devnull, "w"))
        self.live = live
        self._pid = os.getpid()
        self.written: Dict[str, Message] = {}
        mask = os.umask(0)
        os.umask(mask)
        self._created_mode = 0o600 & ~mask   # what os.open(..., 0o600) gives a new file

    # Plain concatenation, not os.path.join: relpaths come from scans and never start with
    # "/", and even if one did, it could not escape the root this way.
    def _src(self, rel: str) -> str:
        return self.src_dir + "/" + rel if rel else self.src_dir

    def _dst(self, rel: str) -> str:
        return self.dst_dir + "/" + rel if rel else self.dst_dir

    def _stage_name(self) -> str:
        # one counter for the process: executors of several users run side by side
        return "%s/%d.%d" % (self.staging, self._pid, next(_STAGE_SEQ))

    def run(self, plan: mp.UserPlan) -> ExecResult:
        copied: Set[str] = set()
        errors: List[mp.Difference] = []
        vanished = [0]
        handlers = {mp.CLEAR: self._clear, mp.MKDIR: self._mkdir,
                    mp.COPY: self._copy, mp.SYMLINK: self._symlink, mp.DELETE: self._delete,
                    mp.META: self._meta, mp.RMDIR: self._rmdir, mp.DIRMETA: self._meta}

        def failed(action: mp.Action, e: OSError) -> None:
            if isinstance(e, FileNotFoundError):
                # While mail is live, Dovecot renames and expunges under our feet: the next
                # pass sees the new state. Once quiesced, nothing may vanish.
                vanished[0] += 1
                if not self.live:
                    errors.append(mp.Difference(action.relpath, "%s: %s (%s)" % (
                        action.op, e.strerror, e.filename)))
            else:
                errors.append(mp.Difference(action.relpath, "%s failed: %s" % (
                    action.op, e.strerror or e)))

        def one(action: mp.Action) -> None:
            try:
                handlers[action.op](action)
                if action.op == mp.COPY:
                    copied.add(action.relpath)
                    self.progress.advance(1 if action.kind == "message" else 0,
                                          action.entry.size)
            except OSError as e:
                failed(action, e)

        # Copies are independent of each other (distinct targets, staged under distinct
        # names) and spend their time in system calls that release the GIL: run them on a
        # few threads. Everything else keeps the plan's order. Renames - thousands after a
        # day of flag changes, while delivery is deferred - are done right here: rename(2)
        # from old to new name below the user's target directory, nothing else.
        copies = [a for a in plan.actions if a.op == mp.COPY]
        rename, tick, dst = os.rename, KILL.tick, self.dst_dir + "/"
        for action in plan.actions:
            op = action.op
            if op == mp.RENAME:
                try:
                    tick()
                    rename(dst + action.old_relpath, dst + action.relpath)
                except OSError as e:
                    failed(action, e)
            elif op == mp.COPY:
                if copies:
                    _parallel(one, copies, self.workers)
                    copies = []
            else:
                one(action)
        return ExecResult(copied, errors, vanished[0], self.written)

    # -- operations -------------------------------------------------------------------------
    def _clear(self, a: mp.Action) -> None:
        path = self._dst(a.relpath)
        KILL.tick()
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)          # fd-based on Linux: does not follow symlinks inside
        else:
            os.unlink(path)

    def _mkdir(self, a: mp.Action) -> None:
        KILL.tick()
        try:
            os.mkdir(self._dst(a.relpath), 0o700)
        except FileExistsError:
            pass

    def _copy(self, a: mp.Action) -> None:
        src = _open_source(self._src(a.relpath))
        try:
            st = os.fstat(src)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(errno.EINVAL, "source is no longer a regular file")
            tmp = self._stage_name()
            KILL.tick()
            dst = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW |
                          getattr(os, "O_CLOEXEC", 0), 0o600)
            try:
                _copy_checked(src, dst, st.st_size)
                os.fchown(dst, st.st_uid, st.st_gid)   # before chmod: clears set-id bits
                if stat.S_IMODE(st.st_mode) != self._created_mode:
                    os.fchmod(dst, stat.S_IMODE(st.st_mode))
                os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
                if a.kind == "message":
                    self._note_written(a, os.fstat(dst))
            except BaseException:
                os.close(dst)
                os.unlink(tmp)
                raise
            os.close(dst)
        finally:
            os.close(src)
        KILL.tick()
        os.rename(tmp, self._dst(a.relpath))

    def _note_written(self, a: mp.Action, st: os.stat_result) -> None:
        m = a.entry
        facts = (st.st_size, st.st_mtime_ns, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
        # the source's own record when the copy has its facts (the usual case): later
        # comparisons are then an identity test (delta.adopt_equal)
        self.written[a.relpath] = m if m[5:10] == facts else m._replace(
            size=facts[0], mtime_ns=facts[1], uid=facts[2], gid=facts[3], mode=facts[4],
            inode=st.st_ino)

    def _symlink(self, a: mp.Action) -> None:
        tmp = self._stage_name()
        KILL.tick()
        os.symlink(a.entry.link, tmp)
        os.chown(tmp, a.entry.uid, a.entry.gid, follow_symlinks=False)
        os.utime(tmp, ns=(a.entry.mtime_ns, a.entry.mtime_ns), follow_symlinks=False)
        KILL.tick()
        os.rename(tmp, self._dst(a.relpath))

    def _delete(self, a: mp.Action) -> None:
        KILL.tick()
        try:
            os.unlink(self._dst(a.relpath))
        except FileNotFoundError:
            pass

    def _rmdir(self, a: mp.Action) -> None:
        KILL.tick()
        try:
            os.rmdir(self._dst(a.relpath))
        except FileNotFoundError:
            pass

    def _meta(self, a: mp.Action) -> None:
        e = a.entry
        path = self._dst(a.relpath)
        KILL.tick()
        if not a.mtime_only:
            os.chown(path, e.uid, e.gid, follow_symlinks=False)
            if a.kind != "symlink":
                os.chmod(path, e.mode)
        os.utime(path, ns=(e.mtime_ns, e.mtime_ns), follow_symlinks=False)


def compare_files(a_path: str, b_path: str, rel: str) -> List[mp.Difference]:
    """Byte-compare two files, never following a final symlink; [] when identical."""
    try:
        a = _open_source(a_path)
    except OSError as e:
        return [mp.Difference(rel, "cannot read source: %s" % (e.strerror or e))]
    try:
        try:
            b = _open_source(b_path)
        except OSError as e:
            return [mp.Difference(rel, "cannot read target: %s" % (e.strerror or e))]
        try:
            while True:
                # a read error (EIO) is a difference like any other: the caller (the source's
                # clean-up) then leaves that user alone and goes on with the others
                try:
                    x = os.read(a, CHUNK)
                except OSError as e:
                    return [mp.Difference(rel, "cannot read source: %s" % (e.strerror or e))]
                try:
                    y = os.read(b, CHUNK)
                except OSError as e:
                    return [mp.Difference(rel, "cannot read target: %s" % (e.strerror or e))]
                if x != y:
                    return [mp.Difference(rel, "contents differ")]
                if not x:
                    return []
        finally:
            os.close(b)
    finally:
        os.close(a)


_SYNCFS = None


def sync_filesystem(path: str) -> None:
    """Flush the file system that holds ``path`` to disk: syncfs(2), so that the cut-over
    does not also wait for the source's (or anyone else's) dirty pages as os.sync() does;
    os.sync() where syncfs is not available."""
    global _SYNCFS
    if _SYNCFS is None:
        try:
            import ctypes
            _SYNCFS = ctypes.CDLL(None, use_errno=True).syncfs
        except (ImportError, OSError, AttributeError):    # no ctypes (or no libc syncfs)
            _SYNCFS = False
    if _SYNCFS:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
        try:
            if _SYNCFS(fd) == 0:
                return
        finally:
            os.close(fd)
    os.sync()


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
