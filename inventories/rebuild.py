"""A rebuild's first deploy: the given inventory with the inbound hold (or a rehearsal's
scratch container).

Not run by hand: `python -m operations.rebuild INVENTORY --from REPO` runs pyinfra on this
file with $CACERT_REBUILD_INVENTORY naming the given inventory, $CACERT_REBUILD_REHEARSE
set for a rehearsal and $CACERT_REBUILD_KNOWN_HOSTS naming the known_hosts file that trusts
the new container's fresh host keys. The derivation: operations/rebuild_inventory.py.
"""
import os
import sys

from inventories.validate import stop_unless_valid
from operations import rebuild_inventory
from operations.secrets import InventoryError

if not os.environ.get(rebuild_inventory.ENV_INVENTORY):
    raise InventoryError(f"${rebuild_inventory.ENV_INVENTORY} is not set: run "
                         "`python -m operations.rebuild INVENTORY --from REPO`, not pyinfra "
                         "on this file")
try:
    infra02, email = rebuild_inventory.load(
        os.environ[rebuild_inventory.ENV_INVENTORY],
        bool(os.environ.get(rebuild_inventory.ENV_REHEARSE)),
        os.environ.get(rebuild_inventory.ENV_KNOWN_HOSTS) or None)
except InventoryError as exc:
    print("The rebuild's inventory has problems; no host was contacted:", file=sys.stderr)
    for line in str(exc).splitlines():
        print(f"  {line}", file=sys.stderr)
    raise SystemExit(2)
stop_unless_valid(infra02=infra02, email=email)
