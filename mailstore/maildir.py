"""Maildir model: what is under ``ROOT/<user>/`` as plain data, from directory listings only.

Scanning never opens a message (enumeration is ``os.scandir`` plus one ``lstat`` per entry),
never follows a symbolic link and never writes. Everything it finds lands in exactly one list
of a :class:`UserTree`; whatever is not mail, a Dovecot file or an ordinary file of the user's
home is an :class:`Anomaly`: reported, never descended into, never copied.

API (plain named tuples, so planners built on it are pure functions)::

    check_user_name(name) -> name            # raises InvalidUserName
    list_users(root) -> (names, anomalies)   # direct children of ROOT that are user dirs
    scan_user(root, user) -> UserTree        # raises MaildirError if ROOT/<user> is unusable
    rescan_user(root, user, previous, force=()) -> UserTree   # same, reusing an earlier scan
    iter_users(root) -> UserTree, ...        # every user of list_users, scanned
    parse_name(name) -> (unique, info, size_field, vsize_field)
    folder_display(folder) -> "INBOX" / "Sent" / "A.B";  folder_from_display(name) -> folder

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
import os
import stat
import time
from typing import Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple

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


class MaildirError(Exception):
    """A root or user directory that cannot be scanned safely."""


class InvalidUserName(MaildirError, ValueError):
    """A user name that is not one safe path component."""


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


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _join(rel: str, name: str) -> str:
    return name if not rel else rel + "/" + name


def _entry(relpath: str, kind: str, st: os.stat_result, link: Optional[str] = None) -> Entry:
    return Entry(relpath, kind, st.st_size, st.st_mtime_ns, st.st_uid, st.st_gid,
                 stat.S_IMODE(st.st_mode), st.st_ino, link)


class _Scan:
    """Accumulates one user's lists while walking (internal)."""

    def __init__(self, user: str, path: str, previous: Optional[UserTree] = None,
                 force: Iterable[str] = ()):
        self.tree = UserTree(user, path, [], [], [], [], [], [], [], [], [], time.time_ns())
        self.previous = previous
        if previous is not None:
            self.prev_dirs = {d.relpath: d for d in previous.directories}
            by_dir: Dict[Tuple[str, str], Dict[str, Message]] = {}
            for m in previous.messages:
                d = by_dir.get((m.folder, m.subdir))
                if d is None:
                    d = by_dir[(m.folder, m.subdir)] = {}
                d[m.name] = m
            self.prev_msgs: Dict[str, Dict[str, Message]] = {
                message_relpath(f, sub, "x")[:-2]: d for (f, sub), d in by_dir.items()}
            # Directory timestamps are coarse (a kernel tick): a directory changed in the
            # same tick just after the previous scan looked at it would still show the old
            # mtime. Trust only mtimes comfortably older than that scan.
            self.trust_before = previous.scanned_ns - 1_000_000_000
            self.force: Dict[str, set] = {}
            for rel in force:
                self.force.setdefault(rel.rpartition("/")[0], set()).add(rel.rpartition("/")[2])

    def listdir(self, rel: str) -> Optional[List[os.DirEntry]]:
        path = os.path.join(self.tree.path, rel) if rel else self.tree.path
        try:
            with os.scandir(path) as it:
                return sorted(it, key=lambda e: e.name)
        except FileNotFoundError:
            self.tree.anomalies.append(Anomaly(rel, "vanished", "directory disappeared"))
        except NotADirectoryError:
            self.tree.anomalies.append(Anomaly(rel, "vanished", "replaced by a non-directory"))
        except OSError as e:
            self.tree.anomalies.append(Anomaly(rel, "unreadable", e.strerror or str(e)))
        return None

    def lstat(self, de: os.DirEntry, rel: str) -> Optional[os.stat_result]:
        try:
            return de.stat(follow_symlinks=False)
        except FileNotFoundError:
            # renamed or expunged by Dovecot between listing and stat: normal on a live store
            self.tree.anomalies.append(Anomaly(rel, "vanished", "deleted while scanning"))
        except OSError as e:
            self.tree.anomalies.append(Anomaly(rel, "unreadable", e.strerror or str(e)))
        return None

    def directory(self, rel: str, st: os.stat_result) -> None:
        self.tree.directories.append(_entry(rel, "dir", st))

    def note_name(self, rel: str, name: str) -> None:
        if not _is_utf8(name):
            self.tree.non_utf8.append(rel)

    # -- walkers -------------------------------------------------------------------------
    def entries(self, rel: str):
        """(path, entry, lstat) of each entry of `rel` that could be listed and stat'ed; what
        could not is recorded as an anomaly by listdir/lstat."""
        for de in self.listdir(rel) or ():
            r = _join(rel, de.name)
            self.note_name(r, de.name)
            st = self.lstat(de, r)
            if st is not None:
                yield r, de, st

    def walk_home(self, rel: str) -> None:
        """The user directory and anything outside Maildir: ordinary files, dirs, symlinks."""
        for r, de, st in self.entries(rel):
            if stat.S_ISDIR(st.st_mode):
                self.directory(r, st)
                if r == MAILDIR:
                    self.walk_folder(r, "")
                else:
                    self.walk_home(r)
            else:
                self.plain(r, de, st, "other")

    def plain(self, r: str, de: os.DirEntry, st: os.stat_result, kind: str) -> None:
        if stat.S_ISREG(st.st_mode):
            target = {"control": self.tree.control, "index": self.tree.index,
                      "other": self.tree.other}[kind]
            target.append(_entry(r, kind, st))
        elif stat.S_ISLNK(st.st_mode):
            try:
                link = os.readlink(de.path)
            except OSError as e:
                self.tree.anomalies.append(Anomaly(r, "unreadable", e.strerror or str(e)))
                return
            self.tree.symlinks.append(_entry(r, "symlink", st, link))
        else:
            self.tree.anomalies.append(Anomaly(r, "special", _type_name(st.st_mode)))

    def walk_folder(self, rel: str, folder: str) -> None:
        """A Maildir++ folder directory: INBOX (Maildir itself) or Maildir/.Name."""
        for r, de, st in self.entries(rel):
            is_dir = stat.S_ISDIR(st.st_mode)
            if de.name in SUBDIRS and is_dir:
                self.directory(r, st)
                self.walk_messages(r, folder, de.name)
            elif is_dir and folder == "" and de.name.startswith(".") and de.name not in (".", ".."):
                self.directory(r, st)
                self.walk_folder(r, de.name)
            elif is_dir:
                # e.g. courierimapkeywords/: not mail, but the user's data; keep it
                self.directory(r, st)
                self.walk_home(r)
            else:
                self.plain(r, de, st, classify_dovecot_file(de.name) or "other")

    def walk_messages(self, rel: str, folder: str, subdir: str) -> None:
        if self.previous is not None and subdir != TMP and rel in self.prev_dirs:
            self.rewalk_messages(rel, folder, subdir)
            return
        # the hot loop of every scan (one iteration per message): keep it lean
        path = os.path.join(self.tree.path, rel)
        try:
            with os.scandir(path) as it:
                entries = list(it)
        except OSError:
            self.listdir(rel)                # records the anomaly
            return
        messages, tmp_files = self.tree.messages, self.tree.tmp_files
        in_tmp = subdir == TMP
        S_ISREG = stat.S_ISREG
        for de in entries:
            name = de.name
            if not name.isascii() and not _is_utf8(name):
                self.tree.non_utf8.append(_join(rel, name))
            try:
                st = de.stat(follow_symlinks=False)
            except OSError:
                self.lstat(de, _join(rel, name))      # records vanished / unreadable
                continue
            mode = st.st_mode
            if S_ISREG(mode):
                if in_tmp:
                    tmp_files.append(_entry(_join(rel, name), "tmp", st))
                else:
                    unique, _sep, info = name.partition(":")     # as parse_name()
                    messages.append(Message(folder, subdir, name, unique, info, st.st_size,
                                            st.st_mtime_ns, st.st_uid, st.st_gid,
                                            mode & 0o7777, st.st_ino))
            else:
                self.not_a_message(_join(rel, name), de.path, mode)

    def rewalk_messages(self, rel: str, folder: str, subdir: str) -> None:
        """walk_messages against a previous scan: Maildir messages are immutable (Dovecot
        only ever renames them), so a name seen before needs no new lstat, and a directory
        whose mtime has not moved needs no new listing."""
        prev = self.prev_msgs.get(rel, {})
        now, before = self.tree.directories[-1], self.prev_dirs[rel]
        forced = self.force.get(rel, ())
        if (now.relpath == rel and now.mtime_ns == before.mtime_ns
                and before.mtime_ns < self.trust_before and not forced):
            for m in prev.values():
                if not m.name.isascii() and not _is_utf8(m.name):
                    self.tree.non_utf8.append(m.relpath)
            self.tree.messages.extend(prev.values())
            return
        path = os.path.join(self.tree.path, rel)
        try:
            names = os.listdir(path)          # plain names: cheaper than DirEntry objects
        except OSError:
            self.listdir(rel)
            return
        messages = self.tree.messages
        for name in names:
            m = prev.get(name)
            if not name.isascii() and not _is_utf8(name):
                self.tree.non_utf8.append(_join(rel, name))
            if m is not None and name not in forced:
                messages.append(m)
                continue
            try:
                st = os.lstat(os.path.join(path, name))
            except FileNotFoundError:
                self.tree.anomalies.append(Anomaly(_join(rel, name), "vanished",
                                                   "deleted while scanning"))
                continue
            except OSError as e:
                self.tree.anomalies.append(Anomaly(_join(rel, name), "unreadable",
                                                   e.strerror or str(e)))
                continue
            if stat.S_ISREG(st.st_mode):
                unique, _sep, info = name.partition(":")
                messages.append(Message(folder, subdir, name, unique, info, st.st_size,
                                        st.st_mtime_ns, st.st_uid, st.st_gid,
                                        st.st_mode & 0o7777, st.st_ino))
            else:
                self.not_a_message(_join(rel, name), os.path.join(path, name), st.st_mode)

    def not_a_message(self, r: str, path: str, mode: int) -> None:
        if stat.S_ISLNK(mode):
            try:
                link = os.readlink(path)
            except OSError:
                link = "?"
            self.tree.anomalies.append(Anomaly(
                r, "symlink", "symbolic link to %r in a message directory; not followed"
                % (link,)))
        elif stat.S_ISDIR(mode):
            self.tree.anomalies.append(Anomaly(
                r, "directory", "a directory where a message file should be; skipped"))
        else:
            self.tree.anomalies.append(Anomaly(r, "special", _type_name(mode)))


