"""The cut-over's verification of one user: is the target exactly the source?

The target is looked at again (a fresh look, not the plan's bookkeeping) and compared with
the source as the final pass saw it; then the source must not have moved since (delivery
really stopped). Only a user that passes both may be recorded as done.
"""
import os
from typing import Dict, List, Optional

from mailstore import maildir
from mailstore.migrate import delta as md
from mailstore.migrate import plan as mp
from mailstore.migrate.dirwatch import DirWatch
from mailstore.migrate.results import UserResult, diff_lines


def source_changed(source_root: str, source: maildir.UserTree) -> List[mp.Difference]:
    """Directories of the source whose mtime moved since ``source`` was scanned: an entry was
    added, removed or renamed there, i.e. the source is not quiet (the quiesce hook did not
    stop delivery or IMAP). Cheap: one lstat per directory, not per message."""
    diffs = []
    for d in source.directories:
        path = os.path.join(source_root, source.user, d.relpath) if d.relpath else \
            os.path.join(source_root, source.user)
        try:
            changed = os.lstat(path).st_mtime_ns != d.mtime_ns
        except OSError:
            changed = True
        if changed:
            diffs.append(mp.Difference(d.relpath, "source changed during the cut-over (is "
                                                  "delivery really stopped?)"))
    return diffs


def verify_copy(source_root, target_root, r: UserResult, final: tuple,
                watch: Optional[DirWatch] = None) -> bool:
    """The target, looked at again, against the source as the final pass saw it; then the
    source must not have moved since. True when the user may be recorded as done.

    The target is looked at again (delta.refresh): a watched directory is the live
    copy's look at it plus every name the kernel reported created, removed or changed
    since (by this run or anybody); an unwatched new/ or cur/ the plan touched is listed
    afresh. Every message the plan wrote (copied, re-stamped) is lstat'ed afresh; a
    message it renamed must show up under its new name and keeps the facts of the file it
    was (rename(2) changes no size, mtime, owner or mode) - in a watched directory only
    while the kernel reported nothing else done to it, else it is lstat'ed. Bytes were
    compared as each copy was written."""
    source, target_before, plan, hints = final
    relist: set = set()
    restat: Dict[tuple, set] = {}
    moved: md.MessageDirs = {}
    keys: Dict[str, Optional[tuple]] = {}         # parent relpath -> message_dir_key
    for a in plan.actions:
        renamed = (a.op == mp.RENAME and a.kind == "message" and target_before is not None)
        for rel in (a.relpath, a.old_relpath):
            if rel is not None:
                parent, _sep, name = rel.rpartition("/")
                key = keys.get(parent, keys)
                if key is keys:
                    key = keys[parent] = md.message_dir_key(parent)
                if key is None:
                    continue
                relist.add(key)
                if renamed and rel == a.relpath:
                    old_parent, _sep, old_name = a.old_relpath.rpartition("/")
                    old_key = keys.get(old_parent, keys)
                    if old_key is keys:
                        old_key = keys[old_parent] = md.message_dir_key(old_parent)
                    old = target_before.dirs.get(old_key, {}).get(old_name)
                    if old is not None:
                        # the file the target had under the old name: its facts (a rename
                        # changes none), as the source's record when they are the same
                        m = a.entry
                        moved.setdefault(key, {})[name] = m if m[5:10] == old[5:10] else \
                            old._replace(folder=m.folder, subdir=m.subdir, name=m.name,
                                         unique=m.unique, info=m.info)
                        continue
                restat.setdefault(key, set()).add(name)
    # a message re-stamped after its rename is in restat too, and restat wins
    target = md.refresh(target_root, r.user, target_before, relist=relist, restat=restat,
                        moved=moved, watch=watch)
    r.messages, r.bytes = source.message_count, source.message_bytes
    # names that changed in neither tree and were equal before are equal still
    diffs = mp.verify_dirs(source.tree, source.dirs, target.tree, target.dirs,
                           md.candidates(hints, target) if hints is not None else None)
    # Bytes: every copy was compared with its source as it was written (mailstore.migrate.execute), and
    # control files rewritten lately were copied again in the final pass (plan_user's
    # refresh_control); a later rewrite shows up as a changed source directory below.
    diffs += source_changed(source_root, source.tree)
    r.differences = diff_lines(sorted(diffs))
    r.verified = not diffs
    return r.verified and not r.errors
