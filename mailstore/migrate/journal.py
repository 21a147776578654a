"""The migration's journal: per-user facts that survive any interruption.

``TARGET_ROOT/.mailstore-migrate/journal.jsonl``, one JSON object per line, fsynced: "claim"
(this migration created TARGET_ROOT/<user>, so it may delete in it), "rename" (about to
rename), "done" (verified; later runs leave the user alone, because mail may already be
delivered to the target).
"""
import json
import os
import time
from typing import Dict, List, Optional

from mailstore.migrate.execute import STATE_DIR


JOURNAL = "journal.jsonl"


class Journal:
    """Append-only per-user facts, fsynced, tolerant of a torn last line (kill -9)."""

    def __init__(self, target_root: str):
        self.dir = os.path.join(target_root, STATE_DIR)
        self.path = os.path.join(self.dir, JOURNAL)
        self.events: List[dict] = []
        try:
            with open(self.path, "rb") as f:
                for line in f:
                    try:
                        self.events.append(json.loads(line))
                    except ValueError:
                        pass        # torn by a kill in the middle of a write
        except FileNotFoundError:
            pass

    def record(self, event: str, user: str, **fields) -> None:
        self.record_many(event, [user], **fields)

    def record_many(self, event: str, users: List[str], per_user: Optional[Dict[str, dict]]
                    = None, **fields) -> None:
        """One write and one fsync for many users (on ext4 with data=ordered an fsync also
        flushes every dirty data block of the file system: not once per user while copying).
        ``per_user``: extra fields for some users' records. Raises OSError (ENOSPC, EIO)
        when the records could not be written whole; none of them is then recorded."""
        if not users:
            return
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        now = int(time.time())
        per_user = per_user or {}
        entries = [dict(fields, **per_user.get(u, {}), event=event, user=u, time=now)
                   for u in users]
        data = "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries).encode()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            start = os.fstat(fd).st_size
            if start and os.pread(fd, 1, start - 1) != b"\n":
                # a torn last line (kill -9 or power loss mid-append): ours starts afresh,
                # or the torn bytes would make our first record unreadable too
                data = b"\n" + data
            try:
                # write(2) that meets a full disk part-way returns a short count; the rest
                # then fails with ENOSPC (raised), rather than leaving a torn record behind
                view, written = memoryview(data), 0
                while written < len(data):
                    written += os.write(fd, view[written:])
                os.fsync(fd)
            except OSError:
                try:
                    os.ftruncate(fd, start)      # no half record stays behind
                except OSError:
                    pass
                raise
        finally:
            os.close(fd)
        self.events.extend(entries)

    def has(self, event: str, user: str) -> bool:
        return any(e.get("event") == event and e.get("user") == user for e in self.events)

    def users(self, event: str) -> List[str]:
        return sorted({e["user"] for e in self.events if e.get("event") == event})
