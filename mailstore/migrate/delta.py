"""Per-directory message state carried from the live copy into the cut-over.

While delivery is deferred (the cut-over) the migration's work must follow what changed, not
the size of the store. A :class:`State` is one look at one user's tree: the tree without its
messages (:func:`mailstore.maildir.scan_user_skeleton`: directories with their mtimes, Dovecot
and other files, tmp/, anomalies) plus ``dirs``: ``{(folder, subdir): {file name: Message}}``
for every new/ and cur/. :func:`refresh` takes the next look from the previous one:

- a new/ or cur/ watched since just before the previous look (:func:`watch_user`,
  :mod:`mailstore.migrate.dirwatch`, inotify) is the previous look with the kernel's account of
  every name created, removed, renamed or changed in place since. A name renamed there from
  a name the previous look saw, untouched since, takes that look's facts (rename(2) keeps
  them); other names that appeared are lstat'ed, and nothing is listed. Where the watch
  cannot vouch (none set, queue overflow, directory gone or replaced), the rules below
  apply;
- a new/ or cur/ whose mtime has not moved, and whose mtime was older than the previous look
  by more than a timestamp tick, has the same names as then (adding, removing or renaming an
  entry always sets the directory's mtime to "now"; a change in the same tick as the previous
  look would not be visible, hence the margin). Maildir messages are immutable - Dovecot only
  renames or deletes them - so its messages are reused without a system call;
- any other new/ or cur/ is listed with one os.listdir, and only names not seen before (or
  named in ``restat``: files this run has just written) are lstat'ed;
- everything that is not a message is scanned afresh (a few dozen entries per user).

The planner and verifier (:mod:`mailstore.migrate.plan`) take the ``dirs`` maps as they are.
A refreshed State also says which names of each directory may have changed (``changed``);
with the names that differed between source and target at the end of the live copy
(:func:`differing`) that gives the only names the cut-over needs to compare
(:func:`candidates`): its cost follows the day's changes, not the size of the store.
"""
import os
import stat
import time
from operator import itemgetter
from typing import Dict, Iterable, List, NamedTuple, Optional, Set, Tuple

from mailstore import maildir
from mailstore.migrate import plan as mp
from mailstore.migrate.dirwatch import DirWatch
from mailstore.maildir import Anomaly, Message, UserTree

DirKey = Tuple[str, str]                         # (folder, subdir): ("", "cur"), (".Sent", "new")
MessageDirs = Dict[DirKey, Dict[str, Message]]

# Directory timestamps come from a coarse clock: trust an unchanged mtime only when it is
# older than the previous look by more than this (the rule of maildir.rescan_user).
TRUST_MARGIN_NS = 1_000_000_000


_SIZE = itemgetter(5)                            # Message.size, read in C


class State(NamedTuple):
    tree: UserTree          # no messages (see module doc); directories carry the mtimes
    dirs: MessageDirs
    # per new/ and cur/ whose change since the previous look is known name by name (a watch
    # vouched, or an unchanged mtime): the names that may differ from that look; every other
    # name maps to the very same Message object as then. A directory without an entry
    # (listed afresh, new, or no previous look) may differ anywhere.
    changed: Optional[Dict[DirKey, Set[str]]] = None

    @property
    def message_count(self) -> int:
        return sum(len(d) for d in self.dirs.values())

    @property
    def message_bytes(self) -> int:
        return sum(sum(map(_SIZE, d.values())) for d in self.dirs.values())


def message_dir_key(relpath: str) -> Optional[DirKey]:
    """The (folder, subdir) of a new/ or cur/ directory relpath, None for any other one.
    Mirrors where maildir's scan looks for messages: Maildir/{new,cur} and
    Maildir/.Folder/{new,cur} (Maildir++ folders are flat: ".A.B" is one directory)."""
    parts = relpath.split("/")
    if parts[0] != maildir.MAILDIR:
        return None
    if len(parts) == 2 and parts[1] in maildir.MESSAGE_SUBDIRS:
        return ("", parts[1])
    if (len(parts) == 3 and parts[1].startswith(".") and parts[1] not in (".", "..")
            and parts[2] in maildir.MESSAGE_SUBDIRS):
        return (parts[1], parts[2])
    return None


