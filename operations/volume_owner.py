"""The data volume's owner marker: at most one container's Dovecot writes the mail volume.

`<data_volume>/.cacert-owner` holds, on one line, the LXC name of the container that may write
the volume. An upgrade builds a successor container beside the serving one on the same host
(operations/upgrade.py); both can see the volume, and two Dovecots on one set of mailboxes
corrupt its indexes and lose mail. So this is a guard, not a convention:

- a systemd drop-in runs `/usr/local/sbin/data-volume-owner VOLUME NAME` as ExecStartPre of
  dovecot.service: Dovecot (and with it the LMTP server Postfix delivers to; Postfix then
  keeps the mail queued) refuses to start in a container the marker does not name, and
  `systemctl status dovecot` shows why; /usr/sbin/policy-rc.d tells package scripts that
  starting it there is forbidden (so an install or upgrade of Dovecot does not fail dpkg);
- the deploy writes the marker when none exists (the first deploy adopts the volume) and
  never overwrites one naming another container: one DeployError says whose it is;
- a successor's deploy (inventory datum `successor_of`: the container it replaces) never
  writes the marker and leaves Dovecot stopped until a cut-over hands the volume over.

The identity checked is the inventory's `container_name`, rendered into the drop-in.
"""
import re
import shlex
from io import StringIO

from pyinfra import host
from pyinfra.api import FactBase, deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import files, systemd
from pyinfra.operations.util import any_changed

MARKER = ".cacert-owner"
CHECK = "/usr/local/sbin/data-volume-owner"
# Read by invoke-rc.d and deb-systemd-invoke (Debian policy 9.3.3.1); none exists on Debian
# unless an admin wrote one: this deploy owns it.
POLICY_RC_D = "/usr/sbin/policy-rc.d"
# Units that write the volume: Dovecot's IMAP/POP3/LMTP/sieve all run under dovecot.service.
UNITS = ("dovecot",)
# The name and the path go on an ExecStartPre line and into a shell test: plain characters.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_PATH = re.compile(r"^/[A-Za-z0-9._/+-]*$")


class VolumeOwner(FactBase):
    """The container name in `<volume>/.cacert-owner` ("" when the file is empty), or None
    when there is no marker."""

    def command(self, volume):
        marker = shlex.quote(f"{volume}/{MARKER}")
        return f"if [ -f {marker} ]; then echo present; head -n 1 {marker}; fi; true"

    def process(self, output):
        if not output or output[0] != "present":
            return None
        return output[1].strip() if len(output) > 1 else ""


def settings(data):
    """(volume, container name, successor_of) from inventory `data`, checked."""
    volume, name, previous = data["data_volume"], data["container_name"], data["successor_of"]
    if not isinstance(volume, str) or not _PATH.match(volume) or ".." in volume.split("/"):
        raise DeployError(f"data_volume={volume!r}: must be an absolute path of plain "
                          "characters (A-Z a-z 0-9 . _ / + -)")
    for key, value in (("container_name", name), ("successor_of", previous)):
        if value is not None and (not isinstance(value, str) or not _NAME.match(value)):
            raise DeployError(f"{key}={value!r}: not a container name (A-Z a-z 0-9 _ . -)")
    if previous == name:
        raise DeployError(f"successor_of={previous!r} is this container's own name")
    return volume.rstrip("/") or "/", name, previous


def decide(owner, name, successor_of, volume):
    """What the deploy does with the marker, from the marker's `owner` (None: no marker):
    "adopt" (write it: name this container), "owner" (it names this container already) or
    "wait" (a successor before its cut-over: leave it, keep Dovecot stopped). Raises
    DeployError when the marker names another container."""
    if owner == name:
        return "owner"
    if successor_of is not None and owner in (None, successor_of):
        return "wait"
    if owner is None:
        return "adopt"
    if successor_of is not None:
        raise DeployError(
            f"{volume}/{MARKER} names container {owner!r}, but this successor replaces "
            f"{successor_of!r}: the volume is neither its nor the old container's; check "
            "successor_of and container_name in the inventory")
    raise DeployError(
        f"{volume}/{MARKER} names container {owner!r}, not {name!r}: the data volume belongs "
        f"to another container (an upgrade's successor after a cut-over, or the old one after "
        f"a rollback), whose Dovecot writes it; deploy that container, or hand the volume over "
        f"with `python -m operations.upgrade`, never by editing the marker while both run")


def may_write():
    """True when this host's Dovecot may run: the marker names it or the deploy adopts it."""
    volume, name, previous = settings(host.data.dict())
    owner = host.get_fact(VolumeOwner, volume=volume)
    return decide(owner, name, previous, volume) in ("adopt", "owner")


@deploy("Data volume owner guard")
def guard():
    """The check script and Dovecot's drop-in, then the marker when nobody owns the volume.
    Before dovecot.server(): the drop-in must exist before the package's postinst first
    starts Dovecot."""
    volume, name, previous = settings(host.data.dict())
    verdict = decide(host.get_fact(VolumeOwner, volume=volume), name, previous, volume)
    files.put(name="data-volume-owner (Dovecot's start check)",
              src="files/volume_owner/data-volume-owner", dest=CHECK, mode="755")
    changed = []
    for unit in UNITS:
        files.directory(name=f"{unit}.service.d", path=f"/etc/systemd/system/{unit}.service.d")
        changed.append(files.template(
            name=f"{unit} starts only in the volume's owner",
            src="files/volume_owner/owner-check.conf.j2",
            dest=f"/etc/systemd/system/{unit}.service.d/cacert-volume-owner.conf",
            mode="644", volume=volume, container=name, unit=unit))
    # Debian's package scripts ask this before they start a service (dovecot-core's trigger
    # restarts Dovecot and fails dpkg when the start fails): they are told "forbidden".
    files.template(name="policy-rc.d: package scripts start Dovecot only in the owner",
                   src="files/volume_owner/policy-rc.d.j2", dest=POLICY_RC_D, mode="755",
                   volume=volume, container=name)
    systemd.daemon_reload(name="systemd reads the drop-ins",
                          _if=any_changed(*changed))
    if verdict == "adopt":
        files.put(name=f"Adopt the data volume: {volume}/{MARKER} names {name}",
                  src=StringIO(f"{name}\n"), dest=f"{volume}/{MARKER}", mode="644")
