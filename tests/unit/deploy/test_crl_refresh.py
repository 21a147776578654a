"""operations/crl.py: data checks, the timer units, the deploy's steps, the lab CRLs, and the
refresh script run for real (file:// URLs, real openssl): it installs only CRLs signed by an
expected CA and not stale, keeps the installed ones otherwise."""
import datetime
import shutil
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from tests.unit.deploy import fake_host  # noqa: F401  (puts the repository on sys.path)
from tests.unit.deploy.conftest import REPO
from tests.unit.deploy.fake_host import run

from operations.defaults import defaults
from operations.secrets import InventoryError
from lab import ca
from operations import crl, staging

SCRIPT = REPO / "files" / "crl" / "cacert-crl-refresh"
BUNDLE = "/var/lib/cacert-crl/cacert-class3.crl.pem"


@pytest.fixture(scope="module")
def lab_ca(tmp_path_factory):
    """A lab CA on disk as lab/secrets.py lays it out (.lab/ca/)."""
    directory = tmp_path_factory.mktemp("ca")
    root_key, root = ca.make_root()
    inter_key, inter = ca.make_intermediate(root_key, root)
    for name, key, cert in (("root", root_key, root), ("intermediate", inter_key, inter)):
        (directory / f"{name}.key.pem").write_bytes(ca.key_pem(key))
        (directory / f"{name}.pem").write_bytes(ca.cert_pem(cert))
    return directory


@pytest.fixture
def data(lab_ca):
    return {**defaults(), "crl_urls": ["http://10.0.3.1:8080/crl/root.crl",
                                       "http://10.0.3.1:8080/crl/intermediate.crl"],
            "crl_issuers": [str(lab_ca / "root.pem"), str(lab_ca / "intermediate.pem")]}


def test_settings_bundle_the_issuers(data, lab_ca):
    values = crl.settings(data)
    assert values["issuers_pem"] == (lab_ca / "root.pem").read_text() + \
        (lab_ca / "intermediate.pem").read_text()
    assert values["bundle"] == BUNDLE
    assert values["consumers"] == ["cacert-selfservice-api"]


def test_issuers_default_to_the_api_client_ca(data, lab_ca):
    values = crl.settings({**data, "crl_issuers": [],
                           "selfservice_api_client_ca": str(lab_ca / "root.pem")})
    assert values["issuers_pem"] == (lab_ca / "root.pem").read_text()


def test_production_defaults_are_cacerts_crls_and_stop_on_the_placeholder_ca():
    assert defaults()["crl_urls"] == ["http://crl.cacert.org/revoke.crl",
                                      "http://crl.cacert.org/class3-revoke.crl"]
    with pytest.raises(crl.CrlDataError, match="placeholder"):
        crl.settings(defaults())


@pytest.mark.parametrize("key, value, message", [
    ("crl_urls", [], "crl_urls"),
    ("crl_urls", "http://crl.cacert.org/revoke.crl", "crl_urls"),
    ("crl_urls", ["ftp://crl.cacert.org/revoke.crl"], "crl_urls"),
    ("crl_urls", ["http://crl.cacert.org/re voke.crl"], "crl_urls"),
    ("crl_urls", ["http://crl.cacert.org/%h.crl"], "crl_urls"),
    ("crl_urls", ["http://a.example/x.crl", "http://b.example/x.crl"], "own file name"),
    ("crl_issuers", ["/nonexistent/ca.pem"], "crl_issuers"),
    ("crl_schedule", "hourly; rm -rf /", "crl_schedule"),
    ("crl_consumers", ["bad service"], "crl_consumers"),
    ("selfservice_api_crl", "relative.pem", "selfservice_api_crl"),
])
def test_bad_data_is_refused_naming_the_key(data, key, value, message):
    with pytest.raises(crl.CrlDataError, match=message):
        crl.settings({**data, key: value})


def test_units_run_the_script_with_the_inventory(data):
    values = crl.settings({**data, "crl_consumers": []})
    service = staging.render("files/crl/cacert-crl-refresh.service.j2", **values)
    assert ("ExecStart=/usr/local/sbin/cacert-crl-refresh /etc/cacert-crl/issuers.pem "
            f"{BUNDLE} /var/lib/cacert-crl/sources - http://10.0.3.1:8080/crl/root.crl "
            "http://10.0.3.1:8080/crl/intermediate.crl") in service
    assert "Type=oneshot" in service
    timer = staging.render("files/crl/cacert-crl-refresh.timer.j2", **crl.settings(data))
    assert "OnCalendar=hourly" in timer and "Persistent=true" in timer


def test_deploy_checks_the_calendar_and_refreshes_a_host_without_crl(data):
    overrides = {k: data[k] for k in ("crl_urls", "crl_issuers")}
    ops = run(crl.refresh, data=overrides, facts={"File": lambda path, **kw: None})
    config = next(op for op in ops if "| CRL issuers" in op.name)
    assert "systemd-analyze calendar 'hourly' >/dev/null" in config.commands
    assert "/etc/cacert-crl/issuers.pem" in " ".join(config.commands)
    names = [op.name for op in ops]
    refresh = next(n for n in names if "| Refresh the CRLs now" in n)
    timer = next(n for n in names if "| CRL refresh timer" in n)
    assert names.index(config.name) < names.index(refresh) < names.index(timer)


