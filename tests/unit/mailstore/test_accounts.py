"""mailstore.accounts and `mailstore account` without a database: addresses, hashes Dovecot
verifies (real `doveadm pw -t`), where the password comes from, help and one-line errors."""
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from mailstore import accounts
from mailstore.cli import main


def test_address_forms():
    assert accounts.address("Alice@CAcert.test") == ("alice@cacert.test", "alice")
    assert accounts.address("bob", "cacert.test") == ("bob@cacert.test", "bob")
    for bad in ("bob", "@cacert.test", "a b@cacert.test", "a@b@c"):
        with pytest.raises(accounts.AccountError):
            accounts.address(bad)


def test_mailbox_names_are_safe_directory_names():
    assert accounts.mailbox_name("alice") == "alice"
    for bad in ("", ".hidden", "a/b", ".."):
        with pytest.raises(accounts.AccountError):
            accounts.mailbox_name(bad)


@pytest.mark.parametrize("password", ["alice-pw-123", "pässwörd with spaces", "x" * 72])
def test_the_hash_verifies_with_doveadm(password):
    pytest.importorskip("bcrypt")
    if shutil.which("doveadm") is None:
        pytest.skip("doveadm is not installed (dovecot-core)")
    hashed = accounts.password_hash(password)
    assert hashed.startswith("{BLF-CRYPT}$2b$10$")
    ok = subprocess.run(["doveadm", "pw", "-t", hashed, "-p", password],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "(verified)" in ok.stdout, ok.stderr
    bad = subprocess.run(["doveadm", "pw", "-t", hashed, "-p", "wrong-" + password],
                         capture_output=True)
    assert bad.returncode != 0


def test_salts_are_random():
    pytest.importorskip("bcrypt")
    assert accounts.password_hash("same") != accounts.password_hash("same")


@pytest.mark.parametrize("password", ["", "x" * 73])
def test_empty_or_too_long_passwords_are_refused(password):
    pytest.importorskip("bcrypt")
    with pytest.raises(accounts.AccountError):
        accounts.password_hash(password)


@pytest.mark.parametrize("command", ["add", "passwd", "alias", "list"])
def test_help(command):
    result = CliRunner().invoke(main, ["account", command, "--help"])
    assert result.exit_code == 0 and "--db-defaults-file" in result.output


def test_the_password_is_no_argument():
    result = CliRunner().invoke(main, ["account", "passwd", "alice@cacert.test", "secret"])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "error: Got unexpected extra argument" \
        in result.output


def test_errors_are_one_line(tmp_path):
    result = CliRunner().invoke(main, ["account", "add", "bob"], input="pw\n")
    assert result.exit_code == 1
    assert result.output == ("mailstore account: error: 'bob' is no address: give "
                             "USER@DOMAIN or --domain\n")
    result = CliRunner().invoke(main, [
        "account", "list", "--db-defaults-file", str(tmp_path / "none.cnf")])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "none.cnf: no such option file" in result.output


def test_the_password_is_read_from_stdin(monkeypatch):
    pytest.importorskip("bcrypt")
    written = {}
    monkeypatch.setattr(accounts, "connect", lambda *a: type("C", (), {"close": lambda s: 0})())
    monkeypatch.setattr(accounts, "add", lambda conn, login, mailbox, hashed: written.update(
        login=login, mailbox=mailbox, hashed=hashed))
    result = CliRunner().invoke(main, ["account", "add", "Erin@cacert.test", "--mailbox",
                                       "erin2"], input="erin pw\nignored\n")
    assert result.exit_code == 0, result.output
    assert written["login"] == "erin@cacert.test" and written["mailbox"] == "erin2"
    import bcrypt
    assert bcrypt.checkpw(b"erin pw", written["hashed"][len("{BLF-CRYPT}"):].encode())