def from_tree(tree: UserTree) -> State:
    """A State from a full scan (maildir.scan_user / rescan_user)."""
    return State(tree._replace(messages=[]), mp.message_dirs(tree))


def adopt_equal(target: State, source: State) -> State:
    """``target`` with each message whose size, mtime, owner and mode equal the source's
    message of the same name replaced by that source Message object.

    The planner and verifier treat two entries that are one object as equal without
    comparing them (plan.split_names), and refresh() carries unchanged objects over: a
    message found equal at the end of the live copy then costs one identity test in the
    cut-over. Only the inode number differs between the two records, and the migration
    never compares inodes. Run outside the cut-over (it looks at every message)."""
    dirs: MessageDirs = {}
    for key, t_names in target.dirs.items():
        s_names = source.dirs.get(key)
        if not s_names:
            dirs[key] = t_names
            continue
        out = {}
        for name, t in t_names.items():
            m = s_names.get(name)
            out[name] = m if m is not None and (m is t or m[5:10] == t[5:10]) else t
        dirs[key] = out
    return State(target.tree, dirs)


def differing(a: State, b: State) -> Dict[DirKey, Set[str]]:
    """Per new/ or cur/ that both looks have: the names present in one only, or with
    different size, mtime, owner or mode. Every other name compares equal (mostly as the
    very same Message object, see adopt_equal) - the hint that lets the cut-over compare
    only what changed since (candidates; plan.plan_dirs ``candidates``). Run
    outside the cut-over (it looks at every name)."""
    out: Dict[DirKey, Set[str]] = {}
    for key, a_names in a.dirs.items():
        b_names = b.dirs.get(key)
        if b_names is None:
            continue
        only_a, differ = mp.split_names(a_names, b_names)
        out[key] = set(only_a).union(differ, mp.names_only_in(b_names, a_names))
    return out


def candidates(before: Dict[DirKey, Set[str]], now: State) -> Dict[DirKey, Set[str]]:
    """Names that may differ between two looks, per directory, given ``before`` - the names
    that may differ between A and B - and ``now``, a refresh of A or B: a name ``now`` did
    not see change (``changed``) and equal before is equal still. A directory missing from
    ``before`` or not known name by name in ``now`` may differ anywhere (no entry)."""
    changed = now.changed or {}
    return {key: names | changed[key] for key, names in before.items() if key in changed}


def watch_user(watch: Optional[DirWatch], root: str, user: str) -> None:
    """Set ``watch`` on every directory of ROOT/<user>, just before the look that a later
    refresh(..., watch=watch) builds on: names in new/ and cur/, names and in-place changes
    everywhere else. Raises MaildirError like scan_user."""
    if watch is None or watch.fd is None:
        return
    skel = maildir.scan_user_skeleton(root, user)
    for d in skel.directories:
        path = skel.path + "/" + d.relpath if d.relpath else skel.path
        key = message_dir_key(d.relpath)
        if key is not None:
            watch.watch((skel.path, key), path)
        else:
            watch.watch((skel.path, "tree", d.relpath), path, files=True)


