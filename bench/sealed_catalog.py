#!/usr/bin/env python3
"""What the off-host copy's nightly pull moves for the sealed catalog, night after night.

    PYTHONPATH=$PWD python bench/sealed_catalog.py DIR [--messages 100000] [--users 50]
        [--nights 3] [--sizes small|mail]

Makes a corpus (bench/corpus.py) in DIR/corpus, an encrypted repository DIR/repo, its first
snapshot, then `--nights` times a day of IMAP traffic (corpus.mutate: 10 % flag renames,
1 % new, 1 % expunged) and a snapshot. After each snapshot it reports, as JSON lines:
- `catalog_bytes`: catalog.sqlite's size;
- `sealed_bytes`, `chunks`: the sealed catalog (manifest and chunk files), and
  `copy_bytes`: what the pull moves for it (the manifest and the chunk files the night
  before did not have: the others are hard links, rsync --link-dest);
- `v1_bytes`: the one file a format 1 sealed catalog of the same catalog is, which moved
  whole every night;
- `seal_seconds`: the run's seal (mailstore.backup.sealed.write), `v1_seal_seconds`;
  `seal_encoded`: the chunks it encoded (the groups of rows that changed and the small
  tables; it kept the others);
- `unseal_seconds`, `v1_unseal_seconds`: opening the sealed catalog with the key (what
  every list, verify and restore of a copy does first);
- `new_pack_bytes`: the night's new packs (the new data).
`--sizes small` (0.5-2 KiB messages, as bench/backup.py --scale) keeps the corpus small: the
catalog's rows depend on the number of messages, not on their sizes.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from corpus import generate, mutate  # noqa: E402

from mailstore import backup  # noqa: E402
from mailstore.backup import keys, sealed, sealed_v1  # noqa: E402
from mailstore.backup.repository import read_config  # noqa: E402


def _packs(repo):
    out = {}
    for top, _dirs, files in os.walk(os.path.join(repo, "packs")):
        for name in files:
            out[name] = os.path.getsize(os.path.join(top, name))
    return out


def _chunks(repo):
    directory = sealed.chunk_dir(repo)
    return {n: os.path.getsize(os.path.join(directory, n)) for n in sealed.chunk_files(repo)}


def _timed(fn, *args):
    started = time.monotonic()
    result = fn(*args)
    return result, time.monotonic() - started


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dir")
    p.add_argument("--messages", type=int, default=100000)
    p.add_argument("--users", type=int, default=50)
    p.add_argument("--nights", type=int, default=3)
    p.add_argument("--sizes", choices=("small", "mail"), default="small")
    a = p.parse_args(argv)
    corpus, repo, key_file = (os.path.join(a.dir, n) for n in ("corpus", "repo", "key"))
    print(json.dumps(generate(corpus, a.messages, a.users, seed=1, sizes=a.sizes)),
          flush=True)
    backup.init(repo, key_file=key_file)
    key = keys.load_key_file(key_file)
    repo_id = read_config(repo)["id"]
    seals = []
    write = sealed.write

    def timed_write(*args):
        result, seconds = _timed(write, *args)
        seals.append((seconds, result["encoded"]))
        return result
    sealed.write = timed_write
    before_chunks, before_packs = {}, _packs(repo)
    for night in range(a.nights + 1):
        if night:
            mutate(corpus, seed=night + 1, sizes=a.sizes)
        _, run_seconds = _timed(backup.run, repo, corpus, key_file)
        chunks, packs = _chunks(repo), _packs(repo)
        manifest = os.path.getsize(sealed.path_of(repo))
        v1 = os.path.join(a.dir, "v1.sealed")
        generation = sealed.read_manifest(sealed.path_of(repo), repo_id)["generation"]
        _, v1_seal = _timed(sealed_v1.write, v1, repo_id, key,
                            os.path.join(repo, "catalog.sqlite"), generation)
        (conn, _gen), unseal = _timed(sealed.open_catalog, sealed.path_of(repo), repo_id, key)
        conn.close()
        (conn, _gen), v1_unseal = _timed(sealed.open_catalog, v1, repo_id, key)
        conn.close()
        print(json.dumps({
            "night": night, "run_seconds": round(run_seconds, 1),
            "catalog_bytes": os.path.getsize(os.path.join(repo, "catalog.sqlite")),
            "sealed_bytes": manifest + sum(chunks.values()), "chunks": len(chunks),
            "copy_bytes": manifest + sum(s for n, s in chunks.items() if n not in before_chunks),
            "new_chunks": len(set(chunks) - set(before_chunks)),
            "v1_bytes": os.path.getsize(v1),
            "seal_seconds": round(seals[-1][0], 2), "seal_encoded": seals[-1][1],
            "v1_seal_seconds": round(v1_seal, 2),
            "unseal_seconds": round(unseal, 2), "v1_unseal_seconds": round(v1_unseal, 2),
            "new_pack_bytes": sum(s for n, s in packs.items() if n not in before_packs)}),
            flush=True)
        os.unlink(v1)
        before_chunks, before_packs = chunks, packs


if __name__ == "__main__":
    main()
