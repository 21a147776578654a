"""`restore`: a snapshot, a user, a folder or one message back into a target root.

Two modes:
- into an empty place (default): messages, Dovecot control files (so UIDs and UIDVALIDITY come
  back), the user's other files and links, and owner/mode/mtime of files and directories.
  Refused if a restored folder already holds messages or a file to restore already exists.
- `merge`: into a live Maildir. Only messages whose unique name is in none of the folder's
  cur/ and new/ are added (Dovecot gives them new UIDs); nothing present is touched, control
  files are left alone, directories that exist keep their owner and mode, and nothing is ever
  overwritten (files are linked into place with link(2), which fails rather than replace).
  What is in the way is skipped and named (`conflict_entries`), the rest still merged: a
  message's unique name held by a symbolic link, by something not a file or by a file of
  another size than the backed-up message (a file of the same size under the same unique
  name counts as present: Maildir names carry the size, its bytes are not compared), and a
  folder or directory that is a symbolic link (nothing below it is restored).

Safety: every path is built from checked single components and opened below the target with
O_NOFOLLOW, one directory at a time, so neither a hostile name in the catalog nor a symlink
planted in the target can make a restore write outside TARGET_ROOT.
"""
import errno
import os
import secrets
import stat

from mailstore import maildir
from mailstore.backup.catalog import from_db, to_db
from mailstore.backup.errors import BackupError, NotFoundError, RestoreConflict
from mailstore.backup.objects import DamagedObject
from mailstore.backup.repository import Repository

_TEMP_PREFIX = ".mailstore-restore."

_LINK_REASON = "a symbolic link or not a directory; not followed, nothing restored below it"
_EXISTS_REASON = "exists already; not replaced"


class _InTheWay(RestoreConflict):
    """A directory of the target is a symbolic link or not a directory (`parts`: which)."""

    def __init__(self, text, parts):
        super().__init__(text)
        self.parts = parts


def resolve_snapshot(db, snapshot):
    """(seq, id) of a snapshot id or `latest`; NotFoundError otherwise."""
    if snapshot == "latest":
        row = db.execute("SELECT seq, id FROM snapshots ORDER BY seq DESC LIMIT 1").fetchone()
        if row is None:
            raise NotFoundError("the repository has no complete snapshot yet")
        return row
    row = db.execute("SELECT seq, id FROM snapshots WHERE id = ?", (snapshot,)).fetchone()
    if row is None:
        raise NotFoundError("no snapshot {} in the repository (see `mailstore backup list`)"
                            .format(snapshot))
    return row


def normalise_folder(folder):
    """Accept `INBOX`, `Sent`, `A.B` (what IMAP shows) or `.Sent` (the directory name)."""
    if folder is None:
        return None
    if folder.startswith(".") and folder not in (".", "..") and "/" not in folder:
        return folder
    try:
        return maildir.folder_from_display(folder)
    except maildir.MaildirError as e:
        raise BackupError(str(e))


def _component(name):
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise BackupError("refusing unsafe path component {!r} from the catalog".format(name))
    return name


