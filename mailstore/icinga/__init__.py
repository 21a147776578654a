"""Icinga2 API: registration of the mailstore checks and passive results, around icinga2api.

The face of the package: callers (``mailstore.cli.icinga``, the deploy's tests) import from
here only. Inside, arrows point down:

- :mod:`~mailstore.icinga.errors`: :class:`IcingaError`, :class:`DescriptionError`;
- :mod:`~mailstore.icinga.credentials`: :func:`read_credentials` (the API user's file);
- :mod:`~mailstore.icinga.description`: the description file's format (documented there),
  :func:`parse_description`, :func:`load_description`;
- :mod:`~mailstore.icinga.planner`: deciding without I/O: :func:`desired_objects` (what a
  description becomes on the master), :func:`plan` (create/update/recreate/delete/stale);
- :mod:`~mailstore.icinga.api`: :class:`Api`, icinga2api 0.6.1 with its quirks made up for
  (attrs wrapping, an enforced timeout, always verified TLS, per-object results checked);
- :mod:`~mailstore.icinga.registration`: :func:`register` (decide, then act: idempotent;
  ``prune`` deletes only objects this tool created), on planner and an Api;
- :mod:`~mailstore.icinga.passive`: :func:`push` (run a check, submit it as a passive
  result), :func:`run_check`, :func:`parse_plugin_output`.
"""
from mailstore.icinga.api import DEFAULT_TIMEOUT, Api
from mailstore.icinga.credentials import read_credentials
from mailstore.icinga.description import (PLUGINS, SERVICE_DEFAULTS, Description, Service,
                                          load_description, parse_description)
from mailstore.icinga.errors import DescriptionError, IcingaError
from mailstore.icinga.passive import parse_plugin_output, push, run_check
from mailstore.icinga.planner import (COMMAND_PREFIX, FIXED_ATTRS, MARKER, MARKER_VAR, Action,
                                      Desired, command_name, desired_objects, plan)
from mailstore.icinga.registration import COMMAND_ATTRS, SERVICE_ATTRS, current_objects, register

__all__ = ["Action", "Api", "COMMAND_ATTRS", "COMMAND_PREFIX", "DEFAULT_TIMEOUT", "Description",
           "DescriptionError", "Desired", "FIXED_ATTRS", "IcingaError", "MARKER", "MARKER_VAR",
           "PLUGINS", "SERVICE_ATTRS", "SERVICE_DEFAULTS", "Service", "command_name",
           "current_objects", "desired_objects", "load_description", "parse_description",
           "parse_plugin_output", "plan", "push", "read_credentials", "register", "run_check"]
