"""The scanner: ``ROOT/<user>/`` into a :class:`~mailstore.maildir.model.UserTree`, and the
users of a root.

Scanning never opens a message (enumeration is ``os.scandir`` plus one ``lstat`` per entry),
never follows a symbolic link and never writes. Everything it finds lands in exactly one list
of a :class:`UserTree`; whatever is not mail, a Dovecot file or an ordinary file of the user's
home is an :class:`Anomaly`: reported, never descended into, never copied.

:func:`rescan_user` reuses an earlier scan (Maildir messages are immutable: only renamed or
deleted), :func:`scan_user_skeleton` leaves new/ and cur/ unlisted for callers that keep their
own message lists; :func:`list_users` and :func:`iter_users` find the users of a root.
"""
import os
import stat
import time
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

from mailstore.maildir.errors import InvalidUserName, MaildirError
from mailstore.maildir.layout import (LOST_AND_FOUND, MAILDIR, SUBDIRS, TMP, check_user_name,
                                      classify_dovecot_file, message_relpath, user_path)
from mailstore.maildir.model import Anomaly, Entry, Message, UserTree


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
        renamed = None
        for name in names:
            m = prev.get(name)
            if not name.isascii() and not _is_utf8(name):
                self.tree.non_utf8.append(_join(rel, name))
            if m is not None and name not in forced:
                messages.append(m)
                continue
            if renamed is None:
                renamed = self.renamed(rel, path, names, prev, forced)
            m = renamed.get(name)
            if m is not None:
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

    def renamed(self, rel: str, path: str, names: List[str], prev: Dict[str, Message],
                forced: Iterable[str]) -> Dict[str, Message]:
        """{name: Message} for the names of directory `rel` that are a message of the
        previous scan under a new name: renamed in this directory (a flag change) or moved
        here from its sibling new/ or cur/, recognised by the same unique name and the same
        inode number as the directory lists it (d_ino), with no lstat.

        rename(2) keeps a file's size, mtime, owner and mode, and a Maildir message is never
        written again: the renamed file is the message as the previous scan saw it, under
        its new name. A message deleted and delivered again under the same unique name would
        have another inode; anything in doubt is lstat'ed by the caller as before. Why: a
        day of flag changes is spread over the whole store, and the lstat of each renamed
        message read one cold inode block each, most of an incremental scan's time."""
        # only small tables (the names not seen before, by unique name): this runs in the
        # scan's threads, where big temporary ones left each thread's malloc arena
        # fragmented (40 MB more peak RSS at a million messages, 2026-12-07)
        wanted = {}
        for name in names:
            if name not in prev and name not in forced:
                wanted[name.partition(":")[0]] = name
        if not wanted:
            return {}
        head, _sep, subdir = rel.rpartition("/")
        candidates = {}
        for other in (_join(head, "new" if subdir == "cur" else "cur"), rel):
            for m in self.prev_msgs.get(other, {}).values():
                name = wanted.get(m.unique)
                if name is not None:
                    candidates[name] = m
        found: Dict[str, Message] = {}
        if not candidates:
            return found
        try:
            with os.scandir(path) as it:
                for de in it:
                    m = candidates.get(de.name)
                    # is_file: from the listing's d_type where the file system gives one
                    if m is not None and de.inode() == m.inode \
                            and de.is_file(follow_symlinks=False):
                        unique, _sep, info = de.name.partition(":")
                        found[de.name] = Message(m.folder, subdir, de.name, unique, info,
                                                 m.size, m.mtime_ns, m.uid, m.gid, m.mode,
                                                 m.inode)
        except OSError:
            pass            # each name is lstat'ed by the caller instead
        return found

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
