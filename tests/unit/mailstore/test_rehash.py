"""Password schemes of stored hashes and Dovecot's post-login re-hash step, without a
database: which hashes are weak or re-hashed (hashes made by the real `doveadm pw`), what the
step leaves in the environment of the mail process, and that a failure never stops a login.
The step's exec is replaced by a recorder: the real one would replace the test process."""
import shutil
import subprocess

import pytest

from mailstore import accounts

needs_doveadm = pytest.mark.skipif(shutil.which("doveadm") is None,
                                   reason="doveadm is not installed (dovecot-core)")


def doveadm_hash(scheme, password="pw"):
    return subprocess.run(["doveadm", "pw", "-s", scheme, "-p", password], check=True,
                          capture_output=True, text=True).stdout.strip()


@needs_doveadm
@pytest.mark.parametrize("scheme, weak", [
    ("MD5-CRYPT", True), ("PLAIN-MD5", True), ("LDAP-MD5", True), ("SMD5", True),
    ("SHA512-CRYPT", False), ("SHA256-CRYPT", False), ("SSHA512", False), ("PLAIN", False)])
def test_doveadm_hashes_by_scheme(scheme, weak):
    hashed = doveadm_hash(scheme)
    assert accounts.hash_scheme(hashed) == scheme
    assert accounts.is_weak(hashed) is weak
    assert accounts.needs_rehash(hashed)


@needs_doveadm
def test_blf_crypt_is_kept_whoever_made_it():
    pytest.importorskip("bcrypt")
    for hashed in (doveadm_hash("BLF-CRYPT"), accounts.password_hash("pw")):
        assert accounts.hash_scheme(hashed) == "BLF-CRYPT"
        assert not accounts.is_weak(hashed) and not accounts.needs_rehash(hashed)


@pytest.mark.parametrize("hashed, scheme, weak", [
    ("{CRYPT}vpvKh.SaNbR6s", "CRYPT", True),                       # DES through libc crypt()
    ("{CRYPT}$1$oDMXOrCA$plmv4yuMdGhL9xekM.q.I/", "CRYPT", True),   # MD5 through crypt()
    ("{CRYPT}$6$salt$hash", "CRYPT", False),
    ("{md5-crypt}$1$oDMXOrCA$plmv4yuMdGhL9xekM.q.I/", "MD5-CRYPT", True),
    ("{PLAIN-MD5.hex}1a1dc91c907325c69271ddf0c944bc72", "PLAIN-MD5", True),
    ("$2y$05$abcdefghijklmnopqrstuu", "BLF-CRYPT", False),          # the SQL default scheme
])
def test_prefixes_encodings_and_crypt(hashed, scheme, weak):
    assert accounts.hash_scheme(hashed) == scheme
    assert accounts.is_weak(hashed) is weak


def post_login(environ, argv=("/usr/lib/dovecot/script-login", "-x")):
    """Run the step; (exec'd argv, the environment it exec'd with)."""
    ran = []
    assert accounts.post_login_main(list(argv), environ,
                                    execv=lambda path, args: ran.append((path, args))) == 1
    (path, args), = ran
    assert args[0] == path
    return args, environ


def test_the_password_never_reaches_the_mail_process(capsys):
    environ = {"USER": "alice@cacert.test", "HOME": "/home/mailboxes/alice",
               "REHASH_PASS": "secret pw", "USERDB_KEYS": "HOME REHASH_PASS"}
    args, environ = post_login(environ)
    assert args == ["/usr/lib/dovecot/script-login", "-x"]
    assert environ == {"USER": "alice@cacert.test", "HOME": "/home/mailboxes/alice",
                       "USERDB_KEYS": "HOME"}
    assert capsys.readouterr().err == ""                   # {BLF-CRYPT} already: nothing done


def test_a_failed_rehash_is_one_log_line_and_the_login_goes_on(tmp_path, capsys):
    pytest.importorskip("bcrypt")
    environ = {"USER": "bob@cacert.test", "REHASH_PASS": "bob's pw",
               "REHASH_OLDPASS": "{MD5-CRYPT}$1$abc$def", "USERDB_KEYS": "REHASH_PASS HOME "
               "REHASH_OLDPASS", "MAILSTORE_DB_DEFAULTS_FILE": str(tmp_path / "none.cnf")}
    args, environ = post_login(environ)
    assert "REHASH_PASS" not in environ and "REHASH_OLDPASS" not in environ
    assert environ["USERDB_KEYS"] == "HOME"
    err = capsys.readouterr().err
    assert err == ("mailstore-rehash-login: bob@cacert.test: hash not replaced: %s: no such "
                   "option file\n" % (tmp_path / "none.cnf"))
    assert "bob's pw" not in err and "$1$abc" not in err


def test_without_a_next_step_it_says_how_it_is_run(capsys):
    assert accounts.post_login_main([], {"REHASH_PASS": "x"}) == 2
    assert "script-login" in capsys.readouterr().err
