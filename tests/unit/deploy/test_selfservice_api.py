"""operations/selfservice_api.py: config.yaml and the sources entry from inventory data, the
placeholders that stop a production run, and the order of the install steps."""
import copy

import jinja2
import pytest
import yaml

from tests.unit.deploy import fake_host  # noqa: F401  (puts the repository on sys.path)
from tests.unit.deploy.conftest import REPO
from tests.unit.deploy.fake_host import run

from operations.defaults import defaults
from operations import selfservice_api



@pytest.fixture
def lab_data(tmp_path):
    """The lab's self-service data, with the key and client CA as files in tmp_path."""
    key = tmp_path / "archive-key.asc"
    key.write_text("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nxx\n"
                   "-----END PGP PUBLIC KEY BLOCK-----\n")
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nxx\n-----END CERTIFICATE-----\n")
    certificates = copy.deepcopy(defaults()["certificates"])
    certificates["selfservice_api"]["names"] = ["email.infra.cacert.test"]
    return {
        "mail_domain": "cacert.test",
        "certificates": certificates,
        "selfservice_api_repo": {"url": "http://10.0.3.1:8080/", "suite": "lab",
                                 "components": ["main"], "key": str(key), "direct": True},
        "selfservice_api_client_ca": str(ca),
    }


def render(name, data):
    values = selfservice_api.settings({**defaults(), **data})
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.from_string((REPO / "files/selfservice_api" / f"{name}.j2").read_text()) \
        .render(**values)


def test_config_yaml_has_what_the_package_needs(lab_data):
    config = yaml.safe_load(render("config.yaml", lab_data))
    assert config["listen"] == {"address": "0.0.0.0", "port": 9443}
    assert config["tls"] == {
        "certificate": "/etc/cacert-selfservice-api/certs/server.crt.pem",
        "private_key": "/etc/cacert-selfservice-api/private/server.key.pem",
        "client_ca": "/etc/cacert-selfservice-api/certs/client-ca.pem",
        "crl": "/var/lib/cacert-crl/cacert-class3.crl.pem",
    }
    assert config["database"] == {"unix_socket": "/run/mysqld/mysqld.sock",
                                  "name": "cacertusers", "user": "cacert-selfservice-api"}
    assert config["mail"] == {"domain": "cacert.test"}


def test_config_follows_the_inventory(lab_data):
    data = {**lab_data, "selfservice_api_listen": "::",
            "selfservice_api_crl": "/srv/crl/class3.pem",
            "ports": {**defaults()["ports"], "selfservice_api": {"port": 9444,
                                                                 "from": "community"}}}
    config = yaml.safe_load(render("config.yaml", data))
    assert config["listen"] == {"address": "::", "port": 9444}
    assert config["tls"]["crl"] == "/srv/crl/class3.pem"


def test_sources_entry_is_signed_by_the_keyring(lab_data):
    sources = render("cacert-selfservice-api.sources", lab_data)
    fields = dict(line.split(": ", 1) for line in sources.splitlines()
                  if line and not line.startswith("#"))
    assert fields == {"Types": "deb", "URIs": "http://10.0.3.1:8080/", "Suites": "lab",
                      "Components": "main",
                      "Signed-By": "/etc/apt/keyrings/cacert-selfservice-api.asc"}
    assert render("apt-direct.conf", lab_data).strip().endswith(
        'Acquire::http::Proxy::10.0.3.1 "DIRECT";')


def test_suite_defaults_to_the_release(lab_data):
    lab_data["selfservice_api_repo"]["suite"] = None
    assert "Suites: trixie" in render("cacert-selfservice-api.sources",
                                      {**lab_data, "debian_release": "trixie"})


@pytest.mark.parametrize("change, key", [
    ({"selfservice_api_repo": None}, "selfservice_api_repo url"),
    ({"selfservice_api_client_ca": None}, "selfservice_api_client_ca"),
    ({"selfservice_api_repo": "key"}, "selfservice_api_repo key"),
])
def test_production_placeholders_stop_the_run(lab_data, change, key):
    """The defaults (production) name placeholders: the deploy refuses them by name."""
    data = copy.deepcopy(lab_data)
    ((name, field),) = change.items()
    if field is None:
        data[name] = defaults()[name]
    else:
        data[name][field] = defaults()[name][field]
    with pytest.raises(selfservice_api.SelfServiceDataError, match=rf"^{key}: .*placeholder"):
        selfservice_api.settings({**defaults(), **data})