def _skeleton(root: str, user: str, previous: Optional[State],
              watch: Optional[DirWatch]) -> UserTree:
    """maildir.scan_user_skeleton - or, where the watches vouch for every directory of the
    previous look that is not new/ or cur/, that look brought up to date: every directory
    lstat'ed again (its mtime, owner, mode), every file named in a watch's events lstat'ed
    again. Anything else - a file or directory that appeared, a type change, an anomaly in
    the previous look - takes the full skeleton scan."""
    if watch is None or previous is None or watch.fd is None:
        return maildir.scan_user_skeleton(root, user)
    started = time.time_ns()
    tree = previous.tree
    path = maildir.user_path(root, user)
    if tree.path != path or any(a.kind != "vanished" and message_dir_key(
            a.relpath.rpartition("/")[0]) is None for a in tree.anomalies):
        return maildir.scan_user_skeleton(root, user)
    lists = {kind: list(getattr(tree, kind))
             for kind in ("control", "index", "other", "symlinks", "tmp_files")}
    where = {e.relpath: (kind, i) for kind, entries in lists.items()
             for i, e in enumerate(entries)}
    directories = []
    dropped = set()
    known_dirs = {d.relpath for d in tree.directories}    # each is lstat'ed below anyway
    for d in tree.directories:
        full = path + "/" + d.relpath if d.relpath else path
        try:
            st = os.lstat(full)
        except OSError:
            return maildir.scan_user_skeleton(root, user)   # it says what is wrong
        if not stat.S_ISDIR(st.st_mode) or st.st_ino != d.inode:
            return maildir.scan_user_skeleton(root, user)
        directories.append(maildir._entry(d.relpath, "dir", st))
        if message_dir_key(d.relpath) is not None:
            continue                                 # names: refresh's business
        changes = watch.changes((path, "tree", d.relpath), st.st_ino)
        if changes is None:
            return maildir.scan_user_skeleton(root, user)
        for name, present in changes.items():
            rel = d.relpath + "/" + name if d.relpath else name
            if rel in known_dirs:
                continue
            if rel not in where:
                if present:                          # new: the scan knows what it is
                    return maildir.scan_user_skeleton(root, user)
                continue                             # came and went
            kind, i = where[rel]
            old = lists[kind][i]
            try:
                st = os.lstat(path + "/" + rel)
            except FileNotFoundError:
                dropped.add(rel)
                continue
            except OSError:
                return maildir.scan_user_skeleton(root, user)
            if kind == "symlinks":
                if not stat.S_ISLNK(st.st_mode):
                    return maildir.scan_user_skeleton(root, user)
                try:
                    lists[kind][i] = maildir._entry(rel, old.kind, st, os.readlink(
                        path + "/" + rel))
                except OSError:
                    return maildir.scan_user_skeleton(root, user)
            elif stat.S_ISREG(st.st_mode):
                lists[kind][i] = maildir._entry(rel, old.kind, st)
            else:
                return maildir.scan_user_skeleton(root, user)
    if dropped:
        for kind in lists:
            lists[kind] = [e for e in lists[kind] if e.relpath not in dropped]
    non_utf8 = [n for n in tree.non_utf8 if message_dir_key(n.rpartition("/")[0]) is None]
    return tree._replace(messages=[], directories=directories, anomalies=[],
                         non_utf8=non_utf8, scanned_ns=started, **lists)


