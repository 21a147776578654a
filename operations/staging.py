"""Render a service's files, validate the new set in a staging directory, only then install it.

Every service repeats one pattern: its configuration is several files that only make sense
together (main.cf with master.cf, dovecot.conf with its SQL file), a validator that can read a
staged copy (`postfix -c DIR check`, `doveconf -c FILE -n`), and a reload. `files()` does the
first two in ONE operation, in this order on the server:

1. upload the whole set into an empty staging directory (0700, root);
2. run the validator against the staged copy — if it fails, the operation fails with the
   validator's output and the live files are untouched (a reboot still meets the old config);
3. move each changed file into place atomically (install to `<dest>.new`, then rename);
4. run the files' follow-up commands (`postmap`, `postalias`) for the files that changed.

The caller reloads its service with `_if=op.did_change`. Nothing is uploaded, validated or
reloaded when every live file already has the wanted content, owner and mode. With `--diff`
the changes of world-readable files are shown; files not readable by all (database
passwords) are only named.
"""
import hashlib
import posixpath
from io import StringIO
from pathlib import Path
from typing import NamedTuple, Optional

import jinja2
from pyinfra import host, logger, state
from pyinfra.api import FileUploadCommand, QuoteString, StringCommand, operation
from pyinfra.facts.files import File, FileContents, Sha1File
from pyinfra.operations.util.files import generate_color_diff

from operations.defaults import defaults

REPO = Path(__file__).resolve().parent.parent
# Staging directories live here, one per service, outside the directories daemons read.
STAGING_ROOT = "/var/lib/cacert-deploy/staging"

_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(REPO)),
    undefined=jinja2.StrictUndefined,   # a missing datum is an error, never an empty string
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _sql_literal(value):
    """A MariaDB string literal (for seed data; the values are validated addresses anyway)."""
    from pymysql.converters import escape_string
    return "'" + escape_string(str(value)) + "'"


_TEMPLATES.filters["sql"] = _sql_literal


def data_context(data):
    """Every inventory datum (group_data/all.py's keys) of `data`, for templates."""
    return {key: getattr(data, key) if not isinstance(data, dict) else data[key]
            for key in defaults()}


def render(template, **context):
    """The text of `template` (a path relative to the repository) with `context`."""
    return _TEMPLATES.get_template(template).render(**context)


class ConfigFile(NamedTuple):
    """One file of a set: its final path, content and ownership, and what to run after it."""

    dest: str
    content: str
    mode: str = "644"
    user: str = "root"
    group: str = "root"
    # Shell command to run once this file is in place (e.g. `postmap <dest>`), and the file that
    # command produces: if that product is missing, the command runs again even when the file
    # itself is unchanged (so an interrupted run is finished by the next one).
    then: Optional[str] = None
    product: Optional[str] = None


def _sha1(text):
    return hashlib.sha1(text.encode()).hexdigest()


def _q(value):
    return QuoteString(value)


def _show_diff(config):
    """Log what will change in `config` (for `--diff`), never the content of a secret file."""
    host.log(f"Will replace {config.dest} (validated first)", logger.info)
    if config.mode[-1] not in "4567":
        logger.info("  (not world-readable: content not shown)")
        return
    current = [line + "\n" for line in host.get_fact(FileContents, path=config.dest) or []]
    for line in generate_color_diff(current, config.content.splitlines(keepends=True)):
        logger.info("  %s", line)


@operation()
def files(config_files, stage, check=None):
    """Install `config_files` together, after `check` accepted the staged copy.

    + config_files: list of ConfigFile (distinct file names: they share the staging directory)
    + stage: staging directory on the server, emptied and refilled on every change
    + check: shell command validating the staged set; `{stage}` is replaced by its path
    """
    names = [posixpath.basename(f.dest) for f in config_files]
    if len(set(names)) != len(names):
        raise ValueError(f"staging.files: file names must be distinct, got {names}")

    changed, ownership, rerun = [], [], []
    for config in config_files:
        live = host.get_fact(File, path=config.dest)
        if not live or host.get_fact(Sha1File, path=config.dest) != _sha1(config.content):
            changed.append(config)
            continue
        if (str(live["mode"]), live["user"], live["group"]) != \
                (config.mode, config.user, config.group):
            ownership.append(config)
        if config.then and config.product and not host.get_fact(File, path=config.product):
            rerun.append(config)

    if not (changed or ownership or rerun):
        host.noop(f"{len(config_files)} file(s) up to date")
        return

    if getattr(state.config, "DIFF", False):
        for config in changed:
            _show_diff(config)

    if changed:
        yield StringCommand("rm", "-rf", _q(stage), "&&", "install", "-d", "-m", "700", _q(stage))
        for config, name in zip(config_files, names):
            staged = f"{stage}/{name}"
            yield FileUploadCommand(StringIO(config.content), staged,
                                    remote_temp_filename=host.get_temp_filename(staged))
            yield StringCommand("chmod", "600", _q(staged))
        if check:
            yield check.format(stage=stage)
        for config in changed:
            staged = f"{stage}/{posixpath.basename(config.dest)}"
            new = f"{config.dest}.new"
            yield StringCommand(
                "install", "-D", "-o", config.user, "-g", config.group, "-m", config.mode,
                _q(staged), _q(new), "&&", "mv", "-f", _q(new), _q(config.dest))
    for config in ownership:
        yield StringCommand("chown", f"{config.user}:{config.group}", _q(config.dest), "&&",
                            "chmod", config.mode, _q(config.dest))
    for config in changed + rerun:
        if config.then:
            yield config.then
