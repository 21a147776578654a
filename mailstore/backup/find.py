"""`find`: which snapshots hold the mail an operator is looking for.

The operator's question is "restore the mail about X that alice deleted last week": search the
catalog by user, folder, date, From and Subject (decoded at backup time) and answer with the
newest snapshot that still holds each matching message, plus the message id that
`restore --message` takes (the unique part of its file name).
"""
import time

from mailstore import maildir
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
        where, args = [], []
        if user is not None:
            where.append("m.user = ?")
            args.append(user)
        if folder is not None:
            where.append("m.folder = ?")
            args.append(folder)
        date_expr = "coalesce(o.hdr_date, m.mtime_ns / 1000000000)"
        if since is not None:
            where.append(date_expr + " >= ?")
            args.append(int(since))
        if until is not None:
            where.append(date_expr + " < ?")
            args.append(int(until))
        rows = repo.db.execute(
            "SELECT m.user, m.folder, m.uniq, m.name, m.size, " + date_expr + ","
            " o.hdr_from, o.hdr_subject, max(s.snapshot), min(s.snapshot), count(DISTINCT"
            " s.snapshot) FROM messages m JOIN snapshot_messages s ON s.message = m.id"
            " LEFT JOIN objects o ON o.id = m.object" +
            (" WHERE " + " AND ".join(where) if where else "") +
            " GROUP BY m.user, m.folder, m.uniq", args).fetchall()
        snapshot_ids = dict(repo.db.execute("SELECT seq, id FROM snapshots"))
        found = []
        for r in rows:
            hdr_from, hdr_subject = repo.codec.unseal(r[6]), repo.codec.unseal(r[7])
            if sender is not None and sender.lower() not in (hdr_from or "").lower():
                continue
            if subject is not None and subject.lower() not in (hdr_subject or "").lower():
                continue
            found.append({
                "snapshot": snapshot_ids[r[8]], "first_snapshot": snapshot_ids[r[9]],
                "snapshots": r[10], "user": r[0], "folder": maildir.folder_display(r[1]),
                "message": r[2], "name": r[3], "size": r[4], "date": r[5],
                "from": hdr_from, "subject": hdr_subject})
    found.sort(key=lambda f: (-(f["date"] or 0), f["user"], f["message"]))
    return found[:limit] if limit else found


def format_date(t):
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t is not None else "-"
