"""Icinga2 API: registration of the mailstore checks and passive results, around icinga2api.

icinga2api 0.6.1 is the declared client; this module is the only place that touches it and
makes up for what it gets wrong:

- ``objects.update()`` sends the attributes as the request body; the API wants
  ``{"attrs": {...}}`` and otherwise changes nothing. We wrap them.
- ``timeout`` is accepted and never used, so a silent master hangs the caller forever. Every
  HTTP session it makes gets an adapter that enforces our timeout.
- TLS is verified only when ``ca_certificate`` is given (else ``verify=False``). We refuse to
  run without a CA file. Its sessions also trust the environment, where REQUESTS_CA_BUNDLE
  would silently override a session's CA: we turn that off (and proxies from the environment
  with it: the master is reached directly).
- A failed create/modify/delete of one object answers HTTP 200 (or 500) with the real outcome
  per object in ``results[].code``/``status``; icinga2api only looks at the HTTP status. We
  check every result.
- Its exceptions carry the raw response; ours (:class:`IcingaError`) name the object and the
  API's own message ("Unauthorized...", "Attribute cannot be modified", ...).

Registration (:func:`register`) is "decide, then act": :func:`desired_objects` turns the
declarative description into the objects it should produce, :func:`plan` compares them with
what the master has (objects carrying ``vars.managed_by = "mailstore"``), and only the
resulting actions are sent. A re-run therefore changes nothing, and ``prune`` deletes only
objects this tool created.

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

What that becomes on the master:

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

Every object carries ``vars.managed_by = "mailstore"``.
"""
import json
import os
import re
import socket
import stat
from typing import Dict, List, NamedTuple, Optional

MARKER_VAR = "managed_by"
MARKER = "mailstore"
COMMAND_PREFIX = "mailstore-"
PLUGINS = ("backup", "cert", "crl", "maildir", "mailq", "volume")
DEFAULT_TIMEOUT = 30
# attributes the API refuses to modify: a difference means delete + create
FIXED_ATTRS = ("zone", "templates")
SERVICE_DEFAULTS = {"check_interval": 300, "retry_interval": 60, "max_check_attempts": 3}
_NAME = re.compile(r"^[A-Za-z0-9_.@-][A-Za-z0-9 _.@:-]*$")


class IcingaError(Exception):
    """Anything that kept a request from doing what was asked; the message says what/why."""


class DescriptionError(IcingaError):
    """The description file is not what the docstring describes; names the key."""


# --- credentials and description ---------------------------------------------------------
def read_credentials(path):
    """(user, password) from a file holding ``user:password`` or JSON ``{"username",
    "password"}``. Refused if others may read it (it is a password)."""
    try:
        st = os.stat(path)
        with open(path, "r", encoding="utf-8") as f:
            text = f.read().strip()
    except OSError as e:
        raise IcingaError("cannot read credentials file %s: %s" % (path, e.strerror))
    if st.st_mode & stat.S_IROTH:
        raise IcingaError("credentials file %s is readable by others (mode %04o); "
                          "chmod o-r it" % (path, stat.S_IMODE(st.st_mode)))
    if text.startswith("{"):
        try:
            data = json.loads(text)
            user, password = data["username"], data["password"]
        except (ValueError, KeyError, TypeError):
            raise IcingaError("credentials file %s: JSON must be {\"username\": ..., "
                              "\"password\": ...}" % path)
    else:
        user, sep, password = text.partition(":")
        if not sep:
            raise IcingaError("credentials file %s: expected user:password" % path)
    if not user or not password:
        raise IcingaError("credentials file %s: empty user or password" % path)
    return str(user), str(password)


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


# --- deciding ----------------------------------------------------------------------------
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


