"""Deciding, without I/O: the objects a description stands for and the actions that make the
master hold them.

What a description becomes on the master (:func:`desired_objects`):

- one CheckCommand ``mailstore-<check>`` per plugin used by an active service: command
  ``[mailstore, "check", <check>]`` plus the service's ``vars.mailstore_args`` (an array:
  each element one argument);
- an active Service: ``check_command = mailstore-<check>``, ``command_endpoint`` = the agent;
- a passive Service: Icinga 2 has no ``check_freshness``/``freshness_threshold`` of its own
  (those are Icinga 1 names); its freshness check is an active check that only runs when no
  result arrived for ``check_interval``. So: ``check_command = "dummy"`` (ITL), run by the
  master itself, ``check_interval = freshness``, ``vars.dummy_state = 2`` (CRITICAL) with a
  text saying no result arrived. Every pushed result moves that check ``freshness`` seconds
  ahead. Right after creation we submit one UNKNOWN "waiting for the first result" so the
  first dummy run is ``freshness`` away, not at Icinga's random first-check offset.

Every object carries ``vars.managed_by = "mailstore"`` (:data:`MARKER_VAR` = :data:`MARKER`).

:func:`plan` compares those desired objects with what the master has (the marked objects
plus any object holding a declared name): create, update, recreate (for attributes the API refuses
to modify), unchanged, and delete (with ``prune``) or stale for marked objects no longer
declared. An object of a declared name without the marker is refused: it is not ours.
"""
from typing import Dict, List, NamedTuple

from mailstore.icinga.errors import IcingaError

MARKER_VAR = "managed_by"
MARKER = "mailstore"
COMMAND_PREFIX = "mailstore-"
# attributes the API refuses to modify: a difference means delete + create
FIXED_ATTRS = ("zone", "templates")


class Desired(NamedTuple):
    type: str             # "CheckCommand" | "Service"
    name: str             # full object name ("host!service" for services)
    templates: List[str]
    attrs: Dict


class Action(NamedTuple):
    verb: str             # create | update | recreate | delete | unchanged | stale
    type: str
    name: str
    attrs: Dict           # what to send (create/update/recreate)
    changes: Dict         # attr -> [old, new] for update/recreate
    templates: List[str]


def command_name(check):
    return COMMAND_PREFIX + check


def desired_objects(desc):
    """The CheckCommands and Services a description stands for (pure)."""
    objects = []
    for check in sorted({s.check for s in desc.services if not s.passive}):
        attrs = {
            "command": desc.mailstore_by_check.get(check, desc.mailstore) + ["check", check],
            # an array value with skip_key: each element becomes one argument, in order
            "arguments": {"(mailstore_args)": {"value": "$mailstore_args$", "skip_key": True,
                                               "order": 1}},
            "vars": {MARKER_VAR: MARKER},
        }
        if desc.command_zone:
            attrs["zone"] = desc.command_zone
        objects.append(Desired("CheckCommand", command_name(check), ["plugin-check-command"],
                               attrs))
    for svc in desc.services:
        if svc.passive:
            attrs = {
                "check_command": "dummy",
                "command_endpoint": "",
                "enable_active_checks": True,
                "enable_passive_checks": True,
                "check_interval": svc.freshness,
                "retry_interval": svc.freshness,
                "max_check_attempts": 1,
                "vars": {MARKER_VAR: MARKER, "dummy_state": 2,
                         "dummy_text": "no result pushed for %s for more than %d s: has the "
                                       "job run?" % (svc.name, svc.freshness)},
            }
        else:
            attrs = {
                "check_command": command_name(svc.check),
                "command_endpoint": desc.command_endpoint,
                "enable_active_checks": True,
                "enable_passive_checks": True,
                "check_interval": svc.check_interval,
                "retry_interval": svc.retry_interval,
                "max_check_attempts": svc.max_check_attempts,
                "vars": {MARKER_VAR: MARKER, "mailstore_args": list(svc.args)},
            }
        if svc.display_name:
            attrs["display_name"] = svc.display_name
        if desc.service_zone:
            attrs["zone"] = desc.service_zone
        objects.append(Desired("Service", "%s!%s" % (desc.host, svc.name), [], attrs))
    return objects


def _same(a, b):
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or a == b and type(a) is type(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if a is None and b == "" or a == "" and b is None:
        return True
    return a == b


def plan(desired, current, prune=False):
    """Actions turning `current` into `desired`.

    `current`: {(type, name): attrs} of the objects of those types on the master that carry
    the marker, plus any other object with a desired name (attrs without the marker: refused,
    it is not ours). Pure: no I/O.
    """
    actions = []
    wanted = set()
    for d in desired:
        key = (d.type, d.name)
        wanted.add(key)
        have = current.get(key)
        if have is None:
            actions.append(Action("create", d.type, d.name, d.attrs, {}, d.templates))
            continue
        if (have.get("vars") or {}).get(MARKER_VAR) != MARKER:
            raise IcingaError("%s %r exists on the master but was not created by mailstore "
                              "(no vars.%s = %r); not touching it — rename the declared object "
                              "or remove the other one" % (d.type, d.name, MARKER_VAR, MARKER))
        changes = {k: [have.get(k), v] for k, v in d.attrs.items() if not _same(have.get(k), v)}
        fixed = [k for k in changes if k in FIXED_ATTRS]
        if d.type == "Service" and changes.get("command_endpoint", [None, None])[1] == "":
            fixed.append("command_endpoint")     # the API cannot unset an endpoint
        if have.get("templates") is not None and d.templates and \
                not set(d.templates) <= set(have["templates"]):
            fixed.append("templates")
            changes["templates"] = [have["templates"], d.templates]
        if fixed:
            actions.append(Action("recreate", d.type, d.name, d.attrs, changes, d.templates))
        elif changes:
            actions.append(Action("update", d.type, d.name,
                                  {k: d.attrs[k] for k in changes}, changes, d.templates))
        else:
            actions.append(Action("unchanged", d.type, d.name, {}, {}, d.templates))
    # services before commands: a command in use cannot be deleted
    for key in sorted(current, key=lambda k: (k[0] != "Service", k[1])):
        if key in wanted or (current[key].get("vars") or {}).get(MARKER_VAR) != MARKER:
            continue
        actions.append(Action("delete" if prune else "stale", key[0], key[1], {}, {}, []))
    return actions
