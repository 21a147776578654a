"""Which names were created or removed in a directory since a moment: Linux inotify.

The migration's cut-over asks this instead of listing every new/ and cur/ directory again
(mailstore.migrate.delta). A watch is set before the directory is looked at; from then on the
kernel reports, in order, every name created, deleted or renamed in it - also names that
changed within one timestamp tick, which a directory's mtime cannot show.

What a watch cannot vouch for is reported as unknown (None), and the caller lists the
directory as before:
- no inotify here (not Linux, no ctypes) or no watch left (fs.inotify.max_user_watches);
- the kernel's event queue overflowed (fs.inotify.max_queued_events): every watch set
  before is then unknown until it is set again;
- the directory was deleted, moved or unmounted, or its path now holds another directory
  (the caller passes the inode it found there).
A rename between two watched directories (or within one) is reported with its origin
(:meth:`DirWatch.moved_from`): the caller may then take the file's facts from its previous
look instead of looking again, since rename(2) changes no size, mtime, owner or mode. An
origin is given only for a name that had no event of its own (no change in place either:
every watch also reports owner, mode, time and content changes of its files) between the
watch and the rename, so the previous look still describes the file.
"""
import array
import errno
import fcntl
import os
import select
import struct
import sys
import termios
from typing import Dict, Hashable, Optional, Tuple

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
_MASK = (IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF
         | IN_ONLYDIR | IN_DONT_FOLLOW | IN_ATTRIB | IN_CLOSE_WRITE)
_FILES = IN_MODIFY                      # every write(2), not only the last one before close
_GONE = IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT | IN_IGNORED
_REMOVED = IN_DELETE | IN_MOVED_FROM
_EVENT = struct.Struct("iIII")          # wd, mask, cookie, len; then len bytes of name
_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()