class _Target:
    """Directories below the target root, opened one component at a time without following
    symlinks; records the directories it created so their metadata can be set at the end."""

    def __init__(self, root, create=True):
        if create:
            os.makedirs(root, exist_ok=True)
        self.root = root
        self.fds = {}
        self.created = set()
        try:
            self.fds[()] = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            if create:
                raise       # (a dry run only looks: a missing root holds nothing)

    def close(self):
        for fd in self.fds.values():
            os.close(fd)
        self.fds = {}

    def dir(self, parts, create=True):
        parts = tuple(parts)
        fd = self.fds.get(parts)
        if fd is not None:
            return fd
        if not parts:
            return None     # the root of a dry run, missing
        parent = self.dir(parts[:-1], create)
        if parent is None:
            return None
        name = _component(parts[-1])
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
        try:
            fd = os.open(name, flags, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                return None
            os.mkdir(name, 0o700, dir_fd=parent)
            self.created.add(parts)
            fd = os.open(name, flags, dir_fd=parent)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise _InTheWay("{} is a symbolic link or not a directory; refusing to "
                                "restore through it".format(self.show(parts)), parts)
            raise
        self.fds[parts] = fd
        return fd

    def show(self, parts):
        return os.path.join(self.root, *parts)

    def exists(self, parts):
        fd = self.dir(parts[:-1], create=False)
        if fd is None:
            return False
        try:
            os.stat(_component(parts[-1]), dir_fd=fd, follow_symlinks=False)
            return True
        except FileNotFoundError:
            return False

    def names(self, parts):
        fd = self.dir(parts, create=False)
        if fd is None:
            return []
        return os.listdir(fd)

    def write(self, parts, data, meta, temp_dir=None):
        """Create the file `parts` with `data` and metadata; False if it already exists."""
        fd_dir = self.dir(parts[:-1])
        temp_fd = self.dir(temp_dir) if temp_dir is not None else fd_dir
        temp = _TEMP_PREFIX + secrets.token_hex(8)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                     dir_fd=temp_fd)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                _apply_meta_fd(fd, meta)
            finally:
                os.close(fd)
            try:
                os.link(temp, _component(parts[-1]), src_dir_fd=temp_fd, dst_dir_fd=fd_dir,
                        follow_symlinks=False)
            except FileExistsError:
                return False
            return True
        finally:
            os.unlink(temp, dir_fd=temp_fd)

    def symlink(self, parts, link, meta):
        fd_dir = self.dir(parts[:-1])
        try:
            os.symlink(link, _component(parts[-1]), dir_fd=fd_dir)
        except FileExistsError:
            return False
        mode, uid, gid, mtime_ns = meta
        if os.geteuid() == 0:
            os.chown(parts[-1], uid, gid, dir_fd=fd_dir, follow_symlinks=False)
        if os.utime in os.supports_follow_symlinks:
            os.utime(parts[-1], ns=(mtime_ns, mtime_ns), dir_fd=fd_dir, follow_symlinks=False)
        return True

    def set_dir_meta(self, parts, meta):
        fd = self.dir(parts)
        _apply_meta_fd(fd, meta)


def _apply_meta_fd(fd, meta):
    mode, uid, gid, mtime_ns = meta
    if os.geteuid() == 0:
        os.fchown(fd, uid, gid)
    os.fchmod(fd, mode)
    os.utime(fd, ns=(mtime_ns, mtime_ns))


def restore(repo_path, snapshot, target_root, key_file=None, user=None, folder=None,
            message=None, merge=False, extras=False, wait=0, progress=None, dry_run=False):
    """Restore from `snapshot` (an id or `latest`) into `target_root`; return a summary dict.

    Filters: `user`, `folder` (IMAP name such as `INBOX`/`Sent` or directory name `.Sent`),
    `message` (the unique name printed by `find`, i.e. the file name before `:2,`).
    `extras`: restore the included config paths and database dumps instead of mail, below
    `target_root` (an included /etc/postfix/main.cf lands at TARGET/etc/postfix/main.cf).
    Summary: messages, present (already there under the same unique name, merge; `skipped`
    is its older name, kept for scripts that read it), conflicts and conflict_entries (what
    was in the way and not restored: [{path, reason}]), files, bytes, errors (list of text).
    Raises NotFoundError if nothing matches, RestoreConflict if the target is not empty where
    it must be (and nothing has been written then).
    `dry_run`: write nothing, not even the target root; the summary counts what would be
    restored and `paths` lists the files that would be written.
    """
    target_root = os.path.abspath(os.fspath(target_root))
    folder = normalise_folder(folder)
    if user is not None:
        maildir.check_user_name(user)
    with Repository(repo_path, key_file=key_file) as repo:
        repo.lock(exclusive=False, wait=wait)
        seq, snapshot_id = resolve_snapshot(repo.db, snapshot)
        # every row the plan trusts (names, objects, sizes, owners) is authentic
        repo.check_catalog([seq])
        if extras:
            plan = _plan_extras(repo.db, seq)
        else:
            plan = _plan_mail(repo.db, seq, user, folder, message, merge)
        target = _Target(target_root, create=not dry_run)
        try:
            if not extras and not merge:
                _check_empty(target, plan)
            if dry_run:
                result = _dry_run(target, plan, merge)
            else:
                result = _execute(repo, target, plan, merge, progress)
        finally:
            target.close()
    result["snapshot"] = snapshot_id
    result["dry_run"] = dry_run
    return result


