"""What a scan finds, as plain named tuples (so planners built on it are pure functions).

A ``UserTree`` holds, for one user:

- ``messages``: :class:`Message` (folder, subdir, name, unique, info, size, mtime_ns, uid, gid,
  mode, inode) for every regular file in a ``new/`` or ``cur/``. A message is identified by
  ``(user, folder, unique)``: Dovecot's ``dovecot-uidlist`` keys a message by its base name
  (``unique``); flag changes and the new->cur move only rename the file (``info`` changes).
  ``folder`` is the Maildir++ directory name: ``""`` for INBOX (the Maildir itself), ``".Sent"``,
  ``".A.B"`` (nested folder A/B, flat on disk). ``Message.relpath`` is the path below the user
  directory, e.g. ``Maildir/.Sent/cur/1700000000.M1P2.host,S=1234:2,S``.
- ``tmp_files``: :class:`Entry` for regular files in ``tmp/`` (deliveries in progress; old ones
  are stale leftovers). They are not mail yet and a migration does not copy them.
- ``control``: Dovecot state that must survive every copy (``dovecot-uidlist``,
  ``dovecot-keywords``, ``subscriptions``, ``maildirfolder``, ``dovecot-uidvalidity*``).
- ``index``: ``dovecot.index*``, ``dovecot.list.index*`` (rebuildable caches; copied when quiet).
- ``other``: any other regular file below the user directory (sieve scripts, unknown files).
- ``symlinks``: symbolic links *outside* new/cur/tmp (``.dovecot.sieve -> sieve/x.sieve`` is
  Pigeonhole's normal layout); ``Entry.link`` holds the link text. Copying recreates the link,
  it never reads through it.
- ``directories``: every directory including the user directory itself (relpath ``""``), so
  that owner, mode and mtime of directories survive a copy too.
- ``anomalies``: :class:`Anomaly` (relpath, kind, detail). Kinds: ``symlink`` (in new/cur/tmp),
  ``directory`` (where a message should be), ``special`` (fifo, socket, device),
  ``unreadable`` (a directory that could not be listed), ``vanished`` (deleted while scanning).
- ``non_utf8``: relpaths whose names are not valid UTF-8. They are still handled (as whatever
  they are), byte-exactly: names are ``str`` decoded with the file-system encoding and
  ``surrogateescape`` everywhere (``os.fsencode(name)`` gives the original bytes back).

Every Entry/Message carries ``size``, ``mtime_ns`` (the mtime of a message is its IMAP
INTERNALDATE), ``uid``, ``gid``, ``mode`` (permission bits only) and ``inode``. Helpers:
``UserTree.message_bytes``, ``UserTree.maildir_present``.
"""
from typing import Dict, List, NamedTuple, Optional, Tuple

from mailstore.maildir.layout import MAILDIR


class Entry(NamedTuple):
    relpath: str          # below the user directory, "/"-separated; "" is the user dir itself
    kind: str             # dir | control | index | other | symlink | tmp
    size: int
    mtime_ns: int
    uid: int
    gid: int
    mode: int             # permission bits (stat.S_IMODE)
    inode: int
    link: Optional[str] = None   # symlink text, for kind == "symlink"


class Message(NamedTuple):
    folder: str           # "" (INBOX) or ".Name" / ".A.B"
    subdir: str           # "new" | "cur"
    name: str             # full file name
    unique: str           # base name before ":" (Dovecot's uidlist key)
    info: str             # after ":" ("2,FS"), "" when the name has none
    size: int
    mtime_ns: int
    uid: int
    gid: int
    mode: int
    inode: int

    @property
    def relpath(self) -> str:
        # hot (every planner and verifier looks messages up by it): no formatting
        if self.folder:
            return "Maildir/" + self.folder + "/" + self.subdir + "/" + self.name
        return "Maildir/" + self.subdir + "/" + self.name

    @property
    def key(self) -> Tuple[str, str]:
        return (self.folder, self.unique)

    @property
    def flags(self) -> str:
        """The standard flags (letters after ``2,``), "" if none or not the ``2,`` form."""
        return self.info[2:] if self.info.startswith("2,") else ""


class Anomaly(NamedTuple):
    relpath: str
    kind: str             # symlink | directory | special | unreadable | vanished
    detail: str


class UserTree(NamedTuple):
    user: str
    path: str             # ROOT/<user>
    messages: List[Message]
    tmp_files: List[Entry]
    control: List[Entry]
    index: List[Entry]
    other: List[Entry]
    symlinks: List[Entry]
    directories: List[Entry]
    anomalies: List[Anomaly]
    non_utf8: List[str]
    scanned_ns: int = 0   # wall clock when the scan began (rescan_user trusts older mtimes)

    @property
    def message_bytes(self) -> int:
        return sum(m.size for m in self.messages)

    @property
    def maildir_present(self) -> bool:
        return any(d.relpath == MAILDIR for d in self.directories)

    @property
    def folders(self) -> List[str]:
        """Maildir++ folders present ("" = INBOX), sorted."""
        prefix = MAILDIR + "/"
        found = set()
        for d in self.directories:
            if d.relpath == MAILDIR:
                found.add("")
            elif d.relpath.startswith(prefix + ".") and "/" not in d.relpath[len(prefix):]:
                found.add(d.relpath[len(prefix):])
        return sorted(found)


def index_messages(tree: UserTree) -> Dict[str, Message]:
    """relpath -> Message."""
    return {m.relpath: m for m in tree.messages}
