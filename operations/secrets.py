"""The secrets directory on the control machine, and the error every inventory check raises.

Secrets (certificates' keys, passwords, the backup key, the Icinga ticket) live in the
directory named by $CACERT_EMAIL_SECRETS, never in the repository. The validator
(inventories/validate.py) reads them before any host is touched; the operations read them
again when they upload them. Both import from here, and this module imports nothing of
either, so the validator may call the operations' own data checks without a circle, and
every import between inventories/ and operations/ points from the inventories down.
"""
import os
import re
from pathlib import Path

SECRETS_ENV = "CACERT_EMAIL_SECRETS"


class InventoryError(Exception):
    """The inventory or a secret is unusable; the message names which and why."""


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
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError(f"secret {path} is unreadable: {exc}") from None
    if not text.strip():
        raise InventoryError(f"secret {path} is empty")
    return text


def read_password(name):
    """A password secret: one line (a trailing newline is allowed and dropped).

    Passwords end up in Postfix's and Dovecot's map files and in SQL, so quotes, backslashes,
    whitespace and control characters are refused rather than escaped in three dialects.
    """
    path = secrets_dir() / name
    value = read_secret(name)
    if value.endswith("\n"):
        value = value[:-1]
    if "\n" in value or "\r" in value:
        raise InventoryError(f"secret {path}: a password must be a single line")
    bad = sorted({c for c in value if c in "'\"`\\" or c.isspace() or not c.isprintable()})
    if bad:
        raise InventoryError(f"secret {path}: characters not allowed in a password: "
                             f"{', '.join(repr(c) for c in bad)}")
    return value


def read_backup_key(name):
    """The backup repository's key secret: 64 hex digits on one line (mailstore's key file
    format, `openssl rand -hex 32`); the text is returned as it goes to the server."""
    path = secrets_dir() / name
    value = read_secret(name).strip()
    if not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise InventoryError(f"secret {path}: a backup key must be 64 hex digits on one line "
                             "(make one with `openssl rand -hex 32`)")
    return value + "\n"
