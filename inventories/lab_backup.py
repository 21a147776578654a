"""The lab's backup host: the container `backup` (lab/topology.py CONTAINERS), which pulls
the off-host copy of the email container's backup repository (operations/backup_host.py).

    python -m lab container up backup            # the bare container (the lab must be up)
    pyinfra inventories/lab_backup.py deploy.py  # the backup host's side

Its Icinga service `mailstore-backup-copy` goes to the lab's master (on the lab host,
operations/lab_icinga_master.py), which knows the container's Host object
(lab/icinga_agents.py, `icinga2_host` in lab/topology.py); it registers and pushes as the
master's API user `mailstore` (production gives the backup host a user of its own).

The email container's side (the pull key, forced to a read-only copy) comes with the lab's
normal deploy (inventories/lab.py) once `.lab/backup/pull_key.pub` holds the key this
deploy made on the backup host (tests/lab/test_offhost_copy.py copies it there).
"""
import os
from pathlib import Path

from inventories.validate import stop_unless_valid
from lab import topology as t
from operations.secrets import InventoryError

REPO = Path(__file__).resolve().parent.parent
LAB = REPO / ".lab"
# The secrets the lab generated (the master's API password), unless the caller names others.
os.environ.setdefault("CACERT_EMAIL_SECRETS", str(LAB / "secrets"))
SPEC = t.CONTAINERS["backup"]
ADDRESS = SPEC["nics"][0]["address"].split("/")[0]
COPIES = "/srv/mailstore-copies"


def source_host_keys(path=LAB / "known_hosts"):
    """The email container's SSH host keys ('TYPE BASE64'), as `./lab/up` recorded them."""
    if not path.is_file():
        raise InventoryError(f"{path} is missing: run ./lab/up (it records the email "
                             "container's host keys)")
    return [" ".join(line.split()[1:3]) for line in path.read_text().splitlines()
            if line.split()[:1] == [t.CONTAINER_ADDRESS]]


backup_host = [
    ("backup.cacert.test", {
        "ssh_hostname": ADDRESS,
        "ssh_user": "root",
        "ssh_key": str(LAB / "id_ed25519"),
        # `lab container up backup` writes the container's host keys here.
        "ssh_known_hosts_file": str(LAB / "known_hosts-backup"),
        "ssh_strict_host_key_checking": "yes",
        "debian_release": SPEC["release"],
        "backup_copy_source": t.CONTAINER_ADDRESS,
        "backup_copy_source_host_keys": source_host_keys(),
        "backup_copy_dir": COPIES,
        # The lab test runs the job by hand; the cron line is there as in production.
        "backup_copy_schedule": "30 5 * * *",
        "backup_copy_keep": 3,
        # The lab master's API on the bridge, as inventories/lab.py's email container has it.
        "backup_copy_icinga": {
            "host": SPEC["icinga2_host"],
            "url": f"https://{t.BRIDGE_ADDRESS}:5665",
            "tls_name": "master.cacert.test",
            "ca": ".lab/icinga2-master/lib/ca/ca.crt",
            "user": "mailstore",
            "password_secret": "icinga2_api.password",
        },
    }),
]
stop_unless_valid(backup_host=backup_host)
