"""Worker processes for a migration: the users are shared out across the CPUs.

Why processes: a migration spends its time in many short system calls and the Python around
them; threads of one process take turns on the GIL at every call (measured: two threads were
no faster than one on two cores). So the migration forks workers once it has read the journal
and claimed its users. Each worker takes users one at a time from a shared pipe (a large
mailbox does not leave the other worker idle), copies them live, reports, and waits. After the
quiesce hook it carries out the cut-over for the same users (it holds what it learnt about
them during the live copy, :mod:`mailstore.migrate.delta`) and reports again. The main
process alone runs the hooks and writes the journal's "done" records.

Death: a worker gets SIGKILL when the main process dies (PR_SET_PDEATHSIG), so a kill -9 of
the migration leaves nobody writing into the target. A worker that dies on its own (the OOM
killer, a bug) costs its users this run only: they are reported as failed with the reason,
the other users go on, the resume hook still runs, and the next run picks them up.
"""
import os
import pickle
import select
import signal
import struct
import sys
import traceback
from typing import Callable, Dict, List, Optional

from mailstore.migrate import execute as mx

_LENGTH = struct.Struct("!Q")
_INDEX = struct.Struct("!I")       # 4 bytes: pipe reads of <= PIPE_BUF are never split


def default_count() -> int:
    """One worker per CPU, four at most (measured on 2 CPUs: more workers than CPUs were no
    faster; the target disk is the limit soon after that)."""
    return max(1, min(4, os.cpu_count() or 1))