def _type_name(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISLNK, "symbolic link"), (stat.S_ISDIR, "directory")):
        if test(mode):
            return "a %s; skipped" % name
    return "unknown file type %o; skipped" % stat.S_IFMT(mode)


def user_path(root: str, user: str) -> str:
    """ROOT/<user> after validating the name (the only way paths are built from names)."""
    return os.path.join(root, check_user_name(user))


def scan_user(root: str, user: str) -> UserTree:
    """Scan ``ROOT/<user>``; raises MaildirError if it is missing, a symlink or not a dir."""
    return _scan(root, user, None, ())


def rescan_user(root: str, user: str, previous: UserTree, force: Iterable[str] = ()
                ) -> UserTree:
    """scan_user, reusing ``previous`` (an earlier scan of the same directory) for messages.

    Relies on the Maildir rule that a message file is never changed, only renamed or
    deleted: a new/ or cur/ directory whose mtime has not changed (and is older than the
    previous scan by more than a timestamp tick) is not listed again; in the others only
    names not seen before are stat'ed. Everything that is not a message is stat'ed afresh.
    ``force``: message relpaths to stat in any case (files whose owner, mode or mtime were
    just changed in place, which leaves the directory's mtime alone).
    """
    return _scan(root, user, previous, force)


def _user_directory(root: str, user: str):
    """(path, lstat) of ROOT/<user>: a real directory, never followed through a symlink."""
    path = user_path(root, user)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise MaildirError("%s: no such user directory" % path)
    except OSError as e:
        raise MaildirError("%s: %s" % (path, e.strerror or e))
    if stat.S_ISLNK(st.st_mode):
        raise MaildirError("%s: is a symbolic link; refusing to follow it" % path)
    if not stat.S_ISDIR(st.st_mode):
        raise MaildirError("%s: not a directory" % path)
    return path, st