def _plan_mail(db, seq, user, folder, message, merge):
    where, args = ["s.snapshot = ?"], [seq]
    if user is not None:
        where.append("m.user = ?")
        args.append(user)
    if folder is not None:
        where.append("m.folder = ?")
        args.append(to_db(folder))
    if message is not None:
        where.append("m.uniq = ?")
        args.append(to_db(message))
    messages = db.execute(
        "SELECT m.user, m.folder, m.subdir, m.name, m.uniq, m.mode, m.uid, m.gid, m.mtime_ns,"
        " m.object, o.pack, o.offset, o.length, m.size FROM snapshot_messages s JOIN messages m ON m.id ="
        " s.message LEFT JOIN objects o ON o.id = m.object WHERE " + " AND ".join(where) +
        " ORDER BY o.pack, o.offset", args).fetchall()
    messages = [(m[0], from_db(m[1]), m[2], from_db(m[3]), from_db(m[4])) + tuple(m[5:])
                for m in messages]
    if message is not None and not messages:
        raise NotFoundError("no message {} in snapshot{}{}".format(
            message, " for user " + user if user else "",
            " in folder " + folder if folder is not None else ""))
    if message is not None and len({(m[0], m[1]) for m in messages}) > 1:
        raise BackupError("message {} is in several folders or users ({}); narrow it with "
                          "--user/--folder".format(message, ", ".join(sorted(
                              "{}:{}".format(m[0], maildir.folder_display(m[1]))
                              for m in messages))))
    fwhere, fargs = ["snapshot = ?", "user IS NOT NULL"], [seq]
    if user is not None:
        fwhere.append("user = ?")
        fargs.append(user)
    files = _decode_files(db.execute(
        "SELECT kind, user, folder, path, mode, uid, gid, mtime_ns, object, link_target"
        " FROM files WHERE " + " AND ".join(fwhere), fargs))
    if not messages and not files:
        raise NotFoundError("nothing to restore: no user {} in that snapshot".format(user)
                            if user else "the snapshot is empty")
    folders = {(m[0], m[1]) for m in messages}
    if message is not None or folder is not None:
        # only what the chosen folder needs: its directories and (empty target) control files
        wanted = folders if message is not None else {
            (f[1], folder) for f in files if f[2] == folder}
        if folder is not None and not wanted:
            raise NotFoundError("no folder {} in that snapshot{}".format(
                maildir.folder_display(folder), " for user " + user if user else ""))
        users_wanted = {u for u, _f in wanted}
        files = [f for f in files
                 if ((f[1], f[2]) in wanted and f[0] in ("dir", "control"))
                 or (f[0] == "dir" and f[1] in users_wanted and f[3] in ("", maildir.MAILDIR))]
        folders = wanted
    if merge:
        files = [f for f in files if f[0] == "dir"]
    return {"messages": messages, "files": files, "folders": folders}


def _plan_extras(db, seq):
    files = _decode_files(db.execute(
        "SELECT kind, user, folder, path, mode, uid, gid, mtime_ns, object, link_target"
        " FROM files WHERE snapshot = ? AND user IS NULL", (seq,)))
    if not files:
        raise NotFoundError("that snapshot holds no included paths or database dumps")
    return {"messages": [], "files": files, "folders": set()}


def _decode_files(rows):
    return [(f[0], f[1], from_db(f[2]), from_db(f[3])) + tuple(f[4:9]) + (from_db(f[9]),)
            for f in rows]


def _user_parts(user, relpath):
    return (user,) + tuple(p for p in relpath.split("/") if p != "") if relpath else (user,)


