"""The lab's backup host: the container `backup` (lab/topology.py CONTAINERS), which pulls
the off-host copy of the email container's backup repository (operations/backup_host.py).

    python -m lab container up backup            # the bare container (the lab must be up)
    pyinfra inventories/lab_backup.py deploy.py  # the backup host's side

The email container's side (the pull key, forced to a read-only copy) comes with the lab's
normal deploy (inventories/lab.py) once `.lab/backup/pull_key.pub` holds the key this
deploy made on the backup host (tests/lab/test_offhost_copy.py copies it there).
"""
from pathlib import Path

from inventories.validate import stop_unless_valid
from lab import topology as t
from operations.secrets import InventoryError

REPO = Path(__file__).resolve().parent.parent
LAB = REPO / ".lab"
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
    }),
]
stop_unless_valid(backup_host=backup_host)
