"""Migration planning: pure functions from two scanned trees to a list of actions.

Nothing here touches the file system. ``plan_user(source, target)`` says what to do in the
target so that it equals the source; ``verify_user(source, target)`` says where they differ.
Both work on :class:`mailstore.maildir.UserTree` values (``target`` may be None: not there yet).

What "equal" means (docs/architecture.md): every message, Dovecot control file, index file,
other file, symlink and directory of the source exists in the target at the same relative path
with the same size, mtime, owner and mode (and link text); nothing else exists in the target.
Files in ``tmp/`` are deliveries in progress, not mail: never copied. Anomalies (symlinks in
new/cur, directories where a message should be, unreadable directories) are never copied.

Messages are immutable apart from their names: a message of the target whose ``(folder,
unique)`` matches a source message under another name (flags changed, moved new->cur) is
*renamed*, not copied again; a target message whose key is gone from the source is deleted.
"""
from collections import Counter, defaultdict
from itertools import compress, groupby, repeat
from operator import attrgetter, is_, is_not
from typing import Dict, List, NamedTuple, Optional, Set, Tuple, Union

from mailstore.maildir import Entry, Message, UserTree

# Action ops, executed in this order (the executor relies on it):
CLEAR = "clear"        # remove whatever is at relpath in the target (type conflict)
MKDIR = "mkdir"        # create directory relpath
RENAME = "rename"      # rename target old_relpath -> relpath (a message whose flags changed)
COPY = "copy"          # copy source relpath -> target relpath (via staging + rename)
SYMLINK = "symlink"    # (re)create symlink relpath with entry.link
DELETE = "delete"      # unlink target file relpath (expunged / no longer in source)
RMDIR = "rmdir"        # remove target directory relpath (deepest first)
META = "meta"          # set owner, mode, mtime of target relpath from entry
DIRMETA = "dirmeta"    # same for a directory, deepest first, after everything inside it

Item = Union[Entry, Message]


class Action(NamedTuple):
    op: str
    relpath: str
    entry: Optional[Item] = None          # source metadata to apply (copy/meta/mkdir/...)
    old_relpath: Optional[str] = None     # RENAME: current target path
    kind: str = ""                        # message | control | index | other | symlink | dir
    mtime_only: bool = False              # META/DIRMETA: owner and mode are right already


class UserPlan(NamedTuple):
    user: str
    actions: List[Action]

    @property
    def copy_bytes(self) -> int:
        return sum(a.entry.size for a in self.actions if a.op == COPY)

    def summary(self) -> Dict[str, int]:
        # one pass: a cut-over's plan holds thousands of renames
        by = Counter((a.op, a.kind == "message") for a in self.actions)
        return {"copy_messages": by[COPY, True],
                "copy_files": by[COPY, False],
                "copy_bytes": self.copy_bytes,
                "rename_messages": by[RENAME, True] + by[RENAME, False],
                "delete_messages": by[DELETE, True],
                "delete_files": by[DELETE, False],
                "metadata": by[META, True] + by[META, False] + by[DIRMETA, False],
                "mkdir": by[MKDIR, False]}


def _same_meta(a: Item, b: Item) -> bool:
    return (a.mtime_ns, a.uid, a.gid, a.mode) == (b.mtime_ns, b.uid, b.gid, b.mode)


def _depth(relpath: str) -> int:
    return relpath.count("/") + (1 if relpath else 0)


def _files(tree: UserTree) -> Dict[str, Entry]:
    """relpath -> Entry for the non-message files that a copy carries (not tmp/)."""
    out = {}
    for e in tree.control + tree.index + tree.other + tree.symlinks:
        out[e.relpath] = e
    return out


def message_dirs(tree: UserTree) -> Dict[Tuple[str, str], Dict[str, Message]]:
    """(folder, subdir) -> {file name: Message}, in scan order.

    Planning and verification work per message directory on plain names: no per-message
    path is built unless an action or a difference needs it (100k messages: the string
    building alone used to cost more than the rest of a delta)."""
    out: Dict[Tuple[str, str], Dict[str, Message]] = {}
    for key, group in groupby(tree.messages, _DIR_OF):
        msgs = list(group)
        d = out.get(key)
        if d is None:
            out[key] = dict(zip(map(_NAME_OF, msgs), msgs))
        else:                                    # not contiguous (never from a scan)
            d.update(zip(map(_NAME_OF, msgs), msgs))
    return out


_DIR_OF = attrgetter("folder", "subdir")
_NAME_OF = attrgetter("name")


def _dir_relpath(key: Tuple[str, str]) -> str:
    folder, subdir = key
    return "Maildir/" + folder + "/" + subdir if folder else "Maildir/" + subdir