@pytest.mark.parametrize("repo_change, message", [
    ({"url": "ftp://example.org/"}, "is not an http"),
    ({"components": []}, "name at least one"),
    ({"suite": "lab main"}, "not a suite or component"),
    ({"key": "/nonexistent/key.asc"}, "does not exist"),
])
def test_bad_repository_data_is_named(lab_data, repo_change, message):
    lab_data["selfservice_api_repo"].update(repo_change)
    with pytest.raises(selfservice_api.SelfServiceDataError,
                       match=rf"^selfservice_api_repo.*{message}"):
        selfservice_api.settings({**defaults(), **lab_data})


def _names(ops):
    return [op.name.split(" | ")[-1] for op in ops]


def test_fresh_host_installs_in_order_and_restarts_on_change(lab_data):
    # Running already (as after the package's postinst): the config change restarts it.
    ops = run(selfservice_api.install, data=lab_data,
              facts={"SystemdStatus": {"cacert-selfservice-api.service": True}})
    names = _names(ops)
    order = ["Repository signing key", "Repository sources entry",
             "Repository reached without the apt proxy", "apt lists (repository changed)",
             "Package cacert-selfservice-api", "Client CA", "config.yaml",
             "cacert-selfservice-api enabled and running",
             "Restart cacert-selfservice-api (config changed)"]
    assert [n for n in names if n in order] == order
    commands = {name: op.commands for name, op in zip(names, ops)}
    assert any("apt-get" in c and "install" in c and c.endswith("cacert-selfservice-api")
               for c in commands["Package cacert-selfservice-api"])
    assert "systemctl restart cacert-selfservice-api.service" in \
        commands["Restart cacert-selfservice-api (config changed)"]
    config = next(op for name, op in zip(names, ops) if name == "config.yaml")
    # Readable by the service's group, not by everyone (it names the database account).
    assert any(c.startswith("chmod 640 ") for c in config.commands)
    assert any(c.startswith("chown root:cacert-selfservice-api ") for c in config.commands)


def test_without_direct_the_proxy_exception_is_removed(lab_data):
    lab_data["selfservice_api_repo"]["direct"] = False
    ops = run(selfservice_api.install, data=lab_data,
              facts={"File": lambda path: {"size": 1, "mode": 644}})
    assert "Repository through the usual apt path" in _names(ops)
    assert "Repository reached without the apt proxy" not in _names(ops)


def test_account_is_a_system_user_without_login():
    facts = {"Os": "Linux", "LinuxName": "Debian", "Which": "/usr/sbin/useradd", "Users": {},
             "Groups": set()}
    ops = run(selfservice_api.account, facts=facts)
    commands = [c for op in ops for c in op.commands]
    assert any(c.startswith("groupadd") and "-r" in c and
               c.endswith("cacert-selfservice-api") for c in commands)
    useradd = next(c for c in commands if c.startswith("useradd"))
    assert "-r" in useradd and "/usr/sbin/nologin" in useradd


def test_lab_package_digest_follows_content_and_exec_bits(tmp_path):
    """The lab rebuilds its stand-in package exactly when the source changed."""
    from operations import lab_selfservice_repo

    (tmp_path / "DEBIAN").mkdir()
    script = tmp_path / "DEBIAN" / "postinst"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    first = lab_selfservice_repo.source_digest(tmp_path)
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "x.pyc").write_bytes(b"\0")
    assert lab_selfservice_repo.source_digest(tmp_path) == first
    script.chmod(0o644)
    assert lab_selfservice_repo.source_digest(tmp_path) != first
    script.chmod(0o755)
    script.write_text("#!/bin/sh\nexit 0\n")
    assert lab_selfservice_repo.source_digest(tmp_path) != first