def refresh(root: str, user: str, previous: Optional[State],
            relist: Iterable[DirKey] = (), restat: Optional[Dict[DirKey, Set[str]]] = None,
            moved: Optional[MessageDirs] = None, watch: Optional[DirWatch] = None) -> State:
    """The next look at ROOT/<user> (see the module doc). ``previous`` None: list and lstat
    everything (a full scan). ``relist``: new/cur directories to list whatever their mtime;
    ``restat``: names to lstat although seen before; ``moved``: records for names the
    caller has just renamed(2) into place, taken instead of an lstat when the listing shows
    the name (a rename changes no size, mtime, owner or mode). Raises MaildirError like
    scan_user."""
    skel = _skeleton(root, user, previous, watch)
    anomalies = list(skel.anomalies)
    relist = set(relist)
    restat = restat or {}
    prev_dirs = {d.relpath: d for d in previous.tree.directories} if previous else {}
    trust_before = previous.tree.scanned_ns - TRUST_MARGIN_NS if previous else 0
    # what the previous look found in new/ and cur/ that is not a message (a symlink, a
    # directory): still there in a directory that is not listed again, so reported again
    prev_odd: Dict[str, List[Anomaly]] = {}
    for a in previous.tree.anomalies if previous else ():
        parent, _sep, name = a.relpath.rpartition("/")
        if a.kind != "vanished" and message_dir_key(parent) is not None:
            prev_odd.setdefault(parent, []).append(a)
    out: MessageDirs = {}
    changed: Dict[DirKey, Set[str]] = {}
    for d in skel.directories:
        key = message_dir_key(d.relpath)
        if key is None:
            continue
        prev = previous.dirs.get(key) if previous is not None else None
        before = prev_dirs.get(d.relpath)
        changes = (watch.changes((skel.path, key), d.inode)
                   if watch is not None and prev is not None and before is not None else None)
        if changes is not None:
            out[key] = _apply(skel.path, d.relpath, key, prev, changes, restat.get(key, ()),
                              moved.get(key) if moved else None,
                              _Origins(watch, skel.path, key, previous), anomalies)
            changed[key] = set(changes).union(restat.get(key, ()))
            anomalies.extend(a for a in prev_odd.get(d.relpath, ())
                             if a.relpath.rpartition("/")[2] not in changes)
            continue
        if (prev is not None and before is not None and key not in relist
                and key not in restat and d.mtime_ns == before.mtime_ns
                and before.mtime_ns < trust_before):
            out[key] = prev                     # unchanged: shared, never mutated
            changed[key] = set()
            anomalies.extend(prev_odd.get(d.relpath, ()))
            continue
        if moved and key in moved:
            prev = dict(prev or {})
            prev.update(moved[key])
        out[key] = _list(skel.path, d.relpath, key, prev or {}, restat.get(key, ()),
                         anomalies)
    return State(skel._replace(anomalies=anomalies), out, changed)


class _Origins:
    """Names renamed into PATH's ``key`` directory from a name the previous look saw, with
    neither name touched otherwise since (DirWatch.moved_from), and :meth:`record`: that
    look's record under the new name. rename(2) keeps size, mtime, owner, mode and inode:
    no lstat needed."""

    def __init__(self, watch: DirWatch, path: str, key: DirKey, previous: State):
        self.origins = watch.moved_from((path, key))
        self.path, self.key, self.previous = path, key, previous

    def __contains__(self, name: str) -> bool:
        return name in self.origins

    def record(self, name: str) -> Optional[Message]:
        origin = self.origins.get(name)
        if origin is None:
            return None
        from_key, from_name = origin
        if len(from_key) != 2 or from_key[0] != self.path:
            return None                          # another user's, or not a new/ or cur/
        m = self.previous.dirs.get(from_key[1], {}).get(from_name)
        if m is None:
            return None
        unique, _sep, info = name.partition(":")              # as maildir.parse_name
        return Message._make((self.key[0], self.key[1], name, unique, info) + m[5:])


def listed(root: str, user: str, known: MessageDirs) -> State:
    """A full look at ROOT/<user>: every new/ and cur/ is listed; a listed name found in
    ``known`` (facts the caller observed itself, e.g. fstat of a copy it had just written -
    execute.ExecResult.written) is taken from there, any other name is lstat'ed."""
    skel = maildir.scan_user_skeleton(root, user)
    anomalies = list(skel.anomalies)
    out: MessageDirs = {}
    for d in skel.directories:
        key = message_dir_key(d.relpath)
        if key is not None:
            out[key] = _list(skel.path, d.relpath, key, known.get(key, {}), (), anomalies)
    return State(skel._replace(anomalies=anomalies), out)


def refresh_optional(root: str, user: str, previous: Optional[State]) -> Optional[State]:
    """refresh, or None when ROOT/<user> does not exist (a target not created yet)."""
    if not os.path.lexists(maildir.user_path(root, user)):
        return None
    return refresh(root, user, previous)