def test_lab_crls_revoke_on_the_intermediate_and_are_renewed_when_dirty(tmp_path, lab_ca):
    out = tmp_path / "crl"
    crl.publish_lab_crls(revoked=[4242], directory=out, ca_dir=lab_ca)
    inter = x509.load_der_x509_crl((out / "intermediate.crl").read_bytes())
    root = x509.load_der_x509_crl((out / "root.crl").read_bytes())
    assert inter.get_revoked_certificate_by_serial_number(4242) is not None
    assert len(root) == 0
    issuer = x509.load_pem_x509_certificate((lab_ca / "intermediate.pem").read_bytes())
    assert inter.issuer == issuer.subject and inter.is_signature_valid(issuer.public_key())
    assert not crl.lab_crls_fresh(out)  # a revocation left behind is cleaned by the lab deploy
    crl.publish_lab_crls(directory=out, ca_dir=lab_ca)
    assert crl.lab_crls_fresh(out)
    assert not crl.lab_crls_fresh(out, min_days=60)


# --- the refresh script, for real ----------------------------------------------------------

needs_tools = pytest.mark.skipif(not (shutil.which("curl") and shutil.which("openssl")),
                                 reason="curl and openssl are not installed "
                                        "(tests/packages lists them)")


@pytest.fixture
def served(tmp_path, lab_ca):
    """(run(), paths): the lab CRLs as file:// URLs and a function running the script."""
    public = tmp_path / "public"
    crl.publish_lab_crls(directory=public, ca_dir=lab_ca)
    issuers = tmp_path / "issuers.pem"
    issuers.write_text((lab_ca / "root.pem").read_text() +
                       (lab_ca / "intermediate.pem").read_text())
    bundle = tmp_path / "out" / "bundle.pem"
    sources = tmp_path / "out" / "sources"

    def run_script(issuers_file=issuers):
        return subprocess.run(
            [str(SCRIPT), str(issuers_file), str(bundle), str(sources), "-",
             f"file://{public}/root.crl", f"file://{public}/intermediate.crl"],
            capture_output=True, text=True, timeout=60)
    return run_script, {"public": public, "bundle": bundle, "sources": sources}


@needs_tools
def test_script_installs_checked_crls_once(served):
    run_script, paths = served
    first = run_script()
    assert first.returncode == 0, first.stderr
    assert "replaced (2 CRLs)" in first.stdout
    assert paths["bundle"].read_text().count("BEGIN X509 CRL") == 2
    assert sorted(p.name for p in paths["sources"].iterdir()) == \
        ["intermediate.crl.pem", "root.crl.pem"]
    again = run_script()
    assert again.returncode == 0 and "unchanged" in again.stdout


def _stale_crl(lab_ca):
    key = serialization.load_pem_private_key(
        (lab_ca / "intermediate.key.pem").read_bytes(), None)
    cert = x509.load_pem_x509_certificate((lab_ca / "intermediate.pem").read_bytes())
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateRevocationListBuilder().issuer_name(cert.subject)
            .last_update(now - datetime.timedelta(days=10))
            .next_update(now - datetime.timedelta(days=1)).sign(key, hashes.SHA256()))


@needs_tools
@pytest.mark.parametrize("spoil", ["foreign signer", "stale", "garbage", "missing"])
def test_script_keeps_the_installed_crls_when_one_is_bad(served, lab_ca, spoil):
    run_script, paths = served
    assert run_script().returncode == 0
    before = paths["bundle"].read_bytes()
    target = paths["public"] / "intermediate.crl"
    if spoil == "foreign signer":
        other_key, other = ca.make_root()
        forged = ca.make_crl(other_key, x509.load_pem_x509_certificate(
            (lab_ca / "intermediate.pem").read_bytes()), [99])
        target.write_bytes(forged.public_bytes(serialization.Encoding.DER))
    elif spoil == "stale":
        target.write_bytes(_stale_crl(lab_ca).public_bytes(serialization.Encoding.PEM))
    elif spoil == "garbage":
        target.write_text("<html>maintenance</html>")
    else:
        target.unlink()
    result = run_script()
    assert result.returncode == 1
    assert "intermediate.crl" in result.stderr and "installed CRLs are kept" in result.stderr
    assert paths["bundle"].read_bytes() == before


@needs_tools
def test_script_refuses_crls_when_the_issuer_is_not_listed(served, lab_ca):
    run_script, paths = served
    result = run_script(issuers_file=lab_ca / "root.pem")
    assert result.returncode == 1 and "signature not verified" in result.stderr
    assert not paths["bundle"].exists()


def test_the_inventory_check_refuses_bad_crl_and_dkim_data_before_any_host(secrets, email_data):
    from inventories import validate
    validate.checked("email", email_data)  # the lab's data passes
    for key, value in (("crl_urls", ["ftp://x.example/a.crl"]), ("dkim_selector", "a b")):
        with pytest.raises(InventoryError, match=key):
            validate.checked("email", {**email_data, key: value})
