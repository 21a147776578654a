"""One way for the lab to write a file: atomically, with its mode (a killed run leaves the old
file or none, never half of one)."""
import os


def write(path, content, mode):
    """Write text `content` to `path` (a Path) with `mode`, through a temporary file beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(content)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
