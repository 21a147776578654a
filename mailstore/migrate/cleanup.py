"""Removing the source once the target verifies (``mailstore cleanup-source``).

Separate from the migration on purpose: an operator runs it when the new server has proved
itself. Only users the journal records as done are touched, and of those only files whose
copy in the target was found and byte-compared.
"""
import os
from typing import Dict, List, Optional

from mailstore import maildir
from mailstore.migrate import execute as mx
from mailstore.migrate import plan as mp
from mailstore.migrate.journal import Journal
from mailstore.migrate.results import check_roots, diff_lines


class CleanupResult:
    def __init__(self, dry_run: bool = False):
        self.dry_run = dry_run
        self.users: List[dict] = []
        self.error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None and all(u["ok"] for u in self.users)

    def as_dict(self) -> dict:
        return {"ok": self.ok, "dry_run": self.dry_run, "error": self.error,
                "users": self.users}


def check_source_in_target(source: maildir.UserTree, target: Optional[maildir.UserTree]
                           ) -> List[mp.Difference]:
    """Metadata check before deleting the source: everything of the source is in the target.

    The target may have moved on since the cut-over (new mail, flag changes): a source message
    counts as present if the target holds the same (folder, unique) with the same size; a
    non-message file if the target has it with the same size and mtime, or a newer mtime.
    """
    if target is None:
        return [mp.Difference("", "target user directory missing")]
    diffs = []
    by_key = {}
    for m in target.messages:
        by_key.setdefault(m.key, []).append(m)
    for m in source.messages:
        if not any(t.size == m.size for t in by_key.get(m.key, [])):
            diffs.append(mp.Difference(m.relpath, "message not in target"))
    t_files = {e.relpath: e for e in target.control + target.index + target.other +
               target.symlinks}
    for e in source.control + source.index + source.other + source.symlinks:
        t = t_files.get(e.relpath)
        if t is None and _superseded_uidvalidity(e.relpath, t_files):
            continue
        if t is None:
            diffs.append(mp.Difference(e.relpath, "file not in target"))
        elif t.mtime_ns < e.mtime_ns or (t.mtime_ns == e.mtime_ns and t.size != e.size):
            diffs.append(mp.Difference(e.relpath, "target copy is older or differs"))
    for a in source.anomalies:
        diffs.append(mp.Difference(a.relpath, "not migrated: %s (%s)" % (a.kind, a.detail)))
    return diffs


def _uidvalidity_marker(relpath: str):
    """(directory, value) of Dovecot's `dovecot-uidvalidity.<hex>`, else None."""
    directory, _, name = relpath.rpartition("/")
    prefix, dot, value = name.partition(".")
    if prefix != "dovecot-uidvalidity" or not dot:
        return None
    try:
        return directory, int(value, 16)
    except ValueError:
        return None


def _superseded_uidvalidity(relpath: str, target_files) -> bool:
    """Whether the source's `dovecot-uidvalidity.<hex>` was replaced in the target by one with
    the same or a higher value. Dovecot names that empty file after the next UIDVALIDITY it
    will give a new folder and renames it when it gives one (a folder made after the cut-over):
    only the newest counts, so the source's older one is not missing from the target."""
    marker = _uidvalidity_marker(relpath)
    if marker is None:
        return False
    for other in target_files:
        found = _uidvalidity_marker(other)
        if found is not None and found[0] == marker[0] and found[1] >= marker[1]:
            return True
    return False


def _target_paths(source: maildir.UserTree, target: maildir.UserTree) -> List[str]:
    """For each source message, the path of its copy in the target (same folder, unique
    name and size; the flags may have changed since the cut-over)."""
    by_key: Dict[tuple, List[maildir.Message]] = {}
    for t in target.messages:
        by_key.setdefault((t.key, t.size), []).append(t)
    exact = {t.relpath for t in target.messages}
    paths = []
    for m in source.messages:
        if m.relpath in exact:
            paths.append(m.relpath)
        else:
            cands = by_key.get((m.key, m.size))
            paths.append(cands[0].relpath if cands else m.relpath)
    return paths


def cleanup_source(source_root: str, target_root: str, users: Optional[List[str]] = None,
                   dry_run: bool = False) -> CleanupResult:
    """Delete migrated users' source trees, file by file, only after the target verifies.

    Only users the journal records as done are considered. Every message is byte-compared
    with its target copy (found by folder and unique name) first; any difference and the
    user's source is left entirely alone. Only files that were verified (plus tmp/ leftovers)
    are unlinked, then the directories that became empty: a file that appears meanwhile
    stays, and is reported.

    ``dry_run``: every check as above (the byte comparison too: it decides), then nothing is
    deleted; each user's ``would_delete_files`` says how many files would have been.
    """
    result = CleanupResult(dry_run)
    for u in users or []:
        maildir.check_user_name(u)
    check_roots(source_root, target_root)
    journal = Journal(target_root)
    names = list(dict.fromkeys(users)) if users else journal.users("done")
    for user in names:
        entry = {"user": user, "ok": False, "deleted_files": 0, "would_delete_files": 0,
                 "problems": []}
        result.users.append(entry)
        if not journal.has("done", user):
            entry["problems"].append("not recorded as migrated in %s" % journal.path)
            continue
        src_dir = os.path.join(source_root, user)
        if not os.path.lexists(src_dir):
            entry["ok"] = True               # renamed, or cleaned up before
            continue
        try:
            source = maildir.scan_user(source_root, user)
            target = maildir.scan_user(target_root, user)
        except maildir.MaildirError as e:
            entry["problems"].append(str(e))
            continue
        diffs = check_source_in_target(source, target)
        if not diffs:
            os.sync()
            src_paths = [m.relpath for m in source.messages]
            tgt_paths = _target_paths(source, target)
            diffs = _compare_pairs(src_dir, os.path.join(target_root, user), src_paths,
                                   tgt_paths)
        if diffs:
            entry["problems"] = diff_lines(diffs)
            continue
        entry["would_delete_files"] = len(_files(source))
        if dry_run:
            entry["ok"] = True
            continue
        deleted, problems = _delete_tree(src_dir, source)
        entry["deleted_files"] = deleted
        entry["problems"] = problems
        entry["ok"] = not problems
    return result


def _compare_pairs(src_dir, dst_dir, src_paths, dst_paths) -> List[mp.Difference]:
    diffs = []
    for s, d in zip(src_paths, dst_paths):
        diffs += mx.compare_files(os.path.join(src_dir, s), os.path.join(dst_dir, d), s)
    return diffs


def _files(tree: maildir.UserTree) -> List[str]:
    """What the clean-up unlinks: the verified files, and tmp/ leftovers."""
    return ([m.relpath for m in tree.messages] +
            [e.relpath for e in tree.control + tree.index + tree.other + tree.symlinks +
             tree.tmp_files])


def _delete_tree(src_dir: str, tree: maildir.UserTree):
    deleted, problems = 0, []
    for rel in _files(tree):
        try:
            os.unlink(os.path.join(src_dir, rel))
            deleted += 1
        except FileNotFoundError:
            pass
        except OSError as e:
            problems.append("%s: %s" % (rel, e.strerror or e))
    for d in sorted((d.relpath for d in tree.directories), key=lambda r: -r.count("/") - bool(r)):
        path = os.path.join(src_dir, d) if d else src_dir
        try:
            os.rmdir(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            problems.append("%s: left in place: %s" % (d or ".", e.strerror or e))
    return deleted, problems
