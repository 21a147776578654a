"""Names and layout rules of a mail root: where a user's mail lives, what Dovecot's files are
called, what a Maildir file name says, which names are safe.

Pure functions of names (only :func:`user_path` joins a path, and it touches no disk).
"""
import os
from typing import Optional, Tuple

from mailstore.maildir.errors import InvalidUserName, MaildirError

MAILDIR = "Maildir"
MESSAGE_SUBDIRS = ("new", "cur")
TMP = "tmp"
SUBDIRS = ("new", "cur", "tmp")

# Dovecot's own state next to the mail. The uidlist holds UIDVALIDITY, UIDNEXT and the
# unique-name -> UID map: lose it and every client re-downloads every message.
CONTROL_NAMES = frozenset(("dovecot-uidlist", "dovecot-keywords", "subscriptions",
                           "maildirfolder"))
CONTROL_PREFIXES = ("dovecot-uidvalidity",)
INDEX_PREFIXES = ("dovecot.index", "dovecot.list.index")

# ext4's own directory at the root of the data volume (see list_users): never a user
LOST_AND_FOUND = "lost+found"


def message_relpath(folder: str, subdir: str, name: str) -> str:
    if folder:
        return "%s/%s/%s/%s" % (MAILDIR, folder, subdir, name)
    return "%s/%s/%s" % (MAILDIR, subdir, name)


def folder_display(folder: str) -> str:
    """``""`` -> ``INBOX``, ``".A.B"`` -> ``A.B`` (the name an IMAP client sees, separator ".")."""
    return folder[1:] if folder else "INBOX"


def folder_from_display(name: str) -> str:
    """Inverse of folder_display; refuses names that would not be one path component."""
    if name == "INBOX":
        return ""
    if not name or "/" in name or "\0" in name or name.startswith(".") or name in (".", ".."):
        raise MaildirError("not a Maildir++ folder name: %r" % (name,))
    return "." + name


def check_user_name(name: str) -> str:
    """Return ``name`` if it is one safe path component, else raise InvalidUserName.

    Refused: empty, ``.``/``..``, a leading dot (hidden; also keeps the migration journal and
    other dot-entries of a root from being taken for users), ``/``, NUL, other control
    characters, names that are not valid UTF-8.
    """
    if not isinstance(name, str):
        raise InvalidUserName("user name must be text, got %r" % (name,))
    if not name:
        raise InvalidUserName("empty user name")
    if name.startswith("."):
        raise InvalidUserName("user name %r starts with a dot" % (name,))
    if "/" in name or "\0" in name or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidUserName("user name %r is not a single path component" % (name,))
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidUserName("user name %r is not valid UTF-8" % (name,))
    if len(name.encode("utf-8")) > 255:
        raise InvalidUserName("user name longer than 255 bytes")
    return name


def parse_name(name: str) -> Tuple[str, str, Optional[int], Optional[int]]:
    """Split a Maildir file name into (unique, info, S= size, W= virtual size).

    ``1700000000.M1P2.host,S=1234,W=1260:2,RS`` -> (``1700000000.M1P2.host,S=1234,W=1260``,
    ``2,RS``, 1234, 1260). ``unique`` is everything before the first ``:`` because that is what
    Dovecot stores in dovecot-uidlist; the ``,S=``/``,W=`` fields are part of it. A malformed
    field gives None, never an error: the name is still a message.
    """
    unique, sep, info = name.partition(":")
    size = vsize = None
    for field in unique.split(",")[1:]:
        if field.startswith("S=") and field[2:].isdigit():
            size = int(field[2:])
        elif field.startswith("W=") and field[2:].isdigit():
            vsize = int(field[2:])
    return unique, info, size, vsize


def classify_dovecot_file(name: str) -> Optional[str]:
    """``control`` / ``index`` for Dovecot's files, None for anything else."""
    if name in CONTROL_NAMES or name.startswith(CONTROL_PREFIXES):
        return "control"
    if name.startswith(INDEX_PREFIXES):
        return "index"
    return None


def user_path(root: str, user: str) -> str:
    """ROOT/<user> after validating the name (the only way paths are built from names)."""
    return os.path.join(root, check_user_name(user))
