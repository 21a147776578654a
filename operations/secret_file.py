"""Secret files on the server (private keys, the backup key, the Icinga ticket): uploaded
without their content ever reaching a terminal, a log or a command line.

pyinfra's `files.put` prints a new or changed file's whole content under `--diff`; `upload()`
names the file and shows the sha256 of its old and new content instead (compare it with
`sha256sum` of the secret). The content travels only as a file upload, never in a command:

1. into a fresh directory beside the destination that only root may enter (0700), so a
   file the upload creates with the default mode is unreadable to others;
2. there it gets its final owner and mode, and is renamed over the destination (atomic,
   same filesystem); the directory is removed.

Nothing is uploaded when the destination already has this content; a wrong owner or mode is
corrected in place.
"""
import hashlib
import io
import posixpath
from pathlib import Path

from pyinfra import host, logger, state
from pyinfra.api import FileUploadCommand, QuoteString, StringCommand, operation
from pyinfra.facts.files import File, Sha256File


def _q(value):
    return QuoteString(value)


def _bytes(src, content):
    if (src is None) == (content is None):
        raise ValueError("secret_file.upload: give exactly one of src (a local path) and "
                         "content (str or bytes)")
    if src is not None:
        return Path(src).read_bytes()
    return content.encode() if isinstance(content, str) else bytes(content)


def staged_path(dest):
    """Where the upload of `dest` lands first: in a directory beside it that only root may
    enter (0700), made for the upload and removed after it."""
    directory, name = posixpath.split(dest)
    return posixpath.join(directory, f".{name}.upload", name)


@operation()
def upload(dest, src=None, content=None, user="root", group="root", mode="600"):
    """Install a secret at `dest` with `user`, `group` and `mode`, showing only its sha256.

    + dest: absolute path on the server; its directory is made if missing
    + src: local file holding the secret, or
    + content: the secret itself (str or bytes)
    + user, group, mode: of the installed file (mode as octal digits, e.g. "640")
    """
    data = _bytes(src, content)
    digest = hashlib.sha256(data).hexdigest()
    live = host.get_fact(File, path=dest)
    live_digest = host.get_fact(Sha256File, path=dest) if live else None

    if live and live_digest == digest:
        if (str(live["mode"]), live["user"], live["group"]) == (str(mode), user, group):
            host.noop(f"secret {dest} is up to date (sha256 {digest})")
            return
        yield StringCommand("chown", f"{user}:{group}", _q(dest), "&&",
                            "chmod", str(mode), _q(dest))
        return

    if getattr(state.config, "DIFF", False):
        host.log(f"Will {'replace' if live else 'create'} secret {dest} (content not shown): "
                 f"sha256 {live_digest or '(none)'} -> {digest}", logger.info)
    directory = posixpath.dirname(dest)
    staged = staged_path(dest)
    stage = posixpath.dirname(staged)
    yield StringCommand("mkdir", "-p", _q(directory), "&&", "rm", "-rf", _q(stage), "&&",
                        "mkdir", "-m", "700", _q(stage))
    yield FileUploadCommand(io.BytesIO(data), staged, remote_temp_filename=f"{staged}.tmp")
    yield StringCommand("chown", f"{user}:{group}", _q(staged), "&&",
                        "chmod", str(mode), _q(staged), "&&",
                        "mv", "-f", _q(staged), _q(dest), "&&", "rmdir", _q(stage))
