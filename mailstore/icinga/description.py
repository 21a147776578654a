"""The description file: which checks the host has, as the deploy declares them.

Description file (plain JSON, which the deploy generates from inventory; the ``#`` notes
below are for the reader, JSON has no comments)::

    {
      "host": "email.infra.cacert.org",          # Host object on the master (must exist)
      "command_endpoint": "email.infra.cacert.org",  # agent Endpoint that runs active checks
      "mailstore": "/usr/local/bin/mailstore",   # the mailstore command on the agent (a
                                                 # string, or a list: a command prefix)
      "mailstore_by_check": {                    # optional: another command for some checks,
        "maildir": ["sudo", "-n", "-u", "vmail", "/usr/local/bin/mailstore"]},  # e.g. to
                                                 # read 0700 Maildirs as their owner
      "command_zone": "global-templates",        # optional: zone of the CheckCommands
                                                 # (a global zone syncs them to the agent)
      "service_zone": "master",                  # optional: zone of the Services
      "services": [
        {"name": "mailstore-volume",             # Service name on the host
         "check": "volume",                      # plugin: backup|cert|maildir|mailq|volume
         "args": ["/srv/mail", "-w", "15:"],     # after `mailstore check volume`
         "check_interval": 300, "retry_interval": 60, "max_check_attempts": 3,  # optional
         "display_name": "Mail volume"},         # optional
        {"name": "mailstore-backup",
         "passive": true,                        # results come from `mailstore icinga push`
         "freshness": 93600}                     # seconds without a result -> CRITICAL
      ]
    }

:func:`parse_description` validates it into a :class:`Description`; a mistake raises
:class:`DescriptionError` naming the key. What the description becomes on the master is
:mod:`mailstore.icinga.planner`'s business.
"""
import json
import re
from typing import Dict, List, NamedTuple, Optional

from mailstore.icinga.errors import DescriptionError

PLUGINS = ("backup", "cert", "crl", "maildir", "mailq", "volume")
SERVICE_DEFAULTS = {"check_interval": 300, "retry_interval": 60, "max_check_attempts": 3}
_NAME = re.compile(r"^[A-Za-z0-9_.@-][A-Za-z0-9 _.@:-]*$")


class Service(NamedTuple):
    name: str
    check: Optional[str]          # plugin, None for passive
    args: List[str]
    passive: bool
    freshness: Optional[int]
    check_interval: float
    retry_interval: float
    max_check_attempts: int
    display_name: Optional[str]


class Description(NamedTuple):
    host: str
    command_endpoint: str
    mailstore: List[str]                       # command prefix
    mailstore_by_check: Dict[str, List[str]]
    command_zone: Optional[str]
    service_zone: Optional[str]
    services: List[Service]


def _want(data, key, kind, where, optional=False, default=None):
    if key not in data or data[key] is None:
        if optional:
            return default
        raise DescriptionError("%s: missing %r" % (where, key))
    value = data[key]
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise DescriptionError("%s: %r must be %s, not %r" % (
            where, key, getattr(kind, "__name__", "a number"), value))
    return value


def _command(value, where):
    """A command: a non-empty string (one path) or a non-empty list of strings (a prefix)."""
    if isinstance(value, str) and value:
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return list(value)
    raise DescriptionError("%s must be a command path or a list of strings, not %r"
                           % (where, value))


def parse_description(data, where="description"):
    """Validate a description (dict) -> Description; DescriptionError names the bad key."""
    if not isinstance(data, dict):
        raise DescriptionError("%s: must be a JSON object" % where)
    known = {"host", "command_endpoint", "mailstore", "mailstore_by_check", "command_zone",
             "service_zone", "services"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise DescriptionError("%s: unknown key(s) %s" % (where, ", ".join(unknown)))
    host = _want(data, "host", str, where)
    endpoint = _want(data, "command_endpoint", str, where)
    mailstore = _command(data.get("mailstore"), "%s: 'mailstore'" % where)
    by_check = _want(data, "mailstore_by_check", dict, where, optional=True, default={})
    for check in by_check:
        if check not in PLUGINS:
            raise DescriptionError("%s: 'mailstore_by_check': unknown check %r" % (where, check))
    by_check = {k: _command(v, "%s: 'mailstore_by_check'.%s" % (where, k))
                for k, v in by_check.items()}
    services = []
    seen = set()
    for i, item in enumerate(_want(data, "services", list, where)):
        w = "%s: services[%d]" % (where, i)
        if not isinstance(item, dict):
            raise DescriptionError("%s: must be an object" % w)
        svc_known = {"name", "check", "args", "passive", "freshness", "check_interval",
                     "retry_interval", "max_check_attempts", "display_name"}
        unknown = sorted(set(item) - svc_known)
        if unknown:
            raise DescriptionError("%s: unknown key(s) %s" % (w, ", ".join(unknown)))
        name = _want(item, "name", str, w)
        if not _NAME.match(name) or "!" in name:
            raise DescriptionError("%s: bad service name %r" % (w, name))
        if name in seen:
            raise DescriptionError("%s: service %r declared twice" % (w, name))
        seen.add(name)
        passive = _want(item, "passive", bool, w, optional=True, default=False)
        number = (int, float)
        if passive:
            if "check" in item or "args" in item:
                raise DescriptionError("%s: a passive service has no 'check'/'args' (the "
                                       "pushing job runs the check)" % w)
            freshness = _want(item, "freshness", int, w)
            if freshness <= 0:
                raise DescriptionError("%s: 'freshness' must be > 0 seconds" % w)
            check, args = None, []
        else:
            if "freshness" in item:
                raise DescriptionError("%s: 'freshness' only applies to passive services" % w)
            check = _want(item, "check", str, w)
            if check not in PLUGINS:
                raise DescriptionError("%s: unknown check %r (one of %s)"
                                       % (w, check, ", ".join(PLUGINS)))
            args = _want(item, "args", list, w, optional=True, default=[])
            if not all(isinstance(a, str) for a in args):
                raise DescriptionError("%s: 'args' must be a list of strings" % w)
            freshness = None
        services.append(Service(
            name, check, list(args), passive, freshness,
            _want(item, "check_interval", number, w, True, SERVICE_DEFAULTS["check_interval"]),
            _want(item, "retry_interval", number, w, True, SERVICE_DEFAULTS["retry_interval"]),
            _want(item, "max_check_attempts", int, w, True,
                  SERVICE_DEFAULTS["max_check_attempts"]),
            _want(item, "display_name", str, w, optional=True)))
    return Description(host, endpoint, mailstore, by_check,
                       _want(data, "command_zone", str, where, optional=True),
                       _want(data, "service_zone", str, where, optional=True), services)


def load_description(path):
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise DescriptionError("cannot read description %s: %s" % (path, e.strerror))
    except ValueError as e:
        raise DescriptionError("description %s is not JSON: %s" % (path, e))
    return parse_description(data, where=path)
