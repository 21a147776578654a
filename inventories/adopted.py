"""Read the adopted data file that `python -m operations.adopt INVENTORY --write FILE` wrote.

The file is a JSON object: keys are inventory data names of inventories/group_data/all.py
with values in its shapes (etc_aliases, arbitration_rewrites, recipient_bcc, transports,
relayhost, vmail_uid, mail_root, mail_domain, container_net, container_extra_nets,
container_mounts), plus keys starting with "_" (_source, _read_at, _findings, ...) that are
notes for the operator and are dropped here.

How inventories/prod.py would use it, before its `stop_unless_valid(...)` line (the
validation then checks the adopted values like any other datum):

    from inventories import adopted
    EMAIL.update(adopted.load("inventories/email.adopted.json"))

Keys written after a value in EMAIL win over it; put deliberate overrides after the update.
`load(path, optional=True)` returns {} while the file does not exist yet (a lab that has not
adopted yet). A missing, unreadable or malformed file stops the run with one line on stderr
and exit status 2, like inventories/validate.py, before any host is contacted.
"""
import json
import sys
from pathlib import Path


def _stop(message):
    print(message, file=sys.stderr)
    raise SystemExit(2)


def parse(text, source="adopted data"):
    """The inventory data of the file's `text` ("_" keys dropped); ValueError on a bad one."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{source}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{source}: not a JSON object of inventory data")
    bad = [k for k in data if not isinstance(k, str) or not k]
    if bad:
        raise ValueError(f"{source}: empty key(s)")
    return {key: value for key, value in data.items() if not key.startswith("_")}


def load(path, optional=False):
    """The adopted inventory data in `path`, without its "_" keys.

    + path: the file `operations.adopt --write` wrote (relative to the working directory)
    + optional: return {} when the file does not exist instead of stopping
    """
    file = Path(path)
    if not file.is_file():
        if optional and not file.exists():
            return {}
        _stop(f"{path}: adopted data file not found (write it with "
              f"`python -m operations.adopt INVENTORY --write {path}`)")
    try:
        return parse(file.read_text(), str(path))
    except OSError as exc:
        _stop(f"{path}: cannot read the adopted data file: {exc.strerror}")
    except (ValueError, UnicodeDecodeError) as exc:
        _stop(" ".join(str(exc).split()))
