"""operations.adopt only reads: every command of its facts (operations/live_facts.py) is a
read, its SQL only SELECTs, and neither it nor the drift report can run an operation."""
import inspect
import re
from pathlib import Path

from pyinfra.api import FactBase

from tests.unit.deploy import fake_host  # noqa: F401  (puts the repository on sys.path)
from operations import live_facts as lf
from tests.unit.deploy.conftest import REPO

# Arguments each fact takes, for building its command.
ARGS = {"path": "/etc/postfix/arbitration", "container": "email", "database": "cacertusers",
        "mail_root": "/home/mailboxes", "names": ["relayhost", "mail_location"]}
# Programs that change a system, and shell redirections into a file.
WRITERS = re.compile(r"\b(rm|mv|cp|chmod|chown|chgrp|tee|install|mkdir|rmdir|touch|ln|truncate|"
                     r"dd|useradd|usermod|groupadd|systemctl|service|postmap|postalias|postsuper|"
                     r"newaliases|doveadm|apt|apt-get|dpkg|lxc-start|lxc-stop|sed -i|kill)\b")
SQL_WRITERS = re.compile(r"\b(INSERT|UPDATE|DELETE|REPLACE|ALTER|DROP|CREATE|GRANT|REVOKE|"
                         r"TRUNCATE|RENAME|SET|LOCK|FLUSH|CALL|LOAD)\b", re.I)


def fact_classes():
    return [c for _, c in inspect.getmembers(lf, inspect.isclass)
            if issubclass(c, FactBase) and c.__module__ == lf.__name__
            and not c.__name__.startswith("_")]


def command_of(cls):
    params = inspect.signature(cls.command).parameters
    return cls().command(**{n: ARGS[n] for n in params if n != "self" and n in ARGS})


def test_there_are_facts_to_check():
    assert len(fact_classes()) >= 12


def test_every_fact_command_only_reads():
    for cls in fact_classes():
        command = command_of(cls)
        shell = command.split("<<'SQL'")[0] + command.split("\nSQL\n")[-1]
        assert not WRITERS.search(shell), f"{cls.__name__}: {command}"
        # Output goes to the fact (stdout) or /dev/null, never into a file.
        for target in re.findall(r"(?<![<2&])>\s*(\S+)", shell):
            assert target in ("/dev/null", "&2", "&1"), f"{cls.__name__} writes {target}"
        if "<<'SQL'" in command:
            sql = command.split("<<'SQL'\n")[1].split("\nSQL\n")[0]
            assert not SQL_WRITERS.search(sql.replace("ORDER BY", "")), cls.__name__
            assert re.search(r"\bSELECT\b", sql), cls.__name__


def test_the_commands_read_no_private_key():
    for cls in fact_classes():
        command = command_of(cls)
        assert "ssl_key" not in command and "private/" not in command, cls.__name__
        assert "-P" not in command.split(), cls.__name__   # doveconf -P prints secrets


def test_adopt_and_drift_never_run_operations():
    for name in ("operations/adopt.py", "operations/drift.py", "operations/live_facts.py"):
        source = (REPO / name).read_text()
        for call in ("run_ops", "run_host_op", "run_shell_command", "put_file", ".execute(",
                     "from pyinfra.operations"):
            assert call not in source, f"{name} uses {call}"


def test_mapping_facts_default_to_empty():
    """A host without Postfix or Dovecot prints nothing: the fact is {} (not None)."""
    assert lf.PostconfSettings().default() == {} and lf.DoveconfSettings().default() == {}
    assert lf.UserSchemes().default()["counts"] == {}