def names_only_in(names: Dict[str, Message], other: Dict[str, Message]) -> List[str]:
    """Names of ``names`` not in ``other`` (per-name work in C: map/compress)."""
    if names is other or not names:
        return []
    keys = list(names)
    return list(compress(keys, map(is_, map(other.get, keys), repeat(None))))


def _narrowed(s_by, t_by, candidates: Optional[Dict[Tuple[str, str], Set[str]]]) -> dict:
    """key -> (source names, target names), each cut down to the key's candidates."""
    out = {}
    for key, keep in (candidates or {}).items():
        if key in s_by and key in t_by:
            s_names, t_names = s_by[key], t_by[key]
            out[key] = ({n: s_names[n] for n in keep if n in s_names},
                        {n: t_names[n] for n in keep if n in t_names})
    return out


def split_names(names: Dict[str, Message], other: Dict[str, Message]):
    """(names only here, names in both whose size/mtime/owner/mode differ).

    The per-message hot path of every delta, so the per-name work is done in C (map/compress
    over the two maps) and only the names that are not the very same Message object on both
    sides get a Python step. Same object means equal (see delta.adopt_equal); a name
    missing from ``other`` maps to None."""
    if names is other or not names:
        return [], []
    keys = list(names)
    mine = list(names.values())
    theirs = list(map(other.get, keys))
    only, differ = [], []
    for i in compress(range(len(keys)), map(is_not, mine, theirs)):
        t = theirs[i]
        if t is None:
            only.append(keys[i])
        elif mine[i][5:10] != t[5:10]:
            differ.append(keys[i])
    return only, differ


def plan_user(source: UserTree, target: Optional[UserTree],
              refresh_control: bool = False) -> UserPlan:
    """Actions that make ``target`` equal ``source``.

    ``refresh_control``: copy control and index files changed in the last seconds before the
    source scan even if size and mtime match (the final, quiesced pass uses it: Dovecot may
    rewrite a uidlist with the same size within one coarse timestamp tick).
    """
    return plan_dirs(source, message_dirs(source), target,
                     message_dirs(target) if target else {}, refresh_control)


