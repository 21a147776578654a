"""Small, explicit Maildir trees for the backup tests, and a full tree comparison."""
import os
import stat

USERS = {
    "alice": {"": 6, ".Sent": 3, ".Archive.2024": 2},
    "bob": {"": 4, ".Trash": 1},
}


def message_bytes(user, folder, i, extra=b""):
    subject = "=?utf-8?q?R=C3=A9union?= {} {}".format(folder[1:] or "INBOX", i)
    return ("From: Sender {i} <sender{i}@example.org>\r\nTo: {u}@cacert.test\r\n"
            "Subject: {s}\r\nDate: Tue, {d:02d} Nov 2026 10:00:00 +0000\r\n"
            "Message-ID: <{u}.{i}@example.org>\r\n\r\nHello {u}, message {i} in {f}.\r\n"
            .format(i=i, u=user, s=subject, d=1 + i % 28, f=folder or "INBOX")
            ).encode() + extra + b"x" * (i * 37)


def write(path, data, mtime, mode=0o600, uid=None, gid=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    if uid is not None:
        os.chown(path, uid, gid)
    os.utime(path, ns=(mtime, mtime))


def make_tree(root, users=USERS, owner=(1234, 2345)):
    """ROOT/<user>/Maildir with folders, messages in cur/ and new/, control files."""
    uid, gid = owner if os.geteuid() == 0 else (None, None)
    for u, (user, folders) in enumerate(sorted(users.items())):
        base = os.path.join(root, user, "Maildir")
        uidlists = {}
        for f, (folder, count) in enumerate(sorted(folders.items())):
            fdir = os.path.join(base, folder) if folder else base
            for sub in ("cur", "new", "tmp"):
                os.makedirs(os.path.join(fdir, sub), exist_ok=True)
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
            uidlists[folder] = lines
            write(os.path.join(fdir, "dovecot-uidlist"),
                  ("3 V1700000000 N{} G0123456789abcdef\n".format(count + 1)
                   + "\n".join(lines) + "\n").encode(), 1_700_000_000_000_000_000, 0o600,
                  uid, gid)
            if folder:
                write(os.path.join(fdir, "maildirfolder"), b"", 1_700_000_000_000_000_000,
                      0o600, uid, gid)
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
    """The pack files of a repository (at least one)."""
    packs = sorted(os.path.join(d, f) for d, _, fs in os.walk(os.path.join(str(repo), "packs"))
                   for f in fs)
    assert packs
    return packs