def _file_parts(f):
    user, path = f[1], f[3]
    if user is None:
        return tuple(p for p in path.split("/") if p != "")
    return _user_parts(user, path)


def _folder_parts(user, folder, subdir=None):
    parts = (user, maildir.MAILDIR) + ((folder,) if folder else ())
    return parts + ((subdir,) if subdir else ())


def _check_empty(target, plan):
    for user, folder in sorted(plan["folders"]):
        for subdir in maildir.MESSAGE_SUBDIRS:
            names = [n for n in target.names(_folder_parts(user, folder, subdir))
                     if not n.startswith(".")]
            if names:
                raise RestoreConflict(
                    "{} already holds messages; restore into an empty target, or add only "
                    "what is missing with --merge".format(
                        target.show(_folder_parts(user, folder, subdir))))
    for f in plan["files"]:
        if f[0] not in ("dir", "include-dir") and target.exists(_file_parts(f)):
            raise RestoreConflict("{} already exists; restore into an empty target, or use "
                                  "--merge".format(target.show(_file_parts(f))))


def _present(target, user, folder):
    """unique name -> (subdir, file name) of the messages a folder of the target holds."""
    found = {}
    for s in maildir.MESSAGE_SUBDIRS:
        for n in target.names(_folder_parts(user, folder, s)):
            found.setdefault(maildir.parse_name(n)[0], (s, n))
    return found


def _new_result():
    return {"messages": 0, "present": 0, "skipped": 0, "conflicts": 0, "conflict_entries": [],
            "files": 0, "bytes": 0, "errors": []}


def _skip(result, target, parts, reason):
    path = target.show(parts)
    if any(e["path"] == path for e in result["conflict_entries"]):
        return
    result["conflict_entries"].append({"path": path, "reason": reason})
    result["conflicts"] += 1


def _different(target, parts, size):
    """Why the file at `parts`, under the unique name of a backed-up message of `size`
    bytes, is not that message; None when it counts as the same (merge)."""
    st = os.stat(parts[-1], dir_fd=target.dir(parts[:-1], create=False),
                 follow_symlinks=False)
    if stat.S_ISLNK(st.st_mode):
        return "a symbolic link holds the message's unique name; not followed, not replaced"
    if not stat.S_ISREG(st.st_mode):
        return "something that is not a file holds the message's unique name; not replaced"
    if st.st_size != size:
        return ("present with other content ({} bytes, {} in the snapshot); not "
                "replaced".format(st.st_size, size))
    return None


def _messages_to_restore(target, plan, merge, result):
    """The messages of `plan` to write; in merge mode those already present are counted and
    what is in the way is skipped (named in `result`)."""
    present = {}
    for m in plan["messages"]:
        user, folder, uniq = m[0], m[1], m[4]
        key = (user, folder)
        if merge:
            if key not in present:
                try:
                    present[key] = _present(target, user, folder)
                except _InTheWay as e:
                    _skip(result, target, e.parts, _LINK_REASON)
                    present[key] = None
            if present[key] is None:
                continue
            if uniq in present[key]:
                subdir, name = present[key][uniq]
                parts = _folder_parts(user, folder, subdir) + (name,)
                reason = _different(target, parts, m[13])
                if reason:
                    _skip(result, target, parts, reason)
                else:
                    result["present"] += 1
                    result["skipped"] += 1  # the older name of `present`
                continue
            present[key][uniq] = (m[2], m[3])
        yield m


def _make_dirs(target, dirs, merge, result, create=True):
    """Open (and create) the directories of the plan; in merge mode a symbolic link among
    them is skipped and named, otherwise it ends the restore."""
    for f in dirs:
        try:
            target.dir(_file_parts(f), create=create)
        except _InTheWay as e:
            if not merge:
                raise
            _skip(result, target, e.parts, _LINK_REASON)


