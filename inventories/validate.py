"""Validation of the inventory, on the control machine, before any host is touched.

pyinfra reads the inventory file before it connects anywhere, so inventories/prod.py and
inventories/lab.py pass each host's data through `checked()`: a bad datum or a missing or
malformed secret stops the run there, with an error naming the key or the file.
"""
import os
import runpy
from pathlib import Path

SECRETS_ENV = "CACERT_EMAIL_SECRETS"
_ALL = Path(__file__).parent / "group_data" / "all.py"


# pyinfra's own connection data may appear in a host's data beside ours.
_CONNECTION_KEYS = {"ssh_user", "ssh_key", "ssh_port", "ssh_known_hosts_file",
                    "ssh_strict_host_key_checking", "ssh_hostname", "_sudo"}


class InventoryError(Exception):
    """The inventory or a secret is unusable; the message names which and why."""


def defaults():
    """The data of group_data/all.py, as pyinfra itself will load it."""
    data = runpy.run_path(str(_ALL))
    return {k: v for k, v in data.items() if not k.startswith("_")}


def secrets_dir():
    """The secrets directory named by $CACERT_EMAIL_SECRETS; never inside the repository."""
    value = os.environ.get(SECRETS_ENV)
    if not value:
        raise InventoryError(f"${SECRETS_ENV} is not set: it must name the secrets directory")
    path = Path(value).resolve()
    if not path.is_dir():
        raise InventoryError(f"${SECRETS_ENV}={value}: not a directory")
    return path


def read_secret(name):
    """The content of one secret file, refusing a missing, empty or world-readable one."""
    path = secrets_dir() / name
    if not path.is_file():
        raise InventoryError(f"secret {path} is missing")
    if path.stat().st_mode & 0o004:
        raise InventoryError(f"secret {path} is world-readable: chmod o-r it")
    text = path.read_text()
    if not text.strip():
        raise InventoryError(f"secret {path} is empty")
    return text


def checked(group, data):
    """Return `data` (this host's overrides) after validating it merged over the defaults.

    + group: the inventory group the host is in ("infra02" or "email")
    + data: the host's own data, as given in the inventory file
    """
    merged = {**defaults(), **data}
    unknown = sorted(set(data) - set(defaults()) - _CONNECTION_KEYS)
    if unknown:
        raise InventoryError(f"unknown inventory keys: {', '.join(unknown)}")
    release = merged["debian_release"]
    if release not in ("bullseye", "bookworm", "trixie"):
        raise InventoryError(f"debian_release={release!r}: use bullseye, bookworm or trixie")
    return data