class Workers:
    """Runs ``live(r)`` for every item of ``results`` (UserResult objects) in ``count``
    forked processes, then, on :meth:`begin_cutover`, ``cutover(items) -> phases`` in each
    process for the items it took; while it waits for that, it calls ``idle()`` every 50 ms
    (the migration drains its inotify queue: mailstore.migrate.dirwatch). Workers take the items in
    ``order`` (indices; default: as given). Item attributes changed in a worker are copied
    back into the main process's objects (``__dict__``). ``progress``: the real progress
    display, given to the first worker (the others draw nothing, so that lines do not
    interleave)."""

    def __init__(self, results: list, count: int, live: Callable, cutover: Callable,
                 progress: mx.Progress, idle: Optional[Callable] = None,
                 order: Optional[List[int]] = None):
        self.results = results
        self.live_fn, self.cutover_fn = live, cutover
        self.idle = idle
        self.order = order if order is not None else list(range(len(results)))
        self.progress = progress
        self.children: List[dict] = []
        self._collected = False
        self._start(min(count, len(results)))

    # -- main process -----------------------------------------------------------------------
    def _start(self, count: int) -> None:
        mx.shutdown_thread_pool()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (AttributeError, ValueError):
                pass
        work_r, work_w = os.pipe()
        parent = os.getpid()
        for k in range(count):
            res_r, res_w = os.pipe()
            cmd_r, cmd_w = os.pipe()
            pid = os.fork()
            if pid == 0:                                     # the worker
                code = 70
                try:
                    os.close(work_w)
                    os.close(res_r)
                    os.close(cmd_w)
                    for c in self.children:                  # siblings' pipe ends
                        os.close(c["res"])
                        os.close(c["cmd"])
                    _die_with(parent)
                    self._worker(k, work_r, res_w, cmd_r)
                    code = 0
                except BaseException:                        # report, never return
                    try:
                        traceback.print_exc()
                        sys.stderr.flush()
                    except BaseException:
                        pass
                finally:
                    os._exit(code)
            os.close(res_w)
            os.close(cmd_r)
            self.children.append({"pid": pid, "res": res_r, "cmd": cmd_w, "taken": None,
                                  "status": None})
        os.close(work_r)
        try:
            for i in self.order:
                os.write(work_w, _INDEX.pack(i))
        except BrokenPipeError:
            pass                           # every worker died: reported below
        finally:
            os.close(work_w)

    def wait_live(self) -> None:
        """Wait for every worker's live copy and take its results."""
        reported = set()
        for c in self.children:
            msg = _recv(c["res"])
            if msg is None:
                self._reap(c)
                continue
            c["taken"] = [i for i, _state in msg]
            self._merge(msg)
            reported.update(c["taken"])
        dead = [c for c in self.children if c["taken"] is None]
        for i, r in enumerate(self.results):
            if i not in reported:
                r.errors.append("live copy: worker process %s" % (
                    ", ".join(_status_text(c["status"]) for c in dead) or "took no user"))

    def begin_cutover(self) -> None:
        """Let every living worker start its users' cut-over."""
        for c in self.children:
            if c["taken"] is not None:
                _send_command(c, b"c")

    def end_cutover(self) -> Dict[str, float]:
        """Wait for every worker's cut-over and take its results. Returns the longest time
        of each phase across the workers."""
        phases: Dict[str, float] = {}
        for c in self.children:
            if c["taken"] is None:
                continue
            msg = _recv(c["res"])
            if msg is None:
                self._reap(c)
                for i in c["taken"]:
                    self.results[i].errors.append("cut-over: worker process %s" %
                                                  _status_text(c["status"]))
                continue
            worker_phases, states = msg
            self._merge(states)
            for key, value in worker_phases.items():
                phases[key] = max(phases.get(key, 0.0), value)
        self._collected = True
        return phases

    def writing(self) -> bool:
        """True while a worker may still write into the target: its cut-over was begun and
        its results are not in (end_cutover not done), or it waits for a command."""
        return not self._collected and any(c["status"] is None for c in self.children)

    def close(self) -> None:
        """Tell the workers that are still waiting to exit (no cut-over), reap all."""
        for c in self.children:
            if c["cmd"] is not None:
                _send_command(c, b"x")
            if c["status"] is None:
                self._reap(c)

    def _merge(self, states) -> None:
        for i, state in states:
            self.results[i].__dict__.update(state)

    @staticmethod
    def _reap(c: dict) -> None:
        for key in ("res", "cmd"):
            if c[key] is not None:
                os.close(c[key])
                c[key] = None
        if c["status"] is None:
            c["status"] = os.waitpid(c["pid"], 0)[1]

    # -- worker process ---------------------------------------------------------------------
    def _worker(self, k: int, work_r: int, res_w: int, cmd_r: int) -> None:
        if k > 0:
            self.progress.enabled = False                      # this process's copy only
        taken = []
        while True:
            data = _read_exact(work_r, _INDEX.size)
            if not data:
                break
            i = _INDEX.unpack(data)[0]
            taken.append(i)
            self.live_fn(self.results[i])
        os.close(work_r)
        _send(res_w, [(i, self.results[i].__dict__) for i in taken])
        while self.idle is not None and not select.select([cmd_r], [], [], 0.05)[0]:
            self.idle()
        if os.read(cmd_r, 1) != b"c":
            return
        phases = self.cutover_fn([self.results[i] for i in taken])
        _send(res_w, (phases, [(i, self.results[i].__dict__) for i in taken]))


def _die_with(parent: int) -> None:
    """SIGKILL this process when ``parent`` dies (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
    except (ImportError, OSError, AttributeError):
        pass
    if os.getppid() != parent:          # the parent died before prctl took effect
        os._exit(1)


def _send(fd: int, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_LENGTH.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def _recv(fd: int) -> Optional[object]:
    """One message, or None when the worker closed its end without one (it died)."""
    head = _read_exact(fd, _LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    size = _LENGTH.unpack(head)[0]
    data = _read_exact(fd, size)
    return pickle.loads(data) if len(data) == size else None


def _read_exact(fd: int, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = os.read(fd, left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _send_command(c: dict, command: bytes) -> None:
    try:
        os.write(c["cmd"], command)
    except BrokenPipeError:
        pass                                # died: its result pipe says so
    os.close(c["cmd"])
    c["cmd"] = None


def _status_text(status: Optional[int]) -> str:
    if status is None:
        return "died"
    if os.WIFSIGNALED(status):
        return "killed by signal %d" % os.WTERMSIG(status)
    return "exited with status %d" % os.WEXITSTATUS(status)
