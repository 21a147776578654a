"""operations/volume_owner.py: the data volume's owner marker and Dovecot's start check,
against fake hosts (tests/unit/deploy/fake_host.py), and the check script itself run here."""
import subprocess

import pytest
from pyinfra.api.exceptions import DeployError

from tests.unit.deploy import fake_host
from tests.unit.deploy.fake_host import REPO, run

from operations import dovecot, volume_owner

SCRIPT = REPO / "files" / "volume_owner" / "data-volume-owner"
DROP_IN = "/etc/systemd/system/dovecot.service.d/cacert-volume-owner.conf"


def _guard(owner, **data):
    return run(volume_owner.guard, facts={"VolumeOwner": owner}, data=data)


def _marker_writes(ops):
    return {dest: text for op in ops for dest, text in op.uploads.items()
            if dest.endswith("/.cacert-owner")}


def test_first_deploy_adopts_the_volume_and_installs_the_check():
    ops = _guard(None)
    assert _marker_writes(ops) == {"/srv/mail/.cacert-owner": "email\n"}
    uploads = {dest: text for op in ops for dest, text in op.uploads.items()}
    assert "ExecStartPre=/usr/local/sbin/data-volume-owner /srv/mail email" in uploads[DROP_IN]
    assert uploads["/usr/local/sbin/data-volume-owner"] == SCRIPT.read_text()
    assert any("daemon-reload" in c for op in ops for c in op.commands)


def test_a_marker_naming_this_container_is_left_alone():
    assert _marker_writes(_guard("email")) == {}


def test_a_marker_naming_another_container_stops_the_deploy():
    with pytest.raises(DeployError, match=r"/srv/mail/\.cacert-owner names container "
                                          r"'email-next', not 'email'"):
        _guard("email-next")


def test_a_successor_never_writes_the_marker():
    assert _marker_writes(_guard(None, container_name="email-next", successor_of="email")) == {}
    assert _marker_writes(_guard("email", container_name="email-next",
                                 successor_of="email")) == {}
    with pytest.raises(DeployError, match="neither its nor the old container's"):
        _guard("other", container_name="email-next", successor_of="email")


@pytest.mark.parametrize("data, problem", [
    ({"container_name": "email; rm -rf /"}, "container_name="),
    ({"data_volume": "srv/mail"}, "data_volume="),
    ({"successor_of": "email"}, "this container's own name"),
])
def test_bad_names_are_refused_before_anything_runs(data, problem):
    with pytest.raises(DeployError, match=problem):
        _guard(None, **data)


def _dovecot_ops(secrets, email_data, owner, **data):
    facts = {"Os": "Linux", "LinuxName": "Debian", "Groups": [], "Users": {},
             "Which": "/usr/sbin/useradd", "VolumeOwner": owner}
    return fake_host.run(dovecot.server, facts=facts, data={**email_data, **data})


def test_a_successor_configures_dovecot_but_does_not_start_it(secrets, email_data):
    ops = _dovecot_ops(secrets, email_data, "email", container_name="email-next",
                       successor_of="email")
    commands = [c for op in ops for c in op.commands]
    assert not any("systemctl start dovecot" in c or "reload-or-restart" in c
                   for c in commands)
    assert any(op.name.endswith("Dovecot stopped until the cut-over") for op in ops)
    # The serving container's deploy starts it.
    ops = _dovecot_ops(secrets, email_data, "email")
    assert any(op.name.endswith("Dovecot running") for op in ops)


def _policy(tmp_path, name, *args):
    """Exit status of the rendered policy-rc.d with its check pointed at the real script."""
    ops = _guard("email")
    text = next(op.uploads[volume_owner.POLICY_RC_D] for op in ops
                if volume_owner.POLICY_RC_D in op.uploads)
    text = text.replace(volume_owner.CHECK, f"sh {SCRIPT}").replace("/srv/mail", str(tmp_path))
    text = text.replace("/srv/mail", str(tmp_path)).replace(" email ||", f" {name} ||")
    return subprocess.run(["sh", "-c", text, "policy-rc.d", *args], capture_output=True,
                          text=True).returncode


def test_package_scripts_may_start_dovecot_only_in_the_owner(tmp_path):
    (tmp_path / ".cacert-owner").write_text("email\n")
    assert _policy(tmp_path, "email-next", "dovecot", "start") == 101
    assert _policy(tmp_path, "email-next", "--quiet", "dovecot.service", "restart") == 101
    assert _policy(tmp_path, "email-next", "dovecot", "stop") == 0
    assert _policy(tmp_path, "email-next", "postfix", "start") == 0
    assert _policy(tmp_path, "email", "dovecot", "restart") == 0


def _check(tmp_path, name, marker=None):
    if marker is not None:
        (tmp_path / ".cacert-owner").write_text(marker)
    return subprocess.run(["sh", str(SCRIPT), str(tmp_path), name], capture_output=True,
                          text=True)


def test_the_check_passes_only_in_the_container_the_marker_names(tmp_path):
    assert _check(tmp_path, "email").returncode == 1
    assert "does not exist" in _check(tmp_path, "email").stderr
    result = _check(tmp_path, "email-next", "email\n")
    assert result.returncode == 1
    assert "names container 'email', this is 'email-next'" in result.stderr
    assert _check(tmp_path, "email").returncode == 0
