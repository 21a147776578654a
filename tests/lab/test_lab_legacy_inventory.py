"""inventories/lab_legacy.py loads as pyinfra loads it (without connecting anywhere): this
machine as Infra02 of the container `legacy`, the legacy container over SSH, and the adopted
data of `.lab/legacy/adopted.json` on top of the lab's defaults. Needs the lab's `.lab/`
(SSH key, secrets), not the legacy container. Like tests/lab/test_legacy.py it runs on the
lab's bullseye iteration only (adoption's release)."""
import json
import subprocess

import pytest

from conftest import REPO
from operations.secrets import InventoryError

LAB_RELEASES = ("bullseye",)


@pytest.fixture(scope="module")
def lab_legacy():
    # Imported here, not at collection: on the releases that deselect this module the
    # inventory (and the validation it runs) is never loaded.
    from inventories import lab_legacy
    return lab_legacy


def test_pyinfra_loads_the_legacy_inventory_without_connecting():
    result = subprocess.run([str(REPO / ".venv" / "bin" / "pyinfra"), "inventories/lab_legacy.py",
                             "debug-inventory", "--json"], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    hosts = {h["name"]: h for h in json.loads(result.stdout)}
    assert set(hosts) == {"@local", "email.cacert.test"}
    infra02, email = hosts["@local"], hosts["email.cacert.test"]
    assert "infra02" in infra02["groups"] and "lab_host" not in infra02["groups"]
    assert "email" in email["groups"]
    assert infra02["data"]["container_name"] == "legacy"
    assert infra02["data"]["debian_release"] == "bullseye"
    assert infra02["data"]["container_net"]["ipv4"] == "10.0.3.29/24"
    # Never the main container's data volume.
    assert infra02["data"]["data_volume_host_path"] != "/srv/cacert-lab/mail"
    assert email["data"]["ssh_hostname"] == "10.0.3.29"
    assert email["data"]["ssh_known_hosts_file"] == str(REPO / ".lab" / "known_hosts-legacy")
    assert email["data"]["mail_accounts"] == []


def test_adopted_data_lies_on_top_of_the_lab_defaults(lab_legacy, tmp_path):
    adopted = tmp_path / "adopted.json"
    adopted.write_text(json.dumps({"vmail_uid": 2000, "relayhost": None,
                                   "etc_aliases": {"postmaster": "alice@cacert.test"},
                                   "_source": "10.0.3.29", "_findings": []}))
    data = lab_legacy.legacy_data(adopted)
    assert data["vmail_uid"] == 2000
    assert data["etc_aliases"] == {"postmaster": "alice@cacert.test"}
    assert data["container_name"] == "legacy"
    assert not [key for key in data if key.startswith("_")]
    assert lab_legacy.legacy_data(tmp_path / "absent.json")["container_name"] == "legacy"


@pytest.mark.parametrize("content", ["{not json", "[1, 2]"])
def test_a_bad_adopted_file_is_one_clear_error(lab_legacy, tmp_path, content):
    adopted = tmp_path / "adopted.json"
    adopted.write_text(content)
    with pytest.raises(InventoryError, match="adopted.json: not"):
        lab_legacy.legacy_data(adopted)