# --- acting: the API client --------------------------------------------------------------
class Api:
    """icinga2api.Client with our timeout, verified TLS, checked results and clear errors."""

    def __init__(self, url, ca_file, username, password, timeout=DEFAULT_TIMEOUT,
                 tls_name=None):
        import requests
        from icinga2api.client import Client
        if not url.startswith("https://"):
            raise IcingaError("Icinga API URL must start with https:// (got %r)" % url)
        if not ca_file:
            raise IcingaError("refusing to talk to the Icinga API without a CA certificate "
                              "(--ca): the connection would not be verified")
        try:
            with open(ca_file, "rb") as f:
                if b"-----BEGIN CERTIFICATE-----" not in f.read():
                    raise IcingaError("CA file %s holds no PEM certificate" % ca_file)
        except OSError as e:
            raise IcingaError("cannot read CA file %s: %s" % (ca_file, e.strerror))
        self.url = url.rstrip("/") + "/"
        self.ca_file = ca_file
        self.timeout = timeout
        # Icinga certificates name the node (e.g. monitor.cacert.org), which need not be the
        # host in the URL (an address, an internal name): verify that name instead.
        self.tls_name = tls_name
        self.last_response = None
        self._requests = requests
        self.client = Client(url=self.url, username=username, password=password,
                             ca_certificate=ca_file, timeout=timeout)
        for part in (self.client.objects, self.client.actions, self.client.status):
            part._create_session = self._session_factory(part._create_session)

    def _session_factory(self, original):
        import ssl
        from urllib3.util.ssl_ import create_urllib3_context
        api = self
        requests = self._requests

        class TimeoutAdapter(requests.adapters.HTTPAdapter):
            def init_poolmanager(self, *args, **kwargs):
                # Python 3.13 (Debian 13) verifies with VERIFY_X509_STRICT, which refuses the
                # certificates `icinga2 pki` makes (no Authority Key Identifier); the chain
                # and the name are still verified.
                context = create_urllib3_context()
                context.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
                kwargs["ssl_context"] = context
                if api.tls_name:
                    kwargs["server_hostname"] = api.tls_name
                    kwargs["assert_hostname"] = api.tls_name
                return super().init_poolmanager(*args, **kwargs)

            def send(self, request, **kwargs):
                kwargs["timeout"] = api.timeout
                response = super().send(request, **kwargs)
                api.last_response = response
                return response

        def create_session(method="POST"):
            session = original(method)
            session.trust_env = False
            session.verify = api.ca_file
            adapter = TimeoutAdapter(max_retries=0)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            return session
        return create_session

    def _call(self, what, func, *args, **kwargs):
        from icinga2api.exceptions import Icinga2ApiException
        requests = self._requests
        self.last_response = None
        try:
            return func(*args, **kwargs)
        except Icinga2ApiException:
            raise IcingaError("%s: %s" % (what, self._api_message()))
        except requests.exceptions.SSLError as e:
            raise IcingaError("%s: TLS verification of %s failed with CA %s: %s"
                              % (what, self.url, self.ca_file, _root_cause(e)))
        except requests.exceptions.Timeout:
            raise IcingaError("%s: no answer from %s within %ss" % (what, self.url, self.timeout))
        except requests.exceptions.ConnectionError as e:
            raise IcingaError("%s: cannot connect to %s: %s" % (what, self.url, _root_cause(e)))
        except requests.exceptions.RequestException as e:
            raise IcingaError("%s: %s" % (what, e))

    def _api_message(self):
        r = self.last_response
        if r is None:
            return "no response"
        try:
            data = r.json()
        except ValueError:
            return "HTTP %d %s" % (r.status_code, r.text.strip()[:200] or r.reason)
        messages = [_result_message(x) for x in data.get("results") or []
                    if x.get("code", 200) >= 300]
        if data.get("status"):
            messages.insert(0, str(data["status"]))
        return "HTTP %d: %s" % (r.status_code, "; ".join(m.strip() for m in messages)
                                or r.text.strip()[:200])

    @staticmethod
    def _results_ok(what, answer):
        for result in (answer or {}).get("results") or []:
            code = result.get("code", 200)
            if not 200 <= int(code) <= 299:
                raise IcingaError("%s: %s" % (what, _result_message(result)))
        return answer

    # the operations registration and push need
    def get(self, type_, name, attrs=None):
        """The object's attrs, or None if it does not exist."""
        try:
            found = self._call("query %s %r" % (type_, name), self.client.objects.list, type_,
                               name, attrs=attrs)
        except IcingaError:
            if self.last_response is not None and self.last_response.status_code == 404:
                return None
            raise
        return found[0]["attrs"] if found else None

    def list(self, type_, filters=None, filter_vars=None, attrs=None):
        found = self._call("query %s objects" % type_, self.client.objects.list, type_,
                           attrs=attrs, filters=filters, filter_vars=filter_vars)
        return {o["name"]: o["attrs"] for o in found}

    def create(self, type_, name, templates, attrs):
        what = "create %s %r" % (type_, name)
        return self._results_ok(what, self._call(what, self.client.objects.create, type_, name,
                                                 templates=templates or None, attrs=attrs))

    def update(self, type_, name, attrs):
        what = "update %s %r" % (type_, name)
        # icinga2api sends its `attrs` argument as the whole body: wrap it as the API expects
        return self._results_ok(what, self._call(what, self.client.objects.update, type_, name,
                                                 {"attrs": attrs}))

    def delete(self, type_, name, cascade=False):
        what = "delete %s %r" % (type_, name)
        return self._results_ok(what, self._call(what, self.client.objects.delete, type_, name,
                                                 cascade=cascade))

    def process_check_result(self, service, exit_status, output, perfdata, check_source=None):
        what = "submit check result for %r" % service
        return self._results_ok(what, self._call(
            what, self.client.actions.process_check_result, "Service", service, exit_status,
            output, performance_data=perfdata or None, check_source=check_source))


