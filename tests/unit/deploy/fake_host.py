"""Run a `@deploy` function against a fake host, in the spirit of pyinfra's own spec tests.

No connection is made: every fact the deploy asks for is answered from a dict given by the test
(keyed by the fact class name, e.g. "DebPackages"), or by the fact's own empty default. The
result lists, in order, each operation's name and the shell commands it would run, so a test
can say "on a host with puppet installed, the deploy stops, disables and purges it".
"""
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pyinfra.api import Config, Inventory, State  # noqa: E402
from pyinfra.api.deploy import add_deploy  # noqa: E402
from pyinfra.api.command import FileUploadCommand, StringCommand  # noqa: E402
from pyinfra.context import ctx_host, ctx_state  # noqa: E402

from operations.defaults import defaults  # noqa: E402


class Operation:
    """One operation the deploy added: its name and the commands it would run (as text)."""

    def __init__(self, name, commands, commands_raw):
        self.name = name
        self.commands = commands
        self.commands_raw = commands_raw

    @property
    def uploads(self):
        """{remote path: uploaded text} for the files this operation uploads."""
        result = {}
        for command in self.commands_raw:
            if isinstance(command, FileUploadCommand):
                src = command.src
                text = src.getvalue() if hasattr(src, "getvalue") else Path(src).read_text()
                result[command.dest] = text.decode() if isinstance(text, bytes) else text
        return result

    def __repr__(self):
        return f"Operation({self.name!r}, {self.commands!r})"


def run(deploy_func, facts=None, data=None, groups=("email",)):
    """The operations `deploy_func` adds for one host with `facts` and inventory `data`.

    + facts: {"FactClassName": value} or {"FactClassName": callable(**fact_kwargs)}
    + data: inventory data overriding group_data/all.py's defaults
    """
    facts = facts or {}
    host_data = {**defaults(), **(data or {})}
    inventory = Inventory((["fakehost"], {}), **{g: (["fakehost"], {}) for g in groups})
    state = State(inventory, Config())
    host = inventory.get_host("fakehost")
    for key, value in host_data.items():
        inventory.host_data["fakehost"][key] = value

    def get_fact(cls, *args, **kwargs):
        name = cls.__name__
        if name not in facts:
            return cls.default()
        value = facts[name]
        return value(*args, **kwargs) if callable(value) else value

    host.get_fact = get_fact
    cwd = os.getcwd()
    os.chdir(REPO)  # deploys name their templates relative to the repository root
    try:
        add_deploy(state, deploy_func, host=host)
        operations = []
        for op_hash in state.get_op_order():
            op_data = state.get_op_data_for_host(host, op_hash)
            with ctx_state.use(state), ctx_host.use(host):
                raw = list(op_data.command_generator())
            names = state.get_op_meta(op_hash).names
            text = [c.get_raw_value() if isinstance(c, StringCommand) else repr(c) for c in raw]
            operations.append(Operation(sorted(names)[0], text, raw))
    finally:
        os.chdir(cwd)
    return operations
