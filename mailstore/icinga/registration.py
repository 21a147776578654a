"""Registration: bring the master in line with a description (``mailstore icinga register``).

Registration (:func:`register`) is "decide, then act": :func:`desired_objects` turns the
declarative description into the objects it should produce, :func:`plan` compares them with
what the master has (objects carrying ``vars.managed_by = "mailstore"``), and only the
resulting actions are sent. A re-run therefore changes nothing, and ``prune`` deletes only
objects this tool created.

:func:`current_objects` reads what the master has through an :class:`~mailstore.icinga.Api`,
:func:`register` plans with :mod:`mailstore.icinga.planner` and sends the actions in the order
the API accepts: deletions first (services, then the commands they used), then commands,
then the services that use them.
"""
from mailstore.icinga.errors import IcingaError
from mailstore.icinga.planner import MARKER, MARKER_VAR, desired_objects, plan


SERVICE_ATTRS = ["vars", "check_command", "command_endpoint", "check_interval",
                 "retry_interval", "max_check_attempts", "enable_active_checks",
                 "enable_passive_checks", "display_name", "zone", "templates", "host_name"]
COMMAND_ATTRS = ["vars", "command", "arguments", "zone", "templates"]


def current_objects(api, desc, desired):
    """What the master has: our marked objects plus anything holding a desired name."""
    if api.get("Host", desc.host, attrs=["name"]) is None:
        # the API answers 404 both for a missing host and for one the user may not see
        raise IcingaError("host %r is not visible through the API: either it is not defined "
                          "on the master (define it there first; registration only adds "
                          "services to it) or the API user lacks objects/query/Host"
                          % desc.host)
    current = {}
    marker = {"marker": MARKER}
    for name, attrs in api.list("Service", filters="host.name == host_name && "
                                "service.vars.%s == marker" % MARKER_VAR,
                                filter_vars=dict(marker, host_name=desc.host),
                                attrs=SERVICE_ATTRS).items():
        current[("Service", name)] = attrs
    for name, attrs in api.list("CheckCommand", filters="checkcommand.vars.%s == marker"
                                % MARKER_VAR, filter_vars=marker, attrs=COMMAND_ATTRS).items():
        current[("CheckCommand", name)] = attrs
    for d in desired:
        if (d.type, d.name) not in current:
            attrs = api.get(d.type, d.name, attrs=SERVICE_ATTRS if d.type == "Service"
                            else COMMAND_ATTRS)
            if attrs is not None:
                current[(d.type, d.name)] = attrs
    # a command still used by services other than this host's own (which the plan keeps or
    # removes itself) belongs to someone else's registration: not ours to prune
    ours = {k[1] for k in current if k[0] == "Service"}
    for key in [k for k in current if k[0] == "CheckCommand"]:
        if key not in {(d.type, d.name) for d in desired}:
            users = api.list("Service", filters="service.check_command == cmd",
                             filter_vars={"cmd": key[1]}, attrs=["name"])
            if set(users) - ours:
                current.pop(key)
    return current


def register(api, desc, prune=False, dry_run=False):
    """Bring the master in line with `desc`; returns the Actions (their verbs say what
    happened). Raises IcingaError on the first failure, naming the object."""
    desired = desired_objects(desc)
    actions = plan(desired, current_objects(api, desc, desired), prune=prune)
    if dry_run:
        return actions
    ordered = ([a for a in actions if a.verb == "delete" and a.type == "Service"]
               + [a for a in actions if a.verb == "delete" and a.type == "CheckCommand"]
               + [a for a in actions if a.type == "CheckCommand" and a.verb in
                  ("create", "update", "recreate")]
               + [a for a in actions if a.type == "Service" and a.verb in
                  ("create", "update", "recreate")])
    for action in ordered:
        if action.verb == "delete":
            api.delete(action.type, action.name, cascade=action.type == "Service")
        elif action.verb == "update":
            api.update(action.type, action.name, action.attrs)
        else:
            if action.verb == "recreate":
                api.delete(action.type, action.name, cascade=True)
            attrs = dict(action.attrs)
            if attrs.get("command_endpoint") == "":
                del attrs["command_endpoint"]   # unset, not an Endpoint named ""
            api.create(action.type, action.name, action.templates, attrs)
            if action.type == "Service" and attrs.get("check_command") == "dummy":
                api.process_check_result(
                    action.name, 3, "UNKNOWN - registered by mailstore; waiting for the first "
                    "pushed result", [], check_source="mailstore icinga register")
    # a recreated CheckCommand took its services along (cascade): put them back
    if any(a.verb == "recreate" and a.type == "CheckCommand" for a in actions):
        present = current_objects(api, desc, desired)
        for d in desired:
            if d.type == "Service" and ("Service", d.name) not in present:
                attrs = {k: v for k, v in d.attrs.items()
                         if not (k == "command_endpoint" and v == "")}
                api.create(d.type, d.name, d.templates, attrs)
    return actions
