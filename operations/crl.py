"""CRL checking: the CAcert CRLs fetched on a schedule, checked, and handed to their consumers.

On the email host (`refresh()`): a systemd timer runs /usr/local/sbin/cacert-crl-refresh
(files/crl/cacert-crl-refresh), which downloads every `crl_urls` entry, refuses any CRL not
signed by a certificate in `crl_issuers` or past its nextUpdate, and only when all passed
replaces `selfservice_api_crl` (one PEM bundle; OpenSSL-based consumers load every CRL in it)
and the single CRLs under SOURCES (one per URL, for `mailstore check cert --crl`). A changed
bundle restarts `crl_consumers` (the self-service API reads its CRL only at start). The deploy
runs the job itself when its set-up changed or no bundle exists yet.

In the lab (`lab_published()`, group lab_host): the lab CA's CRLs (root and intermediate, DER
like CAcert's) are served by the lab's http server beside the self-service apt repository
(operations/lab_selfservice_repo.py), under public/crl/. Tests revoke a certificate with
`publish_lab_crls(revoked=[serial])` and restore a clean list with `publish_lab_crls()`.
"""
import datetime
import posixpath
import re
from pathlib import Path
from urllib.parse import urlsplit

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.operations import apt, files, python, server, systemd

from operations import staging

REPO = Path(__file__).resolve().parents[1]
SCRIPT = "/usr/local/sbin/cacert-crl-refresh"
ETC = "/etc/cacert-crl"
ISSUERS = f"{ETC}/issuers.pem"
SOURCES = "/var/lib/cacert-crl/sources"
UNIT = "cacert-crl-refresh"
# Lab: where the lab host serves its CA's CRLs (the self-service repository's http root).
LAB_CRL_DIR = REPO / ".lab" / "selfservice-repo" / "public" / "crl"
LAB_CA_DIR = REPO / ".lab" / "ca"
LAB_CRL_NAMES = ("root", "intermediate")
# A lab CRL closer than this to its nextUpdate is issued anew by the lab deploy.
LAB_CRL_MIN_DAYS = 7


class CrlDataError(ValueError):
    """A crl_* inventory datum is unusable; the message names the key."""


def _local_file(path, key):
    if "PLACEHOLDER" in str(path):
        raise CrlDataError(f"{key}: {path!r} is a placeholder; put the real file in place and "
                           "name it in the inventory")
    resolved = Path(path) if Path(path).is_absolute() else REPO / path
    if not resolved.is_file():
        raise CrlDataError(f"{key}: {resolved} does not exist")
    return resolved


def _source_name(url):
    """The file name the refresh job gives the CRL from `url` (its last path component)."""
    return posixpath.basename(urlsplit(str(url)).path)


def check_data(data):
    """Validate the crl_* data that needs no local file (inventories/validate.py runs this for
    every email host before any host is touched; the issuer files are read at deploy time)."""
    urls = data["crl_urls"]
    if not urls or isinstance(urls, str):
        raise CrlDataError("crl_urls: give a list of at least one URL")
    names = []
    for url in urls:
        parts = urlsplit(str(url))
        # The URLs end up on a systemd ExecStart line: no spaces, quotes or specifiers.
        if parts.scheme not in ("http", "https") or not parts.hostname or \
                not re.match(r"^[A-Za-z0-9._~:/?#\[\]@!&'()*+,;=-]+$", url) or \
                re.search(r"['%\\]", url):
            raise CrlDataError(f"crl_urls: {url!r} is not a plain http(s) URL")
        names.append(_source_name(url))
    if len(set(names)) != len(names) or "" in names:
        raise CrlDataError(f"crl_urls: each URL needs its own file name, got {names}")
    schedule = data["crl_schedule"]
    if not isinstance(schedule, str) or not re.match(r"^[A-Za-z0-9*:,./~ -]+$", schedule):
        raise CrlDataError(f"crl_schedule: {schedule!r} is not a systemd calendar expression")
    for service in data["crl_consumers"]:
        if not re.match(r"^[A-Za-z0-9@._-]+$", str(service)):
            raise CrlDataError(f"crl_consumers: {service!r} is not a systemd unit name")
    bundle = data["selfservice_api_crl"]
    if not str(bundle).startswith("/") or " " in str(bundle):
        raise CrlDataError(f"selfservice_api_crl: {bundle!r} is not an absolute path")