def _dry_run(target, plan, merge):
    """What _execute would do with `plan`, counted and listed, without writing anything."""
    result = _new_result()
    result["paths"] = []
    _make_dirs(target, [f for f in plan["files"] if f[0] in ("dir", "include-dir")], merge,
               result, create=False)
    for m in _messages_to_restore(target, plan, merge, result):
        user, folder, subdir, name = m[0], m[1], m[2], m[3]
        result["messages"] += 1
        result["bytes"] += m[13]
        result["paths"].append(target.show(_folder_parts(user, folder, subdir) + (name,)))
    for f in plan["files"]:
        parts = _file_parts(f)
        if f[0] in ("dir", "include-dir"):
            continue
        # what is there already is never replaced (_execute's writes fail on it)
        if target.exists(parts):
            _skip(result, target, parts, _EXISTS_REASON)
        else:
            result["files"] += 1
            result["paths"].append(target.show(parts))
    return result


def _check_size(data, size):
    """A message's content must have the size its (authenticated) catalog row says: never
    write one that does not (DamagedObject). Its content id is checked by the decoding. The
    `S=` of a name is no check of its own: the catalog's size is the file's size at backup
    time, and a name written by other software may carry another S= than the file's size."""
    if len(data) != size:
        raise DamagedObject("content of {} bytes where the catalog says {}; not "
                            "restored".format(len(data), size))


def _execute(repo, target, plan, merge, progress):
    result = _new_result()
    dirs = sorted((f for f in plan["files"] if f[0] in ("dir", "include-dir")),
                  key=lambda f: len(_file_parts(f)))
    _make_dirs(target, dirs, merge, result)
    recorded = {_file_parts(f) for f in dirs}
    temp_dirs = {}
    for m in _messages_to_restore(target, plan, merge, result):
        user, folder, subdir, name = m[0], m[1], m[2], m[3]
        try:
            data = repo.read_at(m[9], m[10], m[11], m[12])
            _check_size(data, m[13])
        except DamagedObject as e:
            result["errors"].append("{}/{}: {}".format(
                user, maildir.message_relpath(folder, subdir, name), e))
            continue
        parts = _folder_parts(user, folder, subdir) + (name,)
        try:
            if (user, folder) not in temp_dirs:
                # Write into the Maildir's own tmp/ (where Dovecot expects unfinished files),
                # but do not create a tmp/ the snapshot did not have: the copy would not be
                # exact.
                tmp = _folder_parts(user, folder, "tmp")
                temp_dirs[(user, folder)] = tmp if tmp in recorded or target.exists(tmp) \
                    else None
            written = target.write(parts, data, (m[5], m[6], m[7], m[8]),
                                   temp_dir=temp_dirs[(user, folder)])
        except _InTheWay as e:
            if not merge:
                raise
            _skip(result, target, e.parts, _LINK_REASON)
            continue
        if written:
            result["messages"] += 1
            result["bytes"] += len(data)
        else:
            _skip(result, target, parts, _EXISTS_REASON)
        if progress and result["messages"] % 10000 == 0:
            progress("{} messages restored".format(result["messages"]))
    for f in plan["files"]:
        kind, meta, parts = f[0], (f[4], f[5], f[6], f[7]), _file_parts(f)
        if kind in ("dir", "include-dir"):
            continue
        if kind in ("symlink", "include-symlink"):
            if target.symlink(parts, f[9], meta):
                result["files"] += 1
            else:
                _skip(result, target, parts, _EXISTS_REASON)
            continue
        try:
            data = repo.read_object(f[8])
        except DamagedObject as e:
            result["errors"].append("{}: {}".format("/".join(parts), e))
            continue
        if target.write(parts, data, meta):
            result["files"] += 1
        else:
            _skip(result, target, parts, _EXISTS_REASON)
    # Directory metadata last, deepest first: adding files above changed their mtimes. In
    # merge mode, directories that were already there keep their own metadata.
    for f in sorted(dirs, key=lambda f: -len(_file_parts(f))):
        parts = _file_parts(f)
        if merge and parts not in target.created:
            continue
        target.set_dir_meta(parts, (f[4], f[5], f[6], f[7]))
    os.sync()
    return result
