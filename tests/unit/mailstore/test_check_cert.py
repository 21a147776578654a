"""check cert: expiry edges, key match, chain, revocation against a CRL — real certificates."""
import datetime
import os
import pathlib
import shutil

import pytest

from check_fixtures import check, perfdata
from mailstore.checks import cert as certcheck
from mailstore.checks import plugin
from tests.harness import (DAY, PKI, UTC, as_nobody, certificate, make_crl, new_key,
                           public_tmpdir, write_pem)


@pytest.fixture(scope="module")
def pki():
    return PKI()


def files(tmp_path, pki, days=90.0, chain=True, **kwargs):
    leaf, key = pki.leaf(days=days, **kwargs)
    chain_file = write_pem(tmp_path / "chain.pem", leaf, *([pki.inter] if chain else []))
    key_file = write_pem(tmp_path / "key.pem", key)
    root_file = write_pem(tmp_path / "root.pem", pki.root)
    return leaf, chain_file, key_file, root_file


def test_ok_names_subject_days_and_everything_checked(tmp_path, pki):
    leaf, chain, key, root = files(tmp_path, pki)
    crl = write_pem(tmp_path / "crl.pem", make_crl(pki.inter, pki.inter_key))
    code, line, m = check("cert", chain, "--key", key, "--crl", crl, "--ca", root)
    assert code == 0, line
    text = m.group("text")
    assert "CN=community.cacert.test expires in 90 days" in text
    for word in ("key matches", "chain complete", "not revoked"):
        assert word in text
    days = perfdata(m)["days"]
    assert 89.9 < days[0] <= 90.0 and days[2:4] == ("30:", "14:")


@pytest.mark.parametrize("days, code", [
    (30.01, 0), (29.99, 1), (14.01, 1), (13.99, 2), (0.5, 2), (-0.5, 2)])
def test_expiry_edges_with_default_thresholds(tmp_path, pki, days, code):
    _, chain, _, _ = files(tmp_path, pki, days=days)
    got, line, m = check("cert", chain)
    assert got == code, line
    if code:
        assert "expires in" in m.group("text")


def test_custom_day_thresholds(tmp_path, pki):
    _, chain, _, _ = files(tmp_path, pki, days=50)
    assert check("cert", chain, "-w", "60:", "-c", "40:")[0] == 1
    assert check("cert", chain, "-w", "60:", "-c", "55:")[0] == 2


def test_an_expiring_intermediate_counts(tmp_path, pki):
    now = datetime.datetime.now(UTC)
    inter_key = new_key()
    inter = certificate("Short Intermediate", inter_key, pki.root, pki.root_key, ca=True,
                      not_after=now + 10 * DAY)
    key = new_key()
    leaf = certificate("mx.cacert.test", key, inter, inter_key, not_after=now + 300 * DAY)
    chain = write_pem(tmp_path / "chain.pem", leaf, inter)
    code, line, m = check("cert", chain)
    assert code == 2 and 9.9 < perfdata(m)["days"][0] <= 10


def test_not_yet_valid_is_critical(tmp_path, pki):
    now = datetime.datetime.now(UTC)
    _, chain, _, _ = files(tmp_path, pki, not_before=now + 2 * DAY)
    code, line, m = check("cert", chain)
    assert code == 2 and "not valid before" in line


def test_wrong_key_is_critical(tmp_path, pki):
    _, chain, _, _ = files(tmp_path, pki)
    other = write_pem(tmp_path / "other.key", new_key())
    code, line, m = check("cert", chain, "--key", other)
    assert code == 2 and "does not belong to" in line


def test_rsa_key_matches(tmp_path, pki):
    key = new_key("rsa")
    leaf = certificate("rsa.cacert.test", key, pki.inter, pki.inter_key)
    chain = write_pem(tmp_path / "c.pem", leaf, pki.inter)
    assert check("cert", chain, "--key", write_pem(tmp_path / "k.pem", key))[0] == 0


def test_incomplete_chain_is_critical(tmp_path, pki):
    _, chain, _, root = files(tmp_path, pki, chain=False)
    code, line, m = check("cert", chain, "--ca", root)
    assert code == 2 and "chain incomplete" in line
    # without trusted roots only the order of what is there can be judged
    assert check("cert", chain)[0] == 0


