"""The off-host copy: what it is served, and what can be checked of it without the key.

A copy held by someone else (the backup host, operations/backup_host.py) must reveal no user,
folder or file name, no From/Subject/Date, no owner and no content id of an encrypted
repository: at most the number and sizes of its files. So it gets config.json, the packs
(objects encrypted, ids keyed: objects.py; pack names random) and the sealed catalog
(sealed.py: catalog.sealed and its chunk files in sealed/, named by a keyed hash), never
catalog.sqlite nor the index cache. An unencrypted repository has nothing
to keep from the copy's holder (its objects are plain): it is served whole, as before, but
for the lock, tmp/ and the serving view itself.

- `served_paths(repo)`: that list; `export(repo)` hard-links it into REPO/offhost-view, which
  the server's forced command (mailstore-backup-serve) hands to `rrsync -ro`, under the
  repository's lock (the view is made anew each time and removed afterwards, or by the next
  run's clean-up).
- `unseal(copy)`: a copy put back on the server (a rebuild) becomes a whole repository again.
- `verify_copy(copy, previous)`: the copy job's check without the key: config.json, the
  sealed catalog's framing (a truncated or cut file, another repository's, a damaged header;
  every chunk file its manifest lists there, of its length and SHA-256),
  every pack's framing (a masked pack, objects.py: its magic and the checksum at its end; an
  older clear one: records of the lengths their headers say, end to end), and,
  given the previous night's copy, that the sealed catalog did not go back to an older one
  (`compare_previous`). A changed byte inside a sealed chunk or a record shows with the key
  only (`verify --key-file`, `restore`).
"""
import hashlib
import os
import re
import shutil
import sqlite3

from mailstore.backup import sealed
from mailstore.backup.auth import CatalogDamaged
from mailstore.backup.errors import KeyFileError, RepositoryError
from mailstore.backup.objects import HEADER, MAGIC, PACK_MAGIC, TRAILER_BYTES, fsync_dir
from mailstore.backup.repository import OFFHOST_VIEW, Repository, read_config

_PACK_DIR = re.compile(r"^[0-9a-f]{2}$")
_PACK = re.compile(r"^[0-9a-f]{32}\.pack$")
# never served from an unencrypted repository either: the lock, packs being written, the view
_NEVER = ("lock", "tmp", OFFHOST_VIEW)


def seal(repo_path, key_file=None, wait=0):
    """Write the sealed catalog of an encrypted repository now (every run and prune does it
    too); {"generation", "bytes" (the manifest and its chunk files), "chunks", "encoded"
    (the chunks this seal encoded: those whose rows changed since the last seal, and the
    small tables; the others were kept), "encoded_bytes" (their rows' plain bytes)}."""
    with Repository(repo_path, key_file=key_file) as repo:
        if not repo.encrypted:
            raise KeyFileError("repository {} is not encrypted: its catalog cannot be sealed "
                               "(an off-host copy of it is the whole repository)".format(
                                   repo.path))
        repo.lock(exclusive=True, wait=wait)
        result = repo.seal()
        info = sealed.read_manifest(sealed.path_of(repo.path), repo.config["id"])
    return dict(result, bytes=info["bytes"], chunks=info["chunks"])


def unseal(repo_path, key_file=None):
    """Make a copy whose catalog is sealed a whole repository again (a rebuild: the copy put
    back on the server): its sealed catalog, authenticated with the key, is written out as
    catalog.sqlite (never over one), and tmp/ is made; the next `run` writes to it.
    {"generation", "snapshots"}."""
    repo_path = os.fspath(repo_path)
    if not is_sealed_copy(repo_path):
        raise RepositoryError("repository {} {}: nothing to unseal".format(
            repo_path, "has a catalog.sqlite already" if os.path.lexists(
                os.path.join(repo_path, "catalog.sqlite")) else "has no sealed catalog"))
    final = os.path.join(repo_path, "catalog.sqlite")
    tmp = final + ".unsealed"
    with Repository(repo_path, key_file=key_file) as repo:
        repo.check_catalog()        # the list of snapshots, before anything trusts it
        snapshots, = repo.db.execute("SELECT count(*) FROM snapshots").fetchone()
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        try:
            target = sqlite3.connect(tmp)
            try:
                repo.db.backup(target)
            finally:
                target.close()
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.link(tmp, final)     # never over a catalog.sqlite made meanwhile
        finally:
            os.unlink(tmp)
        generation = repo.sealed_generation
    os.makedirs(os.path.join(repo_path, "tmp"), mode=0o700, exist_ok=True)
    fsync_dir(repo_path)
    return {"generation": generation, "snapshots": snapshots}