def plan_dirs(source: UserTree, s_by: Dict[Tuple[str, str], Dict[str, Message]],
              target: Optional[UserTree], t_by: Dict[Tuple[str, str], Dict[str, Message]],
              refresh_control: bool = False,
              candidates: Optional[Dict[Tuple[str, str], Set[str]]] = None) -> UserPlan:
    """plan_user with the messages given per directory (``message_dirs`` shape, e.g. a
    mailstore.migrate.delta.State); ``source.messages``/``target.messages`` are ignored.
    Neither map is modified.

    ``candidates``: per directory, the only names that may differ - outside them both maps
    hold the very same Message objects (delta.candidates). Only those names are
    compared: a cut-over then costs what changed, not the size of the mailbox. A directory
    without an entry is compared in full. Names outside the candidates compare equal here
    anyway (same object, see split_names): the hint saves the walk over them, it decides
    nothing that the maps do not already say."""
    t_dirs = {d.relpath: d for d in target.directories} if target else {}
    t_by = dict(t_by) if target else {}
    t_files = _files(target) if target else {}
    s_dirs = {d.relpath: d for d in source.directories}
    s_files = _files(source)
    s_dir_rel = {_dir_relpath(k): k for k in s_by}
    t_dir_rel = {_dir_relpath(k): k for k in t_by}

    clears, mkdirs, renames, copies, links, deletes, rmdirs, metas = ([] for _ in range(8))
    recent = source.scanned_ns - 2_000_000_000

    # Type conflicts: a target path that must become a directory but is a file, or the reverse.
    for rel in s_dirs:
        parent, _sep, name = rel.rpartition("/")
        t_names = t_by.get(t_dir_rel.get(parent)) if parent in t_dir_rel else None
        if (t_names is not None and name in t_names) or rel in t_files:
            clears.append(Action(CLEAR, rel))
            if t_names is not None and name in t_names:
                key = t_dir_rel[parent]
                t_by[key] = t_names = dict(t_names)      # the caller's map stays as it was
                del t_names[name]
            t_files.pop(rel, None)
    conflicts = []
    for rel in t_dirs:
        parent, _sep, name = rel.rpartition("/")
        s_names = s_by.get(s_dir_rel.get(parent)) if parent in s_dir_rel else None
        if (s_names is not None and name in s_names) or rel in s_files:
            conflicts.append(rel)
    for rel in sorted(conflicts):
        if rel not in t_dirs:
            continue                      # went with a conflicting directory above it
        clears.append(Action(CLEAR, rel))
        # everything below it goes with it
        below = rel + "/"
        for d in [d for d in t_dirs if d == rel or d.startswith(below)]:
            del t_dirs[d]
        for d in [d for d in t_dir_rel if d == rel or d.startswith(below)]:
            t_by.pop(t_dir_rel.pop(d), None)
        for f in [f for f in t_files if f.startswith(below)]:
            del t_files[f]

    for rel, d in sorted(s_dirs.items(), key=lambda kv: _depth(kv[0])):
        if rel not in t_dirs:
            mkdirs.append(Action(MKDIR, rel, d, kind="dir"))

    # -- messages: exact names first, then by (folder, unique) for renames -------------------
    src_left: Dict[tuple, List[Message]] = defaultdict(list)
    tgt_left: Dict[tuple, List[Message]] = defaultdict(list)
    narrow = _narrowed(s_by, t_by, candidates)
    for key, s_names in s_by.items():
        t_names = t_by.get(key, {})
        if key in narrow:
            s_names, t_names = narrow[key]
        only, differ = split_names(s_names, t_names)
        for n in only:
            m = s_names[n]
            src_left[(m.folder, m.unique)].append(m)
        for n in differ:
            m, t = s_names[n], t_names[n]
            if t.size != m.size:
                copies.append(Action(COPY, m.relpath, m, kind="message"))  # torn or foreign
            else:
                metas.append(Action(META, m.relpath, m, kind="message"))
    for key, t_names in t_by.items():
        s_names = s_by.get(key, {})
        if key in narrow:
            s_names, t_names = narrow[key]
        for n in names_only_in(t_names, s_names):
            t = t_names[n]
            tgt_left[(t.folder, t.unique)].append(t)
    for key, srcs in src_left.items():
        cands = tgt_left.get(key, [])
        for m in srcs:
            if len(cands) == 1:                      # the usual case: one earlier name
                match = cands[0] if cands[0].size == m.size else None
            else:
                match = next((t for t in cands if t.size == m.size), None)
            if match is None:
                copies.append(Action(COPY, m.relpath, m, kind="message"))
                continue
            cands.remove(match)
            renames.append(Action(RENAME, m.relpath, m, old_relpath=match.relpath,
                                  kind="message"))
            if not _same_meta(m, match):
                metas.append(Action(META, m.relpath, m, kind="message"))
    for left in tgt_left.values():          # mostly emptied by the renames above
        for t in left:
            deletes.append(Action(DELETE, t.relpath, kind="message"))

    # -- everything else that is a file ------------------------------------------------------
    for rel, e in sorted(s_files.items()):
        t = t_files.get(rel)
        if e.kind == "symlink":
            if t is None or t.kind != "symlink" or t.link != e.link:
                links.append(Action(SYMLINK, rel, e, kind="symlink"))
            elif (t.uid, t.gid, t.mtime_ns) != (e.uid, e.gid, e.mtime_ns):
                metas.append(Action(META, rel, e, kind="symlink"))
            continue
        if (t is None or t.kind == "symlink" or t.size != e.size or t.mtime_ns != e.mtime_ns
                or (refresh_control and e.kind in ("control", "index")
                    and e.mtime_ns > recent)):
            copies.append(Action(COPY, rel, e, kind=e.kind))
        elif not _same_meta(e, t):
            metas.append(Action(META, rel, e, kind=e.kind))
    for rel, t in sorted(t_files.items()):
        if rel not in s_files:
            deletes.append(Action(DELETE, rel, kind=t.kind))

    # -- directories: extra ones go (deepest first), all get their metadata last -----------
    for rel in sorted(t_dirs, key=_depth, reverse=True):
        if rel not in s_dirs:
            rmdirs.append(Action(RMDIR, rel, kind="dir"))
    # a directory's mtime changes whenever an entry is added or removed in it: reset the
    # ones we touch, and the ones whose metadata differ
    touched = _touched_dirs(clears + mkdirs + renames + copies + links + deletes + rmdirs)
    for rel, d in sorted(s_dirs.items(), key=lambda kv: _depth(kv[0]), reverse=True):
        t = t_dirs.get(rel)
        if t is None or not _same_meta(d, t) or rel in touched:
            # a rename or copy inside changes only the directory's mtime: one utime
            same_owner_mode = t is not None and (t.uid, t.gid, t.mode) == (d.uid, d.gid, d.mode)
            rmdirs.append(Action(DIRMETA, rel, d, kind="dir", mtime_only=same_owner_mode))

    actions = clears + mkdirs + renames + copies + links + deletes + metas + rmdirs
    return UserPlan(source.user, _ordered(actions))


_ORDER = {op: i for i, op in enumerate((CLEAR, MKDIR, RENAME, COPY, SYMLINK, DELETE, META,
                                        RMDIR, DIRMETA))}