def _list(base: str, rel: str, key: DirKey, prev: Dict[str, Message], restat,
          anomalies: List[Anomaly]) -> Dict[str, Message]:
    path = base + "/" + rel
    try:
        names = os.listdir(path)               # plain names: cheaper than DirEntry objects
    except FileNotFoundError:
        anomalies.append(Anomaly(rel, "vanished", "directory disappeared"))
        return {}
    except NotADirectoryError:
        anomalies.append(Anomaly(rel, "vanished", "replaced by a non-directory"))
        return {}
    except OSError as e:
        anomalies.append(Anomaly(rel, "unreadable", e.strerror or str(e)))
        return {}
    # set operations in C: a delta touches a few names of a directory, not all of them
    if prev:
        present = set(names)
        drop = prev.keys() - present
        if restat:
            drop.update(n for n in restat if n in prev)
        if drop:
            out = dict(prev)
            for name in drop:
                del out[name]
        else:
            out = prev                         # as it was: shared, never mutated
        if len(out) == len(present):
            return out
        new = sorted(present.difference(out))
        if out is prev:
            out = dict(prev)
    else:
        out, new = {}, names
    folder, subdir = key
    for name in new:
        m = _look(path, rel, folder, subdir, name, anomalies)
        if m is not None:
            out[name] = m
    return out


def _apply(base: str, rel: str, key: DirKey, prev: Dict[str, Message],
           changes: Dict[str, bool], restat, moved: Optional[Dict[str, Message]],
           origins: _Origins, anomalies: List[Anomaly]) -> Dict[str, Message]:
    """The names of a watched directory now: ``prev`` (the look after the watch was set)
    with the watch's ``changes`` applied. A name renamed there from a name of the previous
    look, neither touched otherwise, is taken from ``moved`` (the caller's records of
    files it renamed there) or else from that look (``origins``); any other name that
    appeared is lstat'ed, and so are names in ``restat``."""
    if not changes and not restat:
        return prev                              # as it was: shared, never mutated
    out = dict(prev)
    look = set()
    for name, present in changes.items():
        if present:
            look.add(name)
        else:
            out.pop(name, None)
    look.update(n for n in restat if n in out)
    path = base + "/" + rel
    folder, subdir = key
    for name in look:
        if name in origins and name not in restat:
            m = moved.get(name) if moved else None
            if m is None:
                m = origins.record(name)
            if m is not None:
                out[name] = m
                continue
        m = _look(path, rel, folder, subdir, name, anomalies)
        if m is None:
            out.pop(name, None)
        else:
            out[name] = m
    return out


def _look(path: str, rel: str, folder: str, subdir: str, name: str,
          anomalies: List[Anomaly]) -> Optional[Message]:
    """lstat one name of a new/ or cur/ directory: its Message, or None (with an anomaly
    when it is not a regular file)."""
    r = rel + "/" + name
    try:
        st = os.lstat(path + "/" + name)
    except FileNotFoundError:
        # renamed or expunged between listing and lstat: normal on a live store
        anomalies.append(Anomaly(r, "vanished", "deleted while scanning"))
        return None
    except OSError as e:
        anomalies.append(Anomaly(r, "unreadable", e.strerror or str(e)))
        return None
    mode = st.st_mode
    if stat.S_ISREG(mode):
        unique, _sep, info = name.partition(":")          # as maildir.parse_name
        return Message(folder, subdir, name, unique, info, st.st_size, st.st_mtime_ns,
                       st.st_uid, st.st_gid, mode & 0o7777, st.st_ino)
    if stat.S_ISLNK(mode):
        try:
            link = os.readlink(path + "/" + name)
        except OSError:
            link = "?"
        anomalies.append(Anomaly(r, "symlink", "symbolic link to %r in a message "
                                               "directory; not followed" % (link,)))
    elif stat.S_ISDIR(mode):
        anomalies.append(Anomaly(r, "directory",
                                 "a directory where a message file should be; skipped"))
    else:
        anomalies.append(Anomaly(r, "special", maildir._type_name(mode)))
    return None
