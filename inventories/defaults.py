"""The inventory's defaults: the data of group_data/all.py, as pyinfra itself loads it.

Read by the validator (inventories/validate.py), by the inventories that derive values from
the defaults, and by the operations that hand every datum to their templates. It imports
nothing of either, so none of them closes a circle through it.
"""
import runpy
from pathlib import Path

_ALL = Path(__file__).parent / "group_data" / "all.py"


def defaults():
    """The data of group_data/all.py, as pyinfra itself will load it."""
    data = runpy.run_path(str(_ALL))
    return {k: v for k, v in data.items() if not k.startswith("_")}
