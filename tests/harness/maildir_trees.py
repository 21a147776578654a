"""Maildir trees for mailstore's tests: build them, change them like Dovecot, compare them.

`make_user` builds one user's small tree with the files the migration tests need (FOLDERS, given
messages, optional control files); `make_tree` builds several users' full trees with owners,
modes and mtimes for the backup tests (USERS, `message_bytes`). `snapshot` and `snapshot_tree`
read a tree back for comparison; each says what it compares.
"""
import os
import stat

FOLDERS = ("", ".Sent", ".A.B")
USERS = {
    "alice": {"": 6, ".Sent": 3, ".Archive.2024": 2},
    "bob": {"": 4, ".Trash": 1},
}


MTIME_NS = 1_600_000_000_000_000_000   # a file's mtime unless a test gives one


def write(path, data=b"x", mtime_ns=MTIME_NS, mode=0o600, uid=None, gid=None):
    """A file with DATA, MODE, mtime and (if UID is given) owner; its directories made."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    if uid is not None:
        os.chown(path, uid, gid)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def make_folder(maildir, folder):
    """FOLDER ("" for INBOX) of MAILDIR with new/, cur/ and tmp/; returns the folder's path."""
    fdir = os.path.join(maildir, folder) if folder else maildir
    for sub in ("new", "cur", "tmp"):
        os.makedirs(os.path.join(fdir, sub), exist_ok=True)
    return fdir


def write_folder_control(fdir, folder, uidlist, mtime_ns=MTIME_NS, uid=None, gid=None):
    """The folder's dovecot-uidlist (UIDLIST, bytes) and, below INBOX, its maildirfolder."""
    write(os.path.join(fdir, "dovecot-uidlist"), uidlist, mtime_ns, 0o600, uid, gid)
    if folder:
        write(os.path.join(fdir, "maildirfolder"), b"", mtime_ns, 0o600, uid, gid)


# --- one user's small tree (the migration tests) ---------------------------------------------
def make_user(root, user, messages, control=True):
    """messages: iterable of (folder, subdir, unique, flags, data, mtime_ns)."""
    md = os.path.join(root, user, "Maildir")
    for folder in FOLDERS:
        fdir = make_folder(md, folder)
        if control:
            write_folder_control(fdir, folder, b"3 V1 N1\n")
    if control:
        write(os.path.join(md, "subscriptions"), b"Sent\nA.B\n")
        write(os.path.join(md, "dovecot-uidvalidity.5f000001"), b"", mode=0o444)
        write(os.path.join(md, "dovecot.index.log"), b"\0" * 100)
    for folder, sub, unique, flags, data, mtime in messages:
        name = unique if sub == "new" else unique + ":2," + flags
        write(os.path.join(md, folder, sub, name), data, mtime)
    return md


def snapshot(root, user):
    """relpath -> comparable facts for everything below ROOT/<user> except tmp/ contents."""
    base = os.path.join(root, user)
    out = {}
    for dirpath, dirnames, filenames in os.walk(base):
        rel_dir = os.path.relpath(dirpath, base)
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            st = os.lstat(path)
            if os.path.basename(rel_dir) == "tmp" and not stat.S_ISDIR(st.st_mode):
                continue
            facts = [stat.S_IFMT(st.st_mode), st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)]
            if stat.S_ISLNK(st.st_mode):
                facts += [os.readlink(path)]
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    facts += [st.st_mtime_ns, f.read()]
            else:
                facts += [st.st_mtime_ns]
            out[rel] = tuple(facts)
        st = os.lstat(dirpath)        # the directory itself, after its entries were read
        out[os.path.normpath(rel_dir)] = (stat.S_IFMT(st.st_mode), st.st_uid, st.st_gid,
                                          stat.S_IMODE(st.st_mode), st.st_mtime_ns)
    return out


def messages_by_key(root, user):
    """(folder, unique) -> [relpath, ...] for the messages of ROOT/<user>/Maildir."""
    md = os.path.join(root, user, "Maildir")
    found = {}
    for folder in [""] + sorted(d for d in os.listdir(md) if d.startswith(".")):
        for sub in ("new", "cur"):
            d = os.path.join(md, folder, sub)
            if not os.path.isdir(d):
                continue
            for name in os.listdir(d):
                found.setdefault((folder, name.partition(":")[0]), []).append(
                    os.path.join(folder, sub, name))
    return found


# --- several users' full trees (the backup tests) ---------------------------------------------
def message_bytes(user, folder, i, extra=b""):
    subject = "=?utf-8?q?R=C3=A9union?= {} {}".format(folder[1:] or "INBOX", i)
    return ("From: Sender {i} <sender{i}@example.org>\r\nTo: {u}@cacert.test\r\n"
            "Subject: {s}\r\nDate: Tue, {d:02d} Nov 2026 10:00:00 +0000\r\n"
            "Message-ID: <{u}.{i}@example.org>\r\n\r\nHello {u}, message {i} in {f}.\r\n"
            .format(i=i, u=user, s=subject, d=1 + i % 28, f=folder or "INBOX")
            ).encode() + extra + b"x" * (i * 37)


