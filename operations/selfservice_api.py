"""The self-service API: CAcert's package from CAcert's signed apt repository, https on 9443.

- `account()` runs before the certificates are installed: the service's system user and group
  must exist, because its private key is installed readable by that group (certificates
  `key_group`), never by others.
- `install()`: the repository (deb822 sources entry with `Signed-By` the repository's key,
  kept in /etc/apt/keyrings), the package, the client CA, config.yaml from the inventory, the
  service enabled and running as `cacert-selfservice-api`. A changed config or client CA
  restarts it here; a changed server certificate or key restarts it through
  operations/certificates.py (`certificates["selfservice_api"]["services"]`, reload-or-restart
  of a running service).

config.yaml (files/selfservice_api/config.yaml.j2) is this deploy's description of what the
package needs: listen address/port, server certificate and key, client CA and CRL, the
database reached over the MariaDB socket as the account of the same name (unix_socket
authentication, created here: files/selfservice_api/grants.sql.j2; needs mariadb.server()
to have run first), and the mail domain.
"""
import re
from pathlib import Path
from urllib.parse import urlsplit

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, server, systemd
from pyinfra.operations.util import any_changed

REPO = Path(__file__).resolve().parents[1]
NAME = "cacert-selfservice-api"  # package, service, system user and group, MariaDB account
ETC = f"/etc/{NAME}"
CONFIG = f"{ETC}/config.yaml"
CLIENT_CA = f"{ETC}/certs/client-ca.pem"
KEYRING = f"/etc/apt/keyrings/{NAME}.asc"
SOURCES = f"/etc/apt/sources.list.d/{NAME}.sources"
APT_DIRECT = f"/etc/apt/apt.conf.d/80{NAME}-direct"
# The grants as last applied without error (a failed run removes it, so the next one retries).
GRANTS = "/var/lib/cacert-deploy/selfservice-api/grants.sql"
PLACEHOLDER = "PLACEHOLDER"


class SelfServiceDataError(ValueError):
    """A selfservice_api_* inventory datum is unusable; the message names the key."""


def local_file(path, key):
    """A file on the control machine named in the inventory (relative to this repository)."""
    if PLACEHOLDER in str(path):
        raise SelfServiceDataError(
            f"{key}: {path!r} is a placeholder; put the real file in place and name it in "
            "the inventory")
    resolved = Path(path) if Path(path).is_absolute() else REPO / path
    if not resolved.is_file():
        raise SelfServiceDataError(f"{key}: {resolved} does not exist")
    return resolved


def settings(data):
    """Template variables (and local files) for this host, validated."""
    repo = data["selfservice_api_repo"]
    if set(repo) != {"url", "suite", "components", "key", "direct"}:
        raise SelfServiceDataError("selfservice_api_repo: needs exactly url, suite, "
                                   f"components, key, direct; got {', '.join(sorted(repo))}")
    url = repo["url"]
    if PLACEHOLDER in url:
        raise SelfServiceDataError(f"selfservice_api_repo url: {url!r} is a placeholder; "
                                   "set CAcert's repository URL in the inventory")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SelfServiceDataError(f"selfservice_api_repo url: {url!r} is not an http(s) URL")
    suite = repo["suite"] or data["debian_release"]
    for word in [suite, *repo["components"]]:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$", str(word)):
            raise SelfServiceDataError(f"selfservice_api_repo: {word!r} is not a suite or "
                                       "component name")
    if not repo["components"]:
        raise SelfServiceDataError("selfservice_api_repo components: name at least one")
    cert = data["certificates"]["selfservice_api"]
    return {
        "url": url,
        "repo_host": parts.hostname,
        "direct": bool(repo["direct"]),
        "suite": suite,
        "components": list(repo["components"]),
        "keyring": KEYRING,
        "key_file": local_file(repo["key"], "selfservice_api_repo key"),
        "client_ca_file": local_file(data["selfservice_api_client_ca"],
                                     "selfservice_api_client_ca"),
        "listen": data["selfservice_api_listen"],
        "port": data["ports"]["selfservice_api"]["port"],
        "names": cert["names"],
        "certificate": cert["cert"],
        "private_key": cert["key"],
        "client_ca": CLIENT_CA,
        "crl": data["selfservice_api_crl"],
        "database": data["mysql_database"],
        "mail_domain": data["mail_domain"],
    }


@deploy("Self-service API: system account")
def account():
    """The service's system user and group (before its key is installed for that group)."""
    server.group(name=f"Group {NAME}", group=NAME, system=True)
    server.user(name=f"User {NAME}", user=NAME, group=NAME, system=True, home="/nonexistent",
                create_home=False, shell="/usr/sbin/nologin")


@deploy("Self-service API")
def install():
    """Repository, package, client CA, config.yaml; the service running, restarted on change."""
    values = settings(host.data.dict())

    files.directory(name="/etc/apt/keyrings", path="/etc/apt/keyrings", mode="755")
    key = files.put(name="Repository signing key", src=str(values["key_file"]), dest=KEYRING,
                    mode="644")
    sources = files.template(name="Repository sources entry",
                             src=f"files/selfservice_api/{NAME}.sources.j2", dest=SOURCES,
                             mode="644", **values)
    if values["direct"]:
        direct = files.template(name="Repository reached without the apt proxy",
                                src="files/selfservice_api/apt-direct.conf.j2", dest=APT_DIRECT,
                                mode="644", **values)
    else:
        direct = files.file(name="Repository through the usual apt path", path=APT_DIRECT,
                            present=False)
    apt.update(name="apt lists (repository changed)", _if=any_changed(key, sources, direct))
    apt.packages(name=f"Package {NAME}", packages=[NAME])

    client_ca = files.put(name="Client CA", src=str(values["client_ca_file"]), dest=CLIENT_CA,
                          mode="644")
    config = files.template(name="config.yaml", src="files/selfservice_api/config.yaml.j2",
                            dest=CONFIG, user="root", group=NAME, mode="640", **values)
    grants = files.template(name="MariaDB account (SQL)", src="files/selfservice_api/grants.sql.j2",
                            dest=GRANTS, mode="600", create_remote_dir=True, **values)
    server.shell(name="MariaDB account and grants",
                 commands=[f"mysql < {GRANTS} || {{ rm -f {GRANTS}; exit 1; }}"],
                 _if=grants.did_change)
    systemd.service(name=f"{NAME} enabled and running", service=NAME, running=True,
                    enabled=True)
    systemd.service(name=f"Restart {NAME} (config changed)", service=NAME, restarted=True,
                    _if=any_changed(config, client_ca))
