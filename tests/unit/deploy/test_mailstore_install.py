"""operations/mailstore.py against fake hosts: pip runs only when the wheel set changed."""
from tests.unit.deploy import fake_host  # noqa: F401  (puts the repository on sys.path)
from tests.unit.deploy.fake_host import run

from operations import mailstore, wheelhouse


def _wheelhouse(tmp_path, monkeypatch, content=b"wheel"):
    (tmp_path / "cacert_email-0.1.0-py3-none-any.whl").write_bytes(content)
    (tmp_path / "click-8.1.8-py3-none-any.whl").write_bytes(b"click")
    monkeypatch.setattr(wheelhouse, "build", lambda release: tmp_path)
    return mailstore._digest(tmp_path)


def _pip_installs(ops):
    return [c for op in ops for c in op.commands if "pip install" in c]


def test_fresh_host_installs_from_the_uploaded_wheels_only(tmp_path, monkeypatch):
    _wheelhouse(tmp_path, monkeypatch)
    installs = _pip_installs(run(mailstore.install))
    assert len(installs) == 1
    assert "--no-index" in installs[0] and "--find-links /opt/mailstore/wheels" in installs[0]


def test_unchanged_wheel_set_installs_nothing(tmp_path, monkeypatch):
    digest = _wheelhouse(tmp_path, monkeypatch)
    ops = run(mailstore.install, facts={"FileContents": [digest]})
    assert _pip_installs(ops) == []


def test_changed_wheel_reinstalls(tmp_path, monkeypatch):
    old = _wheelhouse(tmp_path, monkeypatch, content=b"old")
    (tmp_path / "cacert_email-0.1.0-py3-none-any.whl").write_bytes(b"new")
    assert mailstore._digest(tmp_path) != old
    assert len(_pip_installs(run(mailstore.install, facts={"FileContents": [old]}))) == 1