def test_misordered_chain_is_critical(tmp_path, pki):
    leaf, key = pki.leaf()
    chain = write_pem(tmp_path / "chain.pem", pki.inter, leaf)
    code, line, m = check("cert", chain)
    assert code == 2 and "not issued by the next one" in line


def test_chain_from_another_ca_is_critical(tmp_path, pki):
    other = PKI()
    leaf, key = pki.leaf()
    chain = write_pem(tmp_path / "chain.pem", leaf, other.inter)   # same name? no: other CA
    code, line, m = check("cert", chain)
    assert code == 2


def test_revoked_is_critical(tmp_path, pki):
    leaf, chain, _, root = files(tmp_path, pki)
    crl = write_pem(tmp_path / "crl.pem", make_crl(pki.inter, pki.inter_key,
                                                    [12345, leaf.serial_number]))
    code, line, m = check("cert", chain, "--crl", crl)
    assert code == 2 and "REVOKED" in line and "%x" % leaf.serial_number in line


def test_der_crl_is_read(tmp_path, pki):
    from cryptography.hazmat.primitives import serialization
    leaf, chain, _, _ = files(tmp_path, pki)
    der = tmp_path / "crl.der"
    der.write_bytes(make_crl(pki.inter, pki.inter_key, [leaf.serial_number])
                    .public_bytes(serialization.Encoding.DER))
    assert check("cert", chain, "--crl", der)[0] == 2


def test_stale_crl_warns(tmp_path, pki):
    now = datetime.datetime.now(UTC)
    _, chain, _, _ = files(tmp_path, pki)
    crl = write_pem(tmp_path / "crl.pem", make_crl(pki.inter, pki.inter_key,
                                                    last_update=now - 10 * DAY,
                                                    next_update=now - DAY))
    code, line, m = check("cert", chain, "--crl", crl)
    assert code == 1 and "out of date" in line


def test_crl_from_another_issuer_is_unknown(tmp_path, pki):
    _, chain, _, _ = files(tmp_path, pki)
    crl = write_pem(tmp_path / "crl.pem", make_crl(pki.root, pki.root_key))
    code, line, m = check("cert", chain, "--crl", crl)
    assert code == 3 and "not by the certificate's issuer" in line


def test_forged_crl_is_unknown(tmp_path, pki):
    _, chain, _, _ = files(tmp_path, pki)
    forger = new_key()
    crl = write_pem(tmp_path / "crl.pem", make_crl(pki.inter, forger))
    code, line, m = check("cert", chain, "--crl", crl)
    assert code == 3 and "invalid signature" in line


def test_crl_without_issuer_certificate_warns(tmp_path, pki):
    _, chain, _, _ = files(tmp_path, pki, chain=False)
    crl = write_pem(tmp_path / "crl.pem", make_crl(pki.inter, pki.inter_key))
    code, line, m = check("cert", chain, "--crl", crl)
    assert code == 1 and "cannot verify the CRL" in line


@pytest.mark.parametrize("content, words", [
    (None, "No such file"),
    (b"hello", "no PEM certificate"),
    (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "malformed"),
])
def test_bad_certificate_file_is_unknown(tmp_path, content, words):
    path = tmp_path / "c.pem"
    if content is not None:
        path.write_bytes(content)
    code, line, m = check("cert", path)
    assert code == 3 and words in line


def test_encrypted_key_is_unknown(tmp_path, pki):
    from cryptography.hazmat.primitives import serialization
    leaf, chain, _, _ = files(tmp_path, pki)
    enc = tmp_path / "enc.key"
    enc.write_bytes(new_key().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw")))
    code, line, m = check("cert", chain, "--key", enc)
    assert code == 3 and "encrypted" in line


def test_unreadable_key_is_unknown_for_the_agent_user(pki):
    public = public_tmpdir()
    try:
        _unreadable_key(pathlib.Path(public), pki)
    finally:
        shutil.rmtree(public)


def _unreadable_key(tmp_path, pki):
    _, chain, key, _ = files(tmp_path, pki)
    os.chmod(chain, 0o644)
    os.chmod(key, 0o600)    # root's, like /etc/ssl/private
    outcome = as_nobody(lambda: plugin.run(certcheck.make_check(chain, key_file=key)))
    assert outcome.exitcode == 3
    assert "cannot read key" in outcome.text and "Permission denied" in outcome.text
