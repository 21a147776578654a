"""Fixtures for the deploy's unit tests: a valid secrets directory and the email host's data."""
import copy
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).parent))

from operations.defaults import defaults  # noqa: E402
from operations.secrets import SECRETS_ENV  # noqa: E402
from tests.harness import PKI  # noqa: E402

ACCOUNTS = [{"user": "alice", "email": "alice@cacert.test"},
            {"user": "bob", "email": "bob@cacert.test"}]
ALIASES = [{"alias": "pr@cacert.test", "owner": "alice@cacert.test", "send_as": True},
           {"alias": "postmaster@cacert.test", "owner": "alice@cacert.test", "send_as": False}]
NAMES = {"email": ["email.cacert.test"], "community": ["community.cacert.test"],
         "selfservice_api": ["email.infra.cacert.test"]}


@pytest.fixture(scope="session")
def pki():
    return PKI()


def write_secret(directory, name, text, mode=0o600):
    path = Path(directory) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.fixture
def secrets(tmp_path, monkeypatch, pki):
    """A complete, valid secrets directory named by $CACERT_EMAIL_SECRETS."""
    directory = tmp_path / "secrets"
    directory.mkdir()
    write_secret(directory, "ca.pem", pki.pem_root())
    for key, names in NAMES.items():
        chain, private = pki.leaf_pem(names)
        write_secret(directory, f"{key}.chain.pem", chain)
        write_secret(directory, f"{key}.key.pem", private)
    write_secret(directory, "mysql_postfix.password", "postfix-Secret-1\n")
    write_secret(directory, "mysql_dovecot.password", "dovecot-Secret-2\n")
    write_secret(directory, "backup.key", "0123456789abcdef" * 4 + "\n")
    write_secret(directory, "icinga2_api.password", "icinga-Secret-3\n")
    for account in ACCOUNTS:
        write_secret(directory, f"accounts/{account['email']}.password", "alice-pw-123\n")
    monkeypatch.setenv(SECRETS_ENV, str(directory))
    return directory


@pytest.fixture
def email_data():
    """The email host's inventory data as the lab gives it (overrides of group_data/all.py)."""
    certs = copy.deepcopy(defaults()["certificates"])
    for key, names in NAMES.items():
        certs[key]["names"] = names
    return {
        "mail_domain": "cacert.test",
        "hostnames": {"email": "email.cacert.test", "community": "community.cacert.test",
                      "infra": "email.infra.cacert.test", "intra": "email.intra.cacert.test"},
        "certificates": certs,
        "transports": {"lists.cacert.test": "smtp:[10.0.3.1]:2525",
                       "issue.cacert.test": "smtp:[10.0.3.1]:2525"},
        "mail_accounts": copy.deepcopy(ACCOUNTS),
        "mail_aliases": copy.deepcopy(ALIASES),
    }