def _scan(root: str, user: str, previous: Optional[UserTree], force: Iterable[str]
          ) -> UserTree:
    path, st = _user_directory(root, user)
    scan = _Scan(user, path, previous, force)
    scan.directory("", st)
    scan.walk_home("")
    return scan.tree


LOST_AND_FOUND = "lost+found"


def list_users(root: str) -> Tuple[List[str], List[Anomaly]]:
    """Names of the user directories directly under ROOT, plus what was skipped and why.

    Dot-entries are skipped silently (they hold tool state such as the migration journal), and
    so is ``lost+found``: the data volume is an ext4 filesystem whose root holds one, owned by
    root and unreadable to vmail, and no user is called that ('+' is Postfix's address
    extension delimiter). Other names that are not safe user names, symlinks and plain files are anomalies.
    """
    try:
        with os.scandir(root) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
        raise MaildirError("%s: cannot list: %s" % (root, e.strerror or e))
    users, anomalies = [], []
    for de in entries:
        if de.name.startswith(".") or de.name == LOST_AND_FOUND:
            continue
        try:
            check_user_name(de.name)
        except InvalidUserName as e:
            anomalies.append(Anomaly(de.name, "bad-user-name", str(e)))
            continue
        try:
            is_dir = de.is_dir(follow_symlinks=False)
            is_link = de.is_symlink()
        except OSError as e:
            anomalies.append(Anomaly(de.name, "unreadable", e.strerror or str(e)))
            continue
        if is_dir:
            users.append(de.name)
        elif is_link:
            anomalies.append(Anomaly(de.name, "symlink", "user directory is a symbolic link; "
                                     "not followed"))
        else:
            anomalies.append(Anomaly(de.name, "special", "not a directory; skipped"))
    return users, anomalies


