"""Helpers for the migration tests: build Maildir trees, mutate them like Dovecot, compare."""
import os
import stat

FOLDERS = ("", ".Sent", ".A.B")


def write(path, data=b"x", mtime_ns=1_600_000_000_000_000_000, mode=0o600):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def make_user(root, user, messages, control=True):
    """messages: iterable of (folder, subdir, unique, flags, data, mtime_ns)."""
    md = os.path.join(root, user, "Maildir")
    for folder in FOLDERS:
        for sub in ("new", "cur", "tmp"):
            os.makedirs(os.path.join(md, folder, sub), exist_ok=True)
        if control:
            write(os.path.join(md, folder, "dovecot-uidlist"), b"3 V1 N1\n")
            if folder:
                write(os.path.join(md, folder, "maildirfolder"), b"")
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