def is_sealed_copy(repo_path):
    """Does `repo_path` hold a sealed catalog and no clear one (an off-host copy)?"""
    return not os.path.lexists(os.path.join(repo_path, "catalog.sqlite")) and \
        os.path.lexists(sealed.path_of(repo_path))


def served_paths(repo_path):
    """The files (relative paths, sorted) an off-host copy of the repository gets.
    RepositoryError if an encrypted repository has no sealed catalog yet."""
    repo_path = os.fspath(repo_path)
    config = read_config(repo_path)
    if config["encryption"] == "none":
        return sorted(_all_files(repo_path))
    if not os.path.isfile(sealed.path_of(repo_path)):
        raise RepositoryError(
            "repository {} has no sealed catalog ({}) for the off-host copy yet: every "
            "`mailstore backup run` writes it, or now: `mailstore backup seal {} --key-file "
            "K`; nothing served".format(repo_path, sealed.NAME, repo_path))
    paths = ["config.json", sealed.NAME]
    paths += ["{}/{}".format(sealed.DIR, name) for name in sealed.chunk_files(repo_path)]
    packs = os.path.join(repo_path, "packs")
    for sub in sorted(os.listdir(packs)):
        if not _PACK_DIR.match(sub) or not os.path.isdir(os.path.join(packs, sub)):
            continue
        for name in sorted(os.listdir(os.path.join(packs, sub))):
            if _PACK.match(name) and _regular(os.path.join(packs, sub, name)):
                paths.append("packs/{}/{}".format(sub, name))
    return sorted(paths)


def _regular(path):
    return os.path.isfile(path) and not os.path.islink(path)


def _all_files(repo_path):
    for top, dirs, files in os.walk(repo_path):
        rel_top = os.path.relpath(top, repo_path)
        if rel_top == ".":
            dirs[:] = [d for d in dirs if d not in _NEVER]
            files = [f for f in files if f not in _NEVER]
        for name in files:
            if _regular(os.path.join(top, name)):
                yield os.path.normpath(os.path.join(rel_top, name))


def export(repo_path):
    """Hard-link what the off-host copy gets into REPO/offhost-view (made anew); its path.
    Takes no lock: the caller holds the repository's (the serve script's flock)."""
    repo_path = os.fspath(repo_path)
    paths = served_paths(repo_path)
    view = remove_view(repo_path)
    os.mkdir(view, 0o700)
    for rel in paths:
        target = os.path.join(view, rel)
        parent = os.path.dirname(target)
        if not os.path.isdir(parent):
            os.makedirs(parent, mode=0o700)
        os.link(os.path.join(repo_path, rel), target)
    return view


def remove_view(repo_path):
    """Remove REPO/offhost-view if it is there; its path."""
    view = os.path.join(os.fspath(repo_path), OFFHOST_VIEW)
    if os.path.lexists(view):
        shutil.rmtree(view)
    return view


