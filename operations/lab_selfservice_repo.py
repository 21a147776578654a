"""Lab only: a signed apt repository on the lab host with a stand-in cacert-selfservice-api.

CAcert's real package and repository cannot be reached from the lab. So that the deploy's real
install path (a repository with a `Signed-By` keyring, the package, its config, certificates
and unit) is exercised all the same, the lab builds `lab/selfservice_pkg/` (a tiny https
server with client-certificate checks, see its DEBIAN/control) with dpkg-deb, indexes it with
apt-ftparchive, signs the index with a throwaway GPG key and serves it over http on the lab
bridge. The inventory (`selfservice_api_repo`) points the container at it.

Layout, all under `.lab/selfservice-repo/`: gnupg/ (the key), public/ (served: archive-key.asc,
pool/, dists/lab/), built.sha256 (digest of the package source at the last build), http.pid.
"""
import hashlib
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File, FileContents
from pyinfra.operations import apt, files, server

from operations.lab_host import PidAlive

REPO = Path(__file__).resolve().parents[1]
PACKAGE_SOURCE = REPO / "lab" / "selfservice_pkg"
REPO_DIR = REPO / ".lab" / "selfservice-repo"
PUBLIC = REPO_DIR / "public"
PIDFILE = REPO_DIR / "http.pid"
# The repository's public key, as inventories/lab.py names it in selfservice_api_repo["key"].
PUBLIC_KEY = PUBLIC / "archive-key.asc"
SUITE = "lab"
PORT = 8080


def source_digest(source=PACKAGE_SOURCE):
    """sha256 over the relative paths, executable bits and contents of the package source."""
    digest = hashlib.sha256()
    for path in sorted(p for p in source.rglob("*")
                       if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(source)).encode() + b"\0")
        digest.update(b"x" if path.stat().st_mode & 0o111 else b"-")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


@deploy("Lab: self-service API apt repository")
def repository():
    """Build (when the package source changed), sign and serve the lab's apt repository."""
    address = host.data.container_net["ipv4_gateway"]
    apt.packages(name="Repository tools", packages=["apt-utils", "gnupg", "dpkg-dev"])
    files.directory(name="Repository directory", path=str(REPO_DIR), mode="755")
    for script in ("build-repo.sh", "serve-repo.sh"):
        files.put(name=f"Repository {script}", src=f"files/lab_selfservice_repo/{script}",
                  dest=str(REPO_DIR / script), mode="755")

    wanted = source_digest()
    built = (host.get_fact(FileContents, path=str(REPO_DIR / "built.sha256")) or [""])[0]
    signed = host.get_fact(File, path=str(PUBLIC / "dists" / SUITE / "InRelease"))
    if built.strip() != wanted or not signed:
        server.shell(name="Build, index and sign the stand-in package",
                     commands=[f"{REPO_DIR}/build-repo.sh {REPO_DIR} {PACKAGE_SOURCE} {SUITE} "
                               f"{wanted}"])

    if not host.get_fact(PidAlive, pidfile=str(PIDFILE)):
        server.shell(name=f"Serve the repository on http://{address}:{PORT}/",
                     commands=[f"{REPO_DIR}/serve-repo.sh {PUBLIC} {address} {PORT} {PIDFILE} "
                               f"{REPO_DIR}/http.log"])