def _ordered(actions: List[Action]) -> List[Action]:
    # stable: keeps the depth order computed above within RMDIR and DIRMETA
    rm = [a for a in actions if a.op in (RMDIR, DIRMETA)]
    rest = sorted((a for a in actions if a.op not in (RMDIR, DIRMETA)),
                  key=lambda a: _ORDER[a.op])
    # RMDIR and DIRMETA interleave deepest-first: both belong after everything inside them
    rm.sort(key=lambda a: -_depth(a.relpath))
    return rest + rm


def _parent(relpath: str) -> str:
    return relpath.rpartition("/")[0] if "/" in relpath else ""


def _touched_dirs(actions: List[Action]) -> set:
    touched = set()
    for a in actions:
        touched.add(_parent(a.relpath))
        if a.old_relpath is not None:
            touched.add(_parent(a.old_relpath))
    return touched


# -- verification ---------------------------------------------------------------------------
class Difference(NamedTuple):
    relpath: str
    problem: str


def _meta_diff(s: Item, t: Item, what: str) -> Optional[str]:
    bad = []
    if s.size != t.size and what != "dir":
        bad.append("size %d != %d" % (t.size, s.size))
    if s.mtime_ns != t.mtime_ns:
        bad.append("mtime")
    if (s.uid, s.gid) != (t.uid, t.gid):
        bad.append("owner %d:%d != %d:%d" % (t.uid, t.gid, s.uid, s.gid))
    if s.mode != t.mode and what != "symlink":
        bad.append("mode %o != %o" % (t.mode, s.mode))
    return ", ".join(bad) or None


def verify_user(source: UserTree, target: Optional[UserTree]) -> List[Difference]:
    """Where ``target`` is not an exact copy of ``source``: names, sizes, mtimes, owners,
    modes, link texts; nothing missing, nothing extra. (Bytes are compared by the executor
    as it writes each copy.)"""
    if target is None:
        return [Difference("", "target user directory missing")]
    return verify_dirs(source, message_dirs(source), target, message_dirs(target))


def verify_dirs(source: UserTree, s_by: Dict[Tuple[str, str], Dict[str, Message]],
                target: Optional[UserTree], t_by: Dict[Tuple[str, str], Dict[str, Message]],
                candidates: Optional[Dict[Tuple[str, str], Set[str]]] = None
                ) -> List[Difference]:
    """verify_user with the messages given per directory (see plan_dirs, also for
    ``candidates``: outside them the two maps hold the very same objects, which compare
    equal without a look, so leaving them out changes no result)."""
    if target is None:
        return [Difference("", "target user directory missing")]
    diffs: List[Difference] = []

    def compare(s_map, t_map, what):
        for rel, s in s_map.items():
            t = t_map.get(rel)
            if t is None:
                diffs.append(Difference(rel, "%s missing in target" % what))
                continue
            if (s.size, s.mtime_ns, s.uid, s.gid, s.mode) == (t.size, t.mtime_ns, t.uid,
                                                               t.gid, t.mode) \
                    and what != "symlink":
                continue                      # the common case, without building strings
            d = _meta_diff(s, t, what)
            if d:
                diffs.append(Difference(rel, "%s differs: %s" % (what, d)))
            if what == "symlink" and s.link != t.link:
                diffs.append(Difference(rel, "symlink text differs"))
        for rel in t_map:
            if rel not in s_map:
                diffs.append(Difference(rel, "extra %s in target" % what))

    narrow = _narrowed(s_by, t_by, candidates)
    for key, s_names in s_by.items():
        t_names = t_by.get(key, {})
        if key in narrow:
            s_names, t_names = narrow[key]
        missing, differ = split_names(s_names, t_names)
        for n in missing:
            diffs.append(Difference(s_names[n].relpath, "message missing in target"))
        for n in differ:
            d = _meta_diff(s_names[n], t_names[n], "message")
            diffs.append(Difference(s_names[n].relpath, "message differs: %s" % d))
    for key, t_names in t_by.items():
        s_names = s_by.get(key, {})
        if key in narrow:
            s_names, t_names = narrow[key]
        for n in names_only_in(t_names, s_names):
            diffs.append(Difference(t_names[n].relpath, "extra message in target"))
    for kind in ("control", "index", "other", "symlinks"):
        compare({e.relpath: e for e in getattr(source, kind)},
                {e.relpath: e for e in getattr(target, kind)},
                "symlink" if kind == "symlinks" else kind + " file")
    compare({d.relpath: d for d in source.directories},
            {d.relpath: d for d in target.directories}, "dir")
    for e in target.tmp_files:
        diffs.append(Difference(e.relpath, "extra file in target tmp/"))
    for a in target.anomalies:
        diffs.append(Difference(a.relpath, "target anomaly: %s (%s)" % (a.kind, a.detail)))
    return sorted(diffs)
