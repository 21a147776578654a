"""An upgrade's successor container: the serving inventory with the successor's data.

Not run by hand: `python -m operations.upgrade INVENTORY prepare` runs pyinfra on this file
with $CACERT_UPGRADE_INVENTORY naming the serving inventory and $CACERT_UPGRADE_RELEASE the
new Debian release. The derivation (operations/successor.py): container `<name>-next`, its
own temporary eth0 (successor_net), the data volume mounted read-only, no Dovecot until the
cut-over. Only the groups infra02 and email are kept (a lab host's own preparation is not
repeated).
"""
import os
import sys

from inventories.validate import stop_unless_valid
from operations import successor
from operations.secrets import InventoryError

if not os.environ.get(successor.ENV_INVENTORY):
    raise InventoryError(f"${successor.ENV_INVENTORY} is not set: run "
                         "`python -m operations.upgrade INVENTORY prepare`, not pyinfra on "
                         "this file")
try:
    infra02, email = successor.load(os.environ[successor.ENV_INVENTORY],
                                    os.environ.get(successor.ENV_RELEASE, "trixie"))
except InventoryError as exc:
    print("The successor's inventory has problems; no host was contacted:", file=sys.stderr)
    for line in str(exc).splitlines():
        print(f"  {line}", file=sys.stderr)
    raise SystemExit(2)
stop_unless_valid(infra02=infra02, email=email)
