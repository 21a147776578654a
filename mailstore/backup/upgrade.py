"""`upgrade`: a format 1 repository (config.json version 1) becomes format 2 (auth.py).

Format 1 repositories keep working as they are (nothing authenticated) until an operator
runs `mailstore backup upgrade`; it is not done by a nightly run because it reads every
object once (an hour or more on a big repository), and because what it authenticates
should first be shown sound. Under the exclusive lock:
1. check: every object a snapshot needs is read back (decrypted, decompressed, re-hashed
   against its id), every message and file row's size is its content's size, every sealed
   From/Subject value decrypts. Anything wrong: refused with one line, nothing changed.
2. one catalog transaction: each snapshot's digests and MAC, the manifest, and the sealed
   values re-sealed bound to their object and field.
3. config.json with version 2 and its MAC, written last. An interruption before it leaves a
   version 1 config.json with an authenticated catalog, which only `upgrade` opens: running
   it again finishes the work.
"""
from mailstore import maildir
from mailstore.backup import auth, catalog, lost
from mailstore.backup.auth import Authenticator
from mailstore.backup.catalog import from_db
from mailstore.backup.errors import RepositoryError
from mailstore.backup.objects import Codec, DamagedObject
from mailstore.backup.repository import Repository, write_config


def upgrade(repo_path, key_file=None, wait=0, progress=None):
    """Upgrade the repository at `repo_path` to format 2; return a summary dict (format,
    snapshots, objects read, values re-sealed). RepositoryError if it is not format 1 or
    does not pass the check (then nothing is changed)."""
    with Repository(repo_path, key_file=key_file, upgrading=True) as repo:
        if repo.version >= auth.VERSION:
            raise RepositoryError("repository {} has format {} already: nothing to "
                                  "upgrade".format(repo.path, repo.version))
        repo.lock(exclusive=True, wait=wait)
        repo.clean_up()
        db = repo.db
        catalog.create(db)
        lost.create(db)
        seqs = [r[0] for r in db.execute("SELECT seq FROM snapshots ORDER BY seq")]
        objects = _check_objects(repo, progress)
        bound = Codec(repo.key, bind_values=True)
        values = _reseal(repo, bound)
        mac_key = repo.key.mac if repo.encrypted else auth.PUBLIC_KEY
        authenticator = Authenticator(repo.path, repo.config["id"], mac_key, repo.encrypted)
        with catalog.transaction(db):
            auth.create(db)
            db.execute("DELETE FROM snapshot_auth")
            for seq in seqs:
                authenticator.seal_snapshot(db, seq, auth.message_rows(db, seq),
                                            auth.file_rows(db, seq))
            authenticator.seal_manifest(db)
            db.executemany("UPDATE objects SET hdr_from = ?, hdr_subject = ? WHERE id = ?",
                           values)
        config = dict(repo.config)
        config["version"] = auth.VERSION
        config["mac"] = auth.config_mac(config, mac_key)
        write_config(repo.path, config)
        repo.seal()     # the catalog the off-host copy gets (sealed.py)
    return {"format": auth.VERSION, "snapshots": len(seqs), "objects": objects,
            "values": len(values)}


def _check_objects(repo, progress):
    """Read back every object a snapshot needs and compare its size with every row using
    it; the number read. RepositoryError naming the problems if there are any."""
    db = repo.db
    sizes = {}
    for oid, size, user, folder, subdir, name in db.execute(
            "SELECT m.object, m.size, m.user, m.folder, m.subdir, m.name FROM messages m"
            " WHERE m.id IN (SELECT message FROM snapshot_messages)"):
        sizes.setdefault(oid, []).append((size, "{}/{}".format(user, maildir.message_relpath(
            from_db(folder), subdir, from_db(name)))))
    for oid, size, user, path in db.execute(
            "SELECT object, size, user, path FROM files WHERE object IS NOT NULL"):
        sizes.setdefault(oid, []).append((size, "{}{}".format(
            user + "/" if user else "", from_db(path))))
    located = dict((r[0], r[1:]) for r in db.execute(
        "SELECT id, pack, offset, length FROM objects"))
    problems = []
    read = 0
    for oid in sorted(sizes, key=lambda o: located.get(o, ("", 0, 0))):
        uses = sizes[oid]
        try:
            if oid not in located:
                raise DamagedObject("not in the catalog")
            data = repo.read_at(oid, *located[oid])
        except DamagedObject as e:
            problems.append("{} (object {}): {}".format(uses[0][1], oid, e))
            continue
        read += 1
        for size, where in uses:
            if size != len(data):
                problems.append("{}: the catalog says {} bytes, its object {} holds {}".format(
                    where, size, oid, len(data)))
        if progress and read % 20000 == 0:
            progress("{} of {} objects read".format(read, len(sizes)))
    if problems:
        raise RepositoryError(
            "repository {} not upgraded, nothing changed: {} problem{} found, the first: {} "
            "(see `mailstore backup verify --read-data`)".format(
                repo.path, len(problems), "" if len(problems) == 1 else "s", problems[0]))
    return read


def _reseal(repo, bound):
    """(from, subject, id) of every object with sealed values, re-sealed bound to their
    object and field; RepositoryError naming a value that does not decrypt."""
    if not repo.encrypted:
        return []
    values = []
    for oid, h_from, h_subject in repo.db.execute(
            "SELECT id, hdr_from, hdr_subject FROM objects WHERE hdr_from IS NOT NULL"
            " OR hdr_subject IS NOT NULL"):
        texts = []
        for value, field in ((h_from, "from"), (h_subject, "subject")):
            try:
                text = repo.codec.unseal(value, oid, field, bound=False)
            except DamagedObject:
                try:        # re-sealed already by an interrupted upgrade
                    text = repo.codec.unseal(value, oid, field, bound=True)
                except DamagedObject as e:
                    raise RepositoryError("repository {} not upgraded, nothing changed: "
                                          "{}".format(repo.path, e)) from None
            texts.append(bound.seal(text, oid, field))
        values.append((texts[0], texts[1], oid))
    return values
