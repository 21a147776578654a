"""`find`: which snapshots hold the mail an operator is looking for.

The operator's question is "restore the mail about X that alice deleted last week": search the
catalog by user, folder, date, From and Subject (decoded at backup time) and answer with the
newest snapshot that still holds each matching message, plus the message id that
`restore --message` takes (the unique part of its file name).
"""
import time

from mailstore import maildir
from mailstore.backup.auth import CatalogDamaged
from mailstore.backup.catalog import from_db, to_db
from mailstore.backup.objects import DamagedObject
from mailstore.backup.repository import Repository
from mailstore.backup.restore import normalise_folder


def find(repo_path, key_file=None, user=None, folder=None, since=None, until=None,
         sender=None, subject=None, limit=None):
    """Matching messages, newest date first, as dicts.

    `since`/`until`: unix times, compared with the Date header (the file mtime, which is the
    IMAP INTERNALDATE, when the header is missing or bad). `sender`/`subject`: case-insensitive
    substrings of the decoded From/Subject. Each dict: snapshot (newest holding it), snapshots
    (how many hold it), first_snapshot, user, folder (IMAP name), message (id for
    `restore --message`), name (file name with flags), date, from, subject, size.
    """
    folder = normalise_folder(folder)
    with Repository(repo_path, key_file=key_file, readonly=True) as repo:
        db = repo.db
        # 1. messages matching user/folder, with their object's decoded headers
        where, args = [], []
        if user is not None:
            where.append("m.user = ?")
            args.append(user)
        if folder is not None:
            where.append("m.folder = ?")
            args.append(to_db(folder))
        date_expr = "coalesce(o.hdr_date, m.mtime_ns / 1000000000)"
        if since is not None:
            where.append(date_expr + " >= ?")
            args.append(int(since))
        if until is not None:
            where.append(date_expr + " < ?")
            args.append(int(until))
        headers = {}
        candidates = {}
        for mid, u, f, uniq, name, size, date, oid, h_from, h_subject in db.execute(
                "SELECT m.id, m.user, m.folder, m.uniq, m.name, m.size, " + date_expr + ","
                " m.object, o.hdr_from, o.hdr_subject FROM messages m LEFT JOIN objects o"
                " ON o.id = m.object" + (" WHERE " + " AND ".join(where) if where else ""),
                args):
            if oid not in headers:
                try:
                    headers[oid] = (repo.codec.unseal(h_from, oid, "from"),
                                    repo.codec.unseal(h_subject, oid, "subject"))
                except DamagedObject as e:
                    raise CatalogDamaged("catalog of {} damaged or tampered with: {}".format(
                        repo_path, e)) from None
            hdr_from, hdr_subject = headers[oid]
            if sender is not None and sender.lower() not in (hdr_from or "").lower():
                continue
            if subject is not None and subject.lower() not in (hdr_subject or "").lower():
                continue
            candidates[mid] = (u, from_db(f), from_db(uniq), from_db(name), size, date,
                               hdr_from, hdr_subject)
        # 2. which snapshots hold them (one pass over the snapshot lists)
        held = {}
        if candidates:
            for seq, mid in db.execute("SELECT snapshot, message FROM snapshot_messages"):
                if mid in candidates:
                    held.setdefault(mid, []).append(seq)
        snapshot_ids = dict(db.execute("SELECT seq, id FROM snapshots"))
    # 3. one answer per message (user, folder, unique name), from the rows of all snapshots
    by_message = {}
    for mid, seqs in held.items():
        u, f, uniq, name, size, date, hdr_from, hdr_subject = candidates[mid]
        entry = by_message.get((u, f, uniq))
        if entry is None:
            entry = by_message[(u, f, uniq)] = {
                "user": u, "folder": maildir.folder_display(f), "message": uniq, "name": name,
                "size": size, "date": date, "from": hdr_from, "subject": hdr_subject,
                "_seqs": set(), "_newest": -1}
        entry["_seqs"].update(seqs)
        if max(seqs) > entry["_newest"]:
            entry["_newest"] = max(seqs)
            entry["name"] = name
    found = []
    for entry in by_message.values():
        seqs = entry.pop("_seqs")
        entry.pop("_newest")
        entry["snapshot"] = snapshot_ids[max(seqs)]
        entry["first_snapshot"] = snapshot_ids[min(seqs)]
        entry["snapshots"] = len(seqs)
        found.append(entry)
    found.sort(key=lambda f: (-(f["date"] or 0), f["user"], f["message"]))
    return found[:limit] if limit else found


def format_date(t):
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t is not None else "-"
