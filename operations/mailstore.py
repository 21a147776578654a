"""mailstore on the server: a virtualenv at /opt/mailstore from wheels made on the control
machine (operations/wheelhouse.py), and `mailstore` on root's PATH.

The install step runs when the set of wheels differs from the one recorded after the last
successful install, so an interrupted run is finished by the next one, and an unchanged
source changes nothing.
"""
import hashlib
import io

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import FileContents
from pyinfra.operations import apt, files, pip, server

from operations import wheelhouse

PREFIX = "/opt/mailstore"
VENV = f"{PREFIX}/venv"
WHEELS = f"{PREFIX}/wheels"
# Written after a successful install: the digest of the wheel set it installed.
INSTALLED_MARKER = f"{VENV}/installed-wheels.sha256"


def _digest(directory):
    """One sha256 over the names and contents of every wheel in `directory`."""
    digest = hashlib.sha256()
    for wheel in sorted(directory.glob("*.whl")):
        digest.update(wheel.name.encode() + b"\0" + hashlib.sha256(wheel.read_bytes()).digest())
    return digest.hexdigest()


@deploy("mailstore")
def install():
    """Install or update mailstore from the wheelhouse built for this host's Debian release."""
    wheel_dir = wheelhouse.build(host.data.debian_release)
    wanted = _digest(wheel_dir)

    apt.packages(name="Python venv for mailstore", packages=["python3", "python3-venv"])
    files.directory(name="mailstore prefix", path=PREFIX, mode="755")
    files.sync(name="mailstore wheels", src=str(wheel_dir), dest=WHEELS, mode="644",
               dir_mode="755", delete=True)
    pip.virtualenv(name="mailstore virtualenv", path=VENV, python="python3", venv=True)

    installed = (host.get_fact(FileContents, path=INSTALLED_MARKER) or [""])[0].strip()
    if installed != wanted:
        server.shell(
            name="Install mailstore from the wheels",
            commands=[
                f"{VENV}/bin/pip install --quiet --no-index --find-links {WHEELS} "
                f"--force-reinstall {WHEELS}/cacert_email-*.whl",
            ],
        )
    files.put(name="Record the installed wheel set", src=io.StringIO(wanted + "\n"),
              dest=INSTALLED_MARKER, mode="644")
    files.link(name="mailstore on PATH", path="/usr/local/bin/mailstore",
               target=f"{VENV}/bin/mailstore")