def verify_copy(repo_path, previous=None):
    """The key-less check of a copy whose catalog is sealed (see the module doc). Returns
    verify()'s keys (`damaged` etc. empty, `catalog` "sealed, framing only (no key)") plus
    `problems` (text, each makes `ok` False), `sealed` (sealed.read_manifest()'s dict, but
    `problems`, or None), `packs`."""
    repo_path = os.fspath(repo_path)
    config = read_config(repo_path)
    problems, warnings = [], []
    info = None
    try:
        info = sealed.read_manifest(sealed.path_of(repo_path), config["id"])
        problems += info.pop("problems")
    except CatalogDamaged as e:
        problems.append(str(e))
    except OSError as e:
        problems.append("cannot read {}: {}".format(sealed.path_of(repo_path),
                                                    e.strerror or e))
    packs = records = 0
    packs_dir = os.path.join(repo_path, "packs")
    for sub in sorted(os.listdir(packs_dir)) if os.path.isdir(packs_dir) else ():
        for name in sorted(os.listdir(os.path.join(packs_dir, sub))):
            count, problem = _walk_pack(os.path.join(packs_dir, sub, name))
            packs += 1
            records += count
            if problem:
                problems.append("pack {}/{}: {}".format(sub, name, problem))
    if previous is not None and info is not None:
        more, notes = compare_previous(repo_path, previous, info)
        problems += more
        warnings += notes
    return {"ok": not problems, "catalog": "sealed, framing only (no key)",
            "snapshots": 0, "objects": records, "read": 0, "damaged": [],
            "missing_packs": [], "pack_size_mismatch": [], "recorded": False,
            "warnings": warnings, "problems": problems, "sealed": info, "packs": packs}


def _walk_pack(path):
    """(records, problem or None): the pack at `path` is whole records, end to end (a masked
    one: whole, its records not counted: they cannot be told apart without the key)."""
    try:
        size = os.lstat(path).st_size
        if not _regular(path):
            return 0, "not a regular file"
        count = offset = 0
        with open(path, "rb") as f:
            if f.read(len(PACK_MAGIC)) == PACK_MAGIC:
                return 0, _masked_pack_problem(f, size)
            while offset < size:
                f.seek(offset)
                head = f.read(HEADER.size)
                if len(head) < HEADER.size or head[:len(MAGIC)] != MAGIC:
                    return count, "no record at offset {} (damaged or truncated)".format(offset)
                offset += HEADER.size + HEADER.unpack(head)[3]
                count += 1
    except OSError as e:
        return 0, "cannot read it: {}".format(e.strerror or e)
    if offset != size:
        return count, "truncated: its last record ends at {}, the file at {}".format(
            offset, size)
    if count == 0:
        return 0, "empty"
    return count, None


def _masked_pack_problem(f, size):
    """None if the masked pack open as `f` (read past its magic) matches its checksum."""
    if size < len(PACK_MAGIC) + TRAILER_BYTES:
        return "truncated: {} bytes, too short for a pack".format(size)
    h = hashlib.sha256(PACK_MAGIC)
    left = size - len(PACK_MAGIC) - TRAILER_BYTES
    while left:
        chunk = f.read(min(left, 1 << 20))
        if not chunk:
            return "truncated while read"
        h.update(chunk)
        left -= len(chunk)
    if f.read(TRAILER_BYTES) != h.digest():
        return "damaged or truncated: its bytes do not match the checksum at its end"
    return None


def compare_previous(repo_path, previous, info=None):
    """(problems, warnings): the sealed catalog of `repo_path` against that of `previous`, the
    copy made before it. Its generation must not be smaller; the same generation must be the
    same bytes. A previous copy without a sealed catalog (made before copies were sealed) or
    of another repository is only a warning."""
    previous = os.fspath(previous)
    theirs = sealed.path_of(previous)
    if not os.path.exists(theirs):
        return [], ["previous copy {} has no sealed catalog: not compared".format(previous)]
    config = read_config(repo_path)
    if info is None:
        info = sealed.read_manifest(sealed.path_of(repo_path), config["id"])
    try:
        old = sealed.read_manifest(theirs, config["id"])
    except CatalogDamaged as e:
        return [], ["previous copy not compared: {}".format(e)]
    if info["generation"] < old["generation"]:
        return ["sealed catalog {} is generation {}, older than the previous copy's ({} in "
                "{}): an older catalog was served or put in".format(
                    sealed.path_of(repo_path), info["generation"], old["generation"],
                    previous)], []
    if info["generation"] == old["generation"] and info["sha256"] != old["sha256"]:
        return ["sealed catalog {} is generation {} like the previous copy's ({}) but not the "
                "same file: one of them was changed".format(
                    sealed.path_of(repo_path), info["generation"], previous)], []
    return [], []
