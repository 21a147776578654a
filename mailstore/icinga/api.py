"""The Icinga2 API client (:class:`Api`): icinga2api.Client with our timeout, verified TLS,
checked results and clear errors.

icinga2api 0.6.1 is the declared client; this module is the only place that touches it (and
requests, which it is built on) and makes up for what it gets wrong:

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
"""
from mailstore.icinga.errors import IcingaError

DEFAULT_TIMEOUT = 30


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
