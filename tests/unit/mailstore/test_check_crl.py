"""check crl: a refresh that stopped succeeding, a CRL near or past its nextUpdate — real CRLs
with real file times (os.utime), no clock mocking."""
import datetime
import os
import time

import pytest

from check_fixtures import check, perfdata
from tests.harness import DAY, PKI, UTC, make_crl, write_pem


@pytest.fixture(scope="module")
def pki():
    return PKI()


def crl_file(path, pki, age=0, next_update_in=7 * DAY):
    """A CRL written `age` seconds ago (file mtime) whose nextUpdate is `next_update_in` away."""
    now = datetime.datetime.now(UTC)
    crl = make_crl(pki.inter, pki.inter_key, next_update=now + next_update_in,
                   last_update=now - DAY - max(datetime.timedelta(0), -next_update_in))
    write_pem(path, crl)
    stamp = time.time() - age
    os.utime(str(path), (stamp, stamp))
    return str(path)


def test_fresh_crls_are_ok_and_say_when_refreshed(tmp_path, pki):
    a = crl_file(tmp_path / "root.crl.pem", pki, age=600)
    b = crl_file(tmp_path / "intermediate.crl.pem", pki, age=60, next_update_in=2 * DAY)
    code, line, m = check("crl", a, b)
    assert code == 0, line
    assert "2 CRLs, refreshed 10 min ago (oldest: root.crl.pem)" in line
    assert "next update due in" in line and "(intermediate.crl.pem)" in line
    perf = perfdata(m)
    assert 595 <= perf["refresh_age"][0] <= 660 and perf["refresh_age"][1] == "s"
    assert 2 * 86400 - 60 <= perf["next_update"][0] <= 2 * 86400


@pytest.mark.parametrize("age_hours, code", [(2.9, 0), (3.1, 1), (23.9, 1), (24.1, 2)])
def test_a_refresh_that_stopped_succeeding_warns_then_goes_critical(tmp_path, pki, age_hours,
                                                                     code):
    stale = crl_file(tmp_path / "class3.crl.pem", pki, age=age_hours * 3600)
    fresh = crl_file(tmp_path / "root.crl.pem", pki, age=10)
    got, line, _ = check("crl", fresh, stale)
    assert got == code, line
    if code:
        assert "last successful refresh" in line and "class3.crl.pem" in line


@pytest.mark.parametrize("left, code", [
    (datetime.timedelta(hours=7), 0), (datetime.timedelta(hours=5), 1),
    (-datetime.timedelta(minutes=5), 2)])
def test_next_update_close_or_passed(tmp_path, pki, left, code):
    path = crl_file(tmp_path / "i.crl.pem", pki, next_update_in=left)
    got, line, _ = check("crl", path)
    assert got == code, line
    if code == 2:
        assert "was due" in line


def test_thresholds_are_options(tmp_path, pki):
    path = crl_file(tmp_path / "i.crl.pem", pki, age=2 * 3600)
    assert check("crl", path, "-w", "3600", "-c", "36000")[0] == 1
    assert check("crl", path, "-w", "600", "-c", "3600")[0] == 2


def test_missing_file_or_not_a_crl_is_unknown_naming_it(tmp_path, pki):
    good = crl_file(tmp_path / "ok.crl.pem", pki)
    code, line, _ = check("crl", good, tmp_path / "gone.crl.pem")
    assert code == 3 and "gone.crl.pem" in line
    junk = tmp_path / "junk.pem"
    junk.write_text("hello\n")
    code, line, _ = check("crl", good, junk)
    assert code == 3 and "junk.pem" in line and "not a CRL" in line


def test_no_file_is_a_usage_error_unknown(tmp_path):
    code, line, _ = check("crl")
    assert code == 3
