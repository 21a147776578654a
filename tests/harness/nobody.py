"""Running test code as `nobody` (uid/gid 65534), never as root.

Tests run as root in CI, and root reads a mode-000 file and may write anywhere; only a real
unprivileged process proves what the agent user or the mail owner can and cannot do.
"""
import os
import pickle
import tempfile

NOBODY = 65534


def become_nobody():
    """Drop to uid/gid nobody with no supplementary groups (a forked child, or preexec_fn)."""
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def as_nobody(func, *args):
    """Run func(*args) in a forked child with uid/gid nobody; return its result."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:   # child
        try:
            os.close(r)
            become_nobody()
            result = ("ok", func(*args))
        except BaseException as e:   # noqa: BLE001 - report anything to the parent
            result = ("error", repr(e))
        with os.fdopen(w, "wb") as f:
            pickle.dump(result, f)
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    kind, value = pickle.loads(data)
    assert kind == "ok", value
    return value


def public_tmpdir(prefix="mailstore-check-"):
    """A fresh directory under /tmp that `nobody` can traverse (pytest's tmp_path cannot)."""
    path = tempfile.mkdtemp(prefix=prefix)
    os.chmod(path, 0o755)
    return path