class DirWatch:
    """inotify watches on directories, each under a caller's key. One per process (the
    descriptor is not shared with forked workers: each creates its own)."""

    def __init__(self):
        self.fd: Optional[int] = None
        self._add = None
        self._dirs: Dict[Hashable, Tuple[int, int]] = {}     # key -> (wd, inode)
        self._keys: Dict[int, Hashable] = {}                 # wd -> key
        self._changes: Dict[Hashable, Dict[str, bool]] = {}
        # renames: cookie -> (key, name) of a MOVED_FROM that had no event of its own before;
        # key -> {name: (from key, from name)} for names renamed there from such a name
        self._cookies: Dict[int, Tuple[Hashable, str]] = {}
        self._origins: Dict[Hashable, Dict[str, Tuple[Hashable, str]]] = {}
        self._lost = set()
        self.overflows = 0
        try:
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            add = libc.inotify_add_watch
            add.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
        except (ImportError, OSError, AttributeError):
            return
        if fd >= 0:
            self.fd, self._add = fd, add
            self._pending = select.poll()
            self._pending.register(fd, select.POLLIN)

    def watch(self, key: Hashable, path: str, files: bool = False) -> bool:
        """Watch the directory at ``path`` under ``key`` from now on; what was recorded for
        ``key`` before is forgotten (the caller is about to look at the directory again).
        A name whose owner, mode or times change, or that is closed after writing, is
        reported too; ``files``: also every write to it while it stays open (a directory
        of Dovecot index files, appended in place; not for new/ and cur/, whose messages
        never change in place). False when it cannot be watched: changes(key) is then
        None."""
        self.drain()                       # events so far belong to the previous look
        self._forget(key)
        if self.fd is None:
            return False
        try:
            before = os.lstat(path).st_ino
        except OSError:
            return False
        wd = self._add(self.fd, os.fsencode(path), _MASK | (_FILES if files else 0))
        if wd < 0:
            return False
        try:
            after = os.lstat(path).st_ino
        except OSError:
            return False
        if after != before:                # replaced while the watch was set: on which?
            return False
        old = self._keys.get(wd)
        if old is not None and old != key:
            self._forget(old)
        self._dirs[key] = (wd, after)
        self._keys[wd] = key
        self._changes[key] = {}
        self._origins[key] = {}
        return True

    def changes(self, key: Hashable, inode: int) -> Optional[Dict[str, bool]]:
        """{name: True if it exists now, False if it was removed} for every name created,
        deleted, renamed or changed in place (see watch) in the directory since
        watch(key) - the last event of a name decides. None when the watch cannot vouch
        for that: no watch, overflow, the directory went away, or ``inode`` (what the
        caller finds at the path now) is not the watched directory."""
        self.drain()
        entry = self._dirs.get(key)
        if entry is None or key in self._lost or entry[1] != inode:
            return None
        return self._changes[key]

    def moved_from(self, key: Hashable) -> Dict[str, Tuple[Hashable, str]]:
        """{name: (key, name) it was renamed from} for names that exist now (per
        changes(key), which must vouch) and were renamed into the directory from a watched
        name that had no other event since its watch was set: the file the look after
        that watch found under the old name. An origin whose watch cannot vouch any more
        is left out."""
        self.drain()
        origins = self._origins.get(key, {})
        if not self._lost:
            return origins                   # every origin was watched since: all vouched
        return {name: origin for name, origin in origins.items()
                if origin[0] in self._dirs and origin[0] not in self._lost}

    def queued(self) -> int:
        """Bytes of events waiting in the kernel's queue (FIONREAD): a caller that reads
        them only later can drain before the queue overflows."""
        if self.fd is None:
            return 0
        buf = array.array("i", [0])
        fcntl.ioctl(self.fd, termios.FIONREAD, buf, True)
        return buf[0]

    def drain(self) -> None:
        """Read every event queued so far (the kernel's queue is bounded: drain it while
        waiting, not only when asking)."""
        if self.fd is None or not self._pending.poll(0):    # asked per directory: cheap
            return
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    return
                raise
            if not data:
                return
            self._parse(data)

    def _parse(self, data: bytes) -> None:
        # the hot loop of a cut-over (two events per rename): locals, no helper calls
        unpack, head = _EVENT.unpack_from, _EVENT.size
        keys, all_changes, origins, cookies = (self._keys, self._changes, self._origins,
                                               self._cookies)
        offset, end = 0, len(data)
        while offset < end:
            wd, mask, cookie, size = unpack(data, offset)
            offset += head + size
            if mask & (IN_Q_OVERFLOW | _GONE):
                if mask & IN_Q_OVERFLOW:     # events were dropped: no watch can vouch
                    self._lost.update(self._dirs)
                    self.overflows += 1
                elif wd in keys:
                    self._lost.add(keys[wd])
                continue
            key = keys.get(wd)
            if key is None or not size:       # not ours, or the directory's own metadata
                continue
            name = data[offset - size:offset].rstrip(b"\0").decode(_FS_ENCODING, _FS_ERRORS)
            changes = all_changes[key]
            if mask & IN_MOVED_FROM and name not in changes:
                cookies[cookie] = (key, name)
            origin = cookies.pop(cookie, None) if mask & IN_MOVED_TO else None
            if origin is not None:
                origins[key][name] = origin
            elif origins[key]:
                origins[key].pop(name, None)
            changes[name] = not mask & _REMOVED

    def _forget(self, key: Hashable) -> None:
        entry = self._dirs.pop(key, None)
        if entry is not None and self._keys.get(entry[0]) == key:
            del self._keys[entry[0]]
        self._changes.pop(key, None)
        self._origins.pop(key, None)
        self._lost.discard(key)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class PerProcess:
    """One DirWatch for whichever process asks (the migration's forked workers each get
    their own; a forked copy of the parent's would share its kernel queue)."""

    def __init__(self):
        self._by_pid: Dict[int, DirWatch] = {}

    def get(self) -> DirWatch:
        w = self._by_pid.get(os.getpid())
        if w is None:
            w = self._by_pid[os.getpid()] = DirWatch()
        return w

    def close(self) -> None:
        w = self._by_pid.pop(os.getpid(), None)
        if w is not None:
            w.close()