def make_tree(root, users=USERS, owner=(1234, 2345)):
    """ROOT/<user>/Maildir with folders, messages in cur/ and new/, control files."""
    uid, gid = owner if os.geteuid() == 0 else (None, None)
    for u, (user, folders) in enumerate(sorted(users.items())):
        base = os.path.join(root, user, "Maildir")
        for f, (folder, count) in enumerate(sorted(folders.items())):
            fdir = make_folder(base, folder)
            lines = []
            for i in range(count):
                unique = "17000{}{}{:02d}.M{}P{}.mail.cacert.test,S={}".format(
                    u, f, i, i * 7, 100 + i, 1000 + i)
                if i % 4 == 3:
                    sub, name = "new", unique
                else:
                    sub, name = "cur", unique + ":2," + ("S" if i % 2 else "RS")
                write(os.path.join(fdir, sub, name), message_bytes(user, folder, i),
                      1_600_000_000_123_456_789 + i * 1_000_000_007, 0o600 if i % 3 else 0o640,
                      uid, gid)
                lines.append("{} {}".format(i + 1, unique))
            write_folder_control(
                fdir, folder, ("3 V1700000000 N{} G0123456789abcdef\n".format(count + 1)
                               + "\n".join(lines) + "\n").encode(),
                1_700_000_000_000_000_000, uid, gid)
        write(os.path.join(base, "dovecot-keywords"), b"0 $Junk\n", 1_700_000_001_000_000_000,
              0o600, uid, gid)
        write(os.path.join(base, "subscriptions"),
              "".join(f[1:] + "\n" for f in folders if f).encode(), 1_700_000_002_000_000_000,
              0o600, uid, gid)
        write(os.path.join(base, "dovecot-uidvalidity.65f00000"), b"", 1_700_000_003_000_000_000,
              0o444, uid, gid)
        write(os.path.join(base, "dovecot-uidvalidity"), b"65f00000\n",
              1_700_000_003_000_000_000, 0o600, uid, gid)
        # an index file: a cache Dovecot rebuilds, deliberately not backed up
        write(os.path.join(base, "dovecot.index.log"), b"idx", 1_700_000_004_000_000_000)
        if uid is not None:
            for dirpath, dirnames, _files in os.walk(os.path.join(root, user)):
                os.chown(dirpath, uid, gid)
        for dirpath, dirnames, _files in os.walk(os.path.join(root, user), topdown=False):
            os.chmod(dirpath, 0o700)
            os.utime(dirpath, ns=(1_650_000_000_000_000_000, 1_650_000_000_000_000_000))


def snapshot_tree(root, skip_index=True):
    """relpath -> (type, bytes or link, mode, uid, gid, mtime_ns) for everything under root.

    Directory mtimes are left out of the comparison for directories (restoring tmp files
    inside them is allowed to bump nothing else, but a test can ask for them separately).
    """
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if skip_index and name.startswith("dovecot.index"):
                continue
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                content = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                content = ("dir", None)
            else:
                with open(path, "rb") as f:
                    content = ("file", f.read())
            out[rel] = content + (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                                  st.st_mtime_ns)
    return out


def message_paths(root):
    """The paths of every message (files in cur/ and new/) under ROOT, sorted."""
    found = []
    for dirpath, _dirs, files in os.walk(root):
        if os.path.basename(dirpath) in ("cur", "new"):
            found.extend(os.path.join(dirpath, f) for f in files)
    return sorted(found)


def flip_bit(path, position):
    """Damage a pack file in place: one bit of the byte at `position` flipped."""
    with open(path, "r+b") as f:
        f.seek(position)
        byte = f.read(1)
        f.seek(position)
        f.write(bytes([byte[0] ^ 0x40]))


def pack_files(repo):
    """The pack files of a backup repository (at least one)."""
    packs = sorted(os.path.join(d, f) for d, _, fs in os.walk(os.path.join(str(repo), "packs"))
                   for f in fs)
    assert packs
    return packs


def locate_message(repo_path, key, user, name_part):
    """(name, object id, pack, offset, length) of `user`'s message whose file name contains
    `name_part` (a LIKE pattern) in a backup repository."""
    from mailstore.backup.repository import Repository
    with Repository(repo_path, key_file=key) as r:
        return r.db.execute(
            "SELECT m.name, o.id, o.pack, o.offset, o.length FROM messages m JOIN objects o"
            " ON o.id = m.object WHERE m.user = ? AND m.name LIKE ?",
            (user, "%" + name_part + "%")).fetchone()