def _result_message(result):
    """The API's words for one failed object: its status plus the config errors behind it
    (a failed create only says "Object could not be created."; `errors` says why)."""
    parts = [str(result.get("status") or "code %s" % result.get("code")).strip()]
    for error in result.get("errors") or []:
        # Icinga repeats the whole config snippet after the message; keep the first line
        parts.append(str(error).strip().split("\n", 1)[0])
    return " ".join(parts)


def _root_cause(exc):
    seen = exc
    while True:
        nxt = seen.__cause__ or seen.__context__ or (seen.args[0] if seen.args and
                                                     isinstance(seen.args[0], BaseException)
                                                     else None)
        if nxt is None or nxt is seen:
            break
        seen = nxt
        reason = getattr(seen, "reason", None)
        if isinstance(reason, BaseException):
            seen = reason
    return str(seen)


# --- registration ------------------------------------------------------------------------
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


# --- push --------------------------------------------------------------------------------
_PERF_ITEM = re.compile(r"'[^']*'=\S*|\S+")


def parse_plugin_output(text):
    """(output, [perfdata items]) from plugin text, per the monitoring-plugins API:
    ``first line | perf`` then long text lines, perfdata may continue after a later ``|``."""
    lines = text.rstrip("\n").split("\n") if text.strip() else [""]
    first, _, perf = lines[0].partition("|")
    long_text, long_perf, in_perf = [], [], False
    for line in lines[1:]:
        if in_perf:
            long_perf.append(line)
        elif "|" in line:
            t, _, p = line.partition("|")
            long_text.append(t.rstrip())
            long_perf.append(p)
            in_perf = True
        else:
            long_text.append(line)
    output = "\n".join([first.strip()] + long_text).strip()
    items = _PERF_ITEM.findall(" ".join([perf] + long_perf))
    return output, items


def run_check(args, timeout):
    """Run ``mailstore check ARGS`` in a child process; (exit status, plugin text).

    A child keeps a misbehaving check (a hang, a crash) from taking the push down with it;
    a crash or a kill is reported as UNKNOWN with what it printed.
    """
    import subprocess
    import sys
    cmd = [sys.executable, "-m", "mailstore", "check"] + list(args)
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 3, "MAILSTORE UNKNOWN - check %s did not finish within %ss" % (
            " ".join(args), timeout)
    out = proc.stdout.decode("utf-8", "replace")
    if proc.returncode not in (0, 1, 2, 3) or not out.strip():
        err = " ".join(proc.stderr.decode("utf-8", "replace").split())[-300:]
        return 3, "MAILSTORE UNKNOWN - check %s failed (exit %d): %s" % (
            " ".join(args), proc.returncode, (err or out.strip() or "no output").replace("|", "/"))
    return proc.returncode, out


def push(api, host, service, args, timeout=120, check_source=None):
    """Run the check, submit its result as a passive result; returns (status, output)."""
    status, text = run_check(args, timeout)
    output, perfdata = parse_plugin_output(text)
    api.process_check_result("%s!%s" % (host, service), status, output, perfdata,
                             check_source=check_source or socket.getfqdn())
    return status, output