def source_files(data):
    """The per-URL CRL files the refresh job keeps under SOURCES (validated; for monitoring)."""
    check_data(data)
    return [f"{SOURCES}/{_source_name(url)}.pem" for url in data["crl_urls"]]


def settings(data):
    """Template variables for this host, validated (names the key at fault)."""
    check_data(data)
    issuer_files = data["crl_issuers"] or [data["selfservice_api_client_ca"]]
    key = "crl_issuers" if data["crl_issuers"] else "selfservice_api_client_ca (crl_issuers empty)"
    issuers = "".join(_local_file(p, key).read_text() for p in issuer_files)
    if "-----BEGIN CERTIFICATE-----" not in issuers:
        raise CrlDataError(f"{key}: no PEM certificate in {issuer_files}")
    return {"urls": list(data["crl_urls"]), "issuers_pem": issuers, "issuers": ISSUERS,
            "bundle": data["selfservice_api_crl"], "sources": SOURCES,
            "consumers": list(data["crl_consumers"]), "schedule": data["crl_schedule"],
            "script": SCRIPT}


def config_files(values):
    def unit(suffix):
        return staging.ConfigFile(f"/etc/systemd/system/{UNIT}.{suffix}", staging.render(
            f"files/crl/{UNIT}.{suffix}.j2", **values))
    return [staging.ConfigFile(ISSUERS, values["issuers_pem"]), unit("service"), unit("timer")]


@deploy("CRL refresh")
def refresh():
    values = settings(host.data.dict())
    apt.packages(name="Download and CRL tools", packages=["curl", "openssl"])
    files.directory(name=ETC, path=ETC, mode="755")
    script = files.put(name="CRL refresh script", src="files/crl/cacert-crl-refresh",
                       dest=SCRIPT, mode="755")
    config = staging.files(
        name="CRL issuers and refresh timer (calendar checked first)",
        config_files=config_files(values),
        stage=f"{staging.STAGING_ROOT}/crl",
        check=f"systemd-analyze calendar '{values['schedule']}' >/dev/null",
    )
    systemd.daemon_reload(name="systemd reads the refresh units", _if=config.did_change)
    missing = not host.get_fact(File, path=values["bundle"])
    server.shell(name="Refresh the CRLs now (set-up changed or no CRL yet)",
                 commands=[f"systemctl start {UNIT}.service || "
                           f"{{ journalctl -u {UNIT}.service -n 5 --no-pager >&2; false; }}"],
                 _if=lambda: missing or config.did_change() or script.did_change())
    systemd.service(name="CRL refresh timer", service=f"{UNIT}.timer", running=True,
                    enabled=True)


# --- lab only -------------------------------------------------------------------------------

def publish_lab_crls(revoked=(), directory=LAB_CRL_DIR, ca_dir=LAB_CA_DIR):
    """Issue and publish the lab CA's CRLs (DER); `revoked` serials go on the intermediate's."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from lab import ca

    directory.mkdir(parents=True, exist_ok=True)
    for name in LAB_CRL_NAMES:
        key = serialization.load_pem_private_key((ca_dir / f"{name}.key.pem").read_bytes(), None)
        cert = x509.load_pem_x509_certificate((ca_dir / f"{name}.pem").read_bytes())
        crl = ca.make_crl(key, cert, revoked if name == "intermediate" else ())
        tmp = directory / f".{name}.crl.tmp"
        tmp.write_bytes(crl.public_bytes(serialization.Encoding.DER))
        tmp.chmod(0o644)
        tmp.replace(directory / f"{name}.crl")


def lab_crls_fresh(directory=LAB_CRL_DIR, min_days=LAB_CRL_MIN_DAYS):
    """True when every lab CRL exists, revokes nothing and is good for `min_days` more."""
    from cryptography import x509
    limit = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=min_days)
    for name in LAB_CRL_NAMES:
        path = directory / f"{name}.crl"
        if not path.is_file():
            return False
        crl = x509.load_der_x509_crl(path.read_bytes())
        next_update = getattr(crl, "next_update_utc", None) or \
            crl.next_update.replace(tzinfo=datetime.timezone.utc)
        if len(crl) or next_update < limit:
            return False
    return True


@deploy("Lab: the lab CA's CRLs")
def lab_published():
    """Clean CRLs of the lab CA, served at http://<bridge>:8080/crl/{root,intermediate}.crl."""
    if lab_crls_fresh():
        host.noop("lab CRLs present and fresh")
        return
    python.call(name="Issue clean lab CRLs", function=publish_lab_crls)
