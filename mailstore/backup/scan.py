"""How a run scans the source: a full scan, or an incremental one that trusts the previous
snapshot for names it has seen before.

The Maildir rule this relies on (docs/architecture.md): a message file is written once (in tmp/,
then renamed into new/) and never changed afterwards; Dovecot only renames it (flags, new ->
cur) or deletes it. So a name that the previous snapshot saw in the same new/ or cur/ directory
is the same file, with the same content, owner, mode and mtime.

- Full scan (maildir.scan_user): one lstat per file. Used for the first snapshot, when the
  previous snapshot has no scan state (made by an older mailstore, or the state is missing),
  when the source root changed, on request (`run(full_scan=True)`, `backup run --full-scan`)
  and whenever the last full scan is FULL_SCAN_INTERVAL old (the nightly job does one a week).
  It is what records changes the incremental scan by design does not look for: a message whose
  owner, mode or mtime was changed in place (`chown -R` after moving a store), or a file
  rewritten under the same name (no mail software does that; see `verify --read-data` for the
  repository side).
- Incremental scan (maildir.rescan_user): every message directory known from the previous
  snapshot is listed (names only, no lstat); names seen there reuse its catalog row unopened
  and unstat'ed; only names not seen before (new mail, flag renames, moves) are lstat'ed, and
  feed.py then finds renamed and moved messages by (unique name, size, mtime, inode).
  Directories the previous snapshot did not have are scanned in full. A directory is not even
  listed when all of these hold: its inode and ctime are what the previous run saw when it
  stat'ed the directory BEFORE listing it (so no entry was added, removed or renamed since,
  and nobody reset its mtime with utime(2): that moves the ctime), its mtime is unchanged, and
  that mtime is more than a second older than the previous scan's start (a directory changed
  in the same timestamp tick as it was listed keeps its mtime; it is listed again).

Everything that is not a message (control files, directories, the user's other files) is
stat'ed on every run, and control files are re-read whenever their size or mtime moved.
"""
import itertools
import json
import operator
import os
import stat
import time

from mailstore import maildir
from mailstore.backup.catalog import from_db

# A full scan at least this often (seconds of the run clock): one night a week at the latest.
FULL_SCAN_INTERVAL = 7 * 86400 - 3600

# meta key holding the scan state of the newest snapshot (JSON, see ScanState.meta)
META_KEY = "scan_state"


class Previous:
    """What the incremental scan of one run knows from the previous snapshot."""

    def __init__(self, scan_started_ns, dirs, dir_state, rows_by_user=None):
        self.scan_started_ns = scan_started_ns
        self.dirs = dirs                  # user -> {relpath: mtime_ns} of every directory
        self.dir_state = dir_state        # user -> {relpath: (ino, ctime_ns)} (pre-listing)
        # user -> [message row, ...] when not given to scan_user user by user
        self.rows_by_user = rows_by_user or {}


class PreviousRow(tuple):
    """A catalog row of the previous snapshot that passes for a maildir.Message.

    (id, user, folder, subdir, name, uniq, size, mtime_ns, uid, gid, mode, ino, object)
    maildir.rescan_user hands the previous scan's Message objects back for every name it
    takes over; giving it the rows themselves (with Message's attributes) means no Message
    per unchanged message is built and none is looked up: a PreviousRow in the new tree IS
    the row to reuse. Only rows whose names are text (str) qualify (see to_db).
    """
    __slots__ = ()
    folder = property(operator.itemgetter(2))
    subdir = property(operator.itemgetter(3))
    name = property(operator.itemgetter(4))
    unique = property(operator.itemgetter(5))
    size = property(operator.itemgetter(6))
    mtime_ns = property(operator.itemgetter(7))
    uid = property(operator.itemgetter(8))
    gid = property(operator.itemgetter(9))
    mode = property(operator.itemgetter(10))
    inode = property(operator.itemgetter(11))

    @property
    def info(self):
        return self[4].partition(":")[2]

    @property
    def relpath(self):
        return maildir.message_relpath(self[2], self[3], self[4])

    @property
    def key(self):
        return (self[2], self[5])

    @property
    def flags(self):
        info = self.info
        return info[2:] if info.startswith("2,") else ""

    def message(self):
        return maildir.Message(self[2], self[3], self[4], self[5], self.info, *self[6:12])


def load_meta(db):
    row = db.execute("SELECT value FROM meta WHERE key = ?", (META_KEY,)).fetchone()
    if row is None:
        return None
    try:
        meta = json.loads(row[0])
    except ValueError:
        return None
    return meta if isinstance(meta, dict) else None


def choose(db, prev_snapshot, source_root, now, full_scan=False):
    """'full' or 'incremental' and why, for a run of `source_root` at time `now`.

    `prev_snapshot`: (seq, id, source) of the newest snapshot, or None."""
    meta = load_meta(db)
    if full_scan:
        return "full", "requested"
    if prev_snapshot is None:
        return "full", "first snapshot"
    if meta is None or meta.get("snapshot") != prev_snapshot[1]:
        return "full", "no scan state for the previous snapshot"
    if prev_snapshot[2] != source_root:
        return "full", "source root changed"
    last_full = meta.get("last_full_scan")
    if not isinstance(last_full, (int, float)) or now - last_full >= FULL_SCAN_INTERVAL \
            or now < last_full:
        return "full", "weekly full scan"
    return "incremental", None


