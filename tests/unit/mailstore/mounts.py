"""Small real file systems for fault tests: a tmpfs of a few MiB meets ENOSPC for real.

Mounting needs root (CAP_SYS_ADMIN). CI runs the unit tier as root, so a test that uses these
fails, rather than skips, without it: a skipped fault test would hide the fault it exists for.
"""
import contextlib
import os
import subprocess


def require_root():
    assert os.geteuid() == 0, (
        "this fault test mounts a small tmpfs (real ENOSPC) and needs root; CI runs the unit "
        "tier as root (uid here: {})".format(os.geteuid()))


@contextlib.contextmanager
def small_tmpfs(path, size):
    """A tmpfs of ``size`` (mount(8) syntax, e.g. "2m") at ``path`` for the block's duration."""
    require_root()
    os.makedirs(path, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size={}".format(size), "tmpfs", str(path)],
                   check=True, stderr=subprocess.PIPE)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def resize(path, size):
    """Grow (or shrink) a mounted tmpfs in place: the disk was full, the operator made room."""
    subprocess.run(["mount", "-o", "remount,size={}".format(size), str(path)], check=True,
                   stderr=subprocess.PIPE)


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path, leave):
    """Write a filler file in ``path`` so that about ``leave`` bytes stay free; returns it."""
    filler = os.path.join(str(path), "filler")
    with open(filler, "wb") as f:
        remaining = free_bytes(path) - leave
        while remaining > 0:
            n = min(remaining, 1 << 20)
            f.write(b"\0" * n)
            remaining -= n
    return filler


@contextlib.contextmanager
def small_ext4(path, size_mib=16):
    """A private ext4 of ``size_mib`` MiB (a loop-mounted image beside ``path``) at ``path``:
    inode allocation there depends on nothing else the machine does meanwhile."""
    require_root()
    os.makedirs(path, exist_ok=True)
    image = str(path).rstrip("/") + ".img"
    with open(image, "wb") as f:
        f.truncate(size_mib << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True, stderr=subprocess.PIPE)
    subprocess.run(["mount", "-o", "loop", image, str(path)], check=True,
                   stderr=subprocess.PIPE)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-d", str(path)], check=False)
        os.unlink(image)