def iter_users(root: str) -> Iterator[UserTree]:
    """Scan every user of list_users(root), in name order."""
    users, _ = list_users(root)
    for user in users:
        yield scan_user(root, user)


def index_messages(tree: UserTree) -> Dict[str, Message]:
    """relpath -> Message."""
    return {m.relpath: m for m in tree.messages}


class _SkeletonScan(_Scan):
    """A scan that records new/ and cur/ as directories but does not list them."""

    def walk_messages(self, rel: str, folder: str, subdir: str) -> None:
        if subdir == TMP:
            _Scan.walk_messages(self, rel, folder, subdir)


def scan_user_skeleton(root: str, user: str) -> UserTree:
    """scan_user without listing new/ and cur/: ``messages`` stays empty, everything else
    (every directory with its mtime, new/ and cur/ included; tmp/ files; Dovecot, other files,
    symlinks; anomalies outside new/ and cur/) is scanned afresh.

    For callers that keep their own per-directory message lists and list only the new/ and
    cur/ directories whose mtime moved (the migration's cut-over, mailstore.migrate.delta).
    Raises MaildirError like scan_user.
    """
    path, st = _user_directory(root, user)
    scan = _SkeletonScan(user, path)
    scan.directory("", st)
    scan.walk_home("")
    return scan.tree