def load_previous(db, seq, meta, rows_by_user=None):
    """Previous (for incremental scans) from snapshot `seq`'s scan state (and its message
    rows by user, unless the caller gives scan_user each user's rows)."""
    dirs = {}
    for user, path, mtime_ns in db.execute(
            "SELECT user, path, mtime_ns FROM files WHERE snapshot = ? AND kind = 'dir'",
            (seq,)):
        dirs.setdefault(user, {})[from_db(path)] = mtime_ns
    dir_state = {}
    for user, path, ino, ctime_ns in db.execute(
            "SELECT user, path, ino, ctime_ns FROM scan_dirs"):
        dir_state.setdefault(user, {})[from_db(path)] = (ino, ctime_ns)
    return Previous(int(meta["scan_started_ns"]), dirs, dir_state, rows_by_user)


def _message_dirs(dirs):
    """The new/ and cur/ directories among a user's directory relpaths."""
    for rel in dirs:
        head, _sep, last = rel.rpartition("/")
        if last in maildir.MESSAGE_SUBDIRS and (
                head == maildir.MAILDIR or (head.startswith(maildir.MAILDIR + "/.")
                                            and head.count("/") == 1)):
            yield rel


def stat_dirs(user_dir, rels):
    """{relpath: (inode, ctime_ns)} of the directories that are still directories."""
    found = {}
    for rel in rels:
        try:
            st = os.lstat(os.path.join(user_dir, rel))
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            found[rel] = (st.st_ino, st.st_ctime_ns)
    return found


def scan_user(root, user, previous, previous_rows=None):
    """(tree or MaildirError, rows, dir_state) for one user; `previous_rows`: the user's rows
    in the previous snapshot (default: from `previous.rows_by_user`).

    In the tree, a message the scan took over from the previous snapshot unstat'ed is a
    PreviousRow (its catalog row); `rows` maps the few Message objects built for rows with
    non-UTF-8 names to their rows. `dir_state`: inode and ctime of the user's message
    directories, taken before they were listed, for the next run.
    """
    try:
        user_dir = maildir.user_path(root, user)
    except maildir.MaildirError as e:
        return e, {}, {}
    known = previous.dirs.get(user) if previous is not None else None
    if not known:
        # full scan; the directories are stat'ed after the scan has listed them, which is no
        # use for skipping (a change between listing and stat would go unseen), so none are
        # recorded: the next run lists every directory once and records them then
        try:
            return maildir.scan_user(root, user), {}, {}
        except maildir.MaildirError as e:
            return e, {}, {}
    message_dirs = list(_message_dirs(known))
    now_state = stat_dirs(user_dir, message_dirs)
    then_state = previous.dir_state.get(user, {})
    trust_before = previous.scan_started_ns - 1000000000
    directories = []
    for rel, mtime_ns in known.items():
        if rel in now_state and not (then_state.get(rel) == now_state[rel]
                                     and mtime_ns < trust_before):
            mtime_ns = -1           # never equal to a real mtime: list it again
        directories.append(maildir.Entry(rel, "dir", 0, mtime_ns, 0, 0, 0, 0))
    if previous_rows is None:
        previous_rows = previous.rows_by_user.get(user, ())
    # rows given as PreviousRows already (feed.previous_rows) are handed back themselves
    messages = list(previous_rows) if previous_rows and type(previous_rows[0]) is PreviousRow \
        else list(map(PreviousRow, previous_rows))
    rows = {}
    if bytes in set(map(type, itertools.chain.from_iterable(
            map(operator.itemgetter(2, 4, 5), previous_rows)))):
        # names that are not UTF-8 are stored as bytes (to_db): those rows become real
        # Messages with the str names a listing gives, mapped back to their rows (rare,
        # hence the check above at C speed before any loop in Python)
        for i, r in enumerate(previous_rows):
            if bytes in (type(r[2]), type(r[4]), type(r[5])):
                name = from_db(r[4])
                m = maildir.Message(from_db(r[2]), r[3], name, from_db(r[5]),
                                    name.partition(":")[2], *r[6:12])
                messages[i] = m
                rows[m] = tuple(r)
    prev_tree = maildir.UserTree(user, user_dir, messages, [], [], [], [], [], directories, [],
                                 [], previous.scan_started_ns)
    try:
        tree = maildir.rescan_user(root, user, prev_tree)
    except maildir.MaildirError as e:
        return e, {}, {}
    return tree, rows, now_state


def scan_started_ns():
    """The real clock (not the run's injectable one: directory mtimes come from it)."""
    return time.time_ns()


def state_meta(snapshot_id, started_ns, last_full_scan):
    return json.dumps({"snapshot": snapshot_id, "scan_started_ns": started_ns,
                       "last_full_scan": last_full_scan})
