"""The inventory's defaults: the data of inventories/group_data/all.py, as pyinfra loads it.

Read by the validator (inventories/validate.py), by the inventories that derive values from
the defaults, and by the operations that hand every datum to their templates. It lives with
the operations and imports nothing, so every import between inventories/ and operations/
points one way: from the inventories down to the operations they configure.
"""
import runpy
from pathlib import Path

_ALL = Path(__file__).parent.parent / "inventories" / "group_data" / "all.py"


def defaults():
    """The data of group_data/all.py, as pyinfra itself will load it."""
    data = runpy.run_path(str(_ALL))
    return {k: v for k, v in data.items() if not k.startswith("_")}
