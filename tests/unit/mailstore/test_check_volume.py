"""check volume: free space / inodes on a real filesystem (tmpfs when root, else tmp_path)."""
import os
import shutil
import subprocess

import pytest

from check_fixtures import check, perfdata
from mailstore.checks import plugin, volume
from tests.harness import as_nobody, public_tmpdir


def test_ok_with_perfdata_in_percent_and_absolute(tmp_path):
    code, line, m = check("volume", tmp_path, "-w", "0:", "-c", "0:", "-W", "0:", "-K", "0:")
    assert code == 0
    assert str(tmp_path) in m.group("text")
    perf = perfdata(m)
    st = os.statvfs(str(tmp_path))
    assert perf["space_free_pct"][1] == "%" and perf["space_free_pct"][4:] == ("0", "100")
    assert perf["space_free"][1] == "B"
    assert perf["space_free"][5] == str(st.f_blocks * st.f_frsize)
    if st.f_files:
        assert perf["inodes_free"][5] == str(st.f_files)


@pytest.mark.parametrize("opts, code, words", [
    (["-w", "100.1:", "-c", "0:"], 1, "free space"),
    (["-w", "0:", "-c", "100.1:"], 2, "free space"),
    (["-W", "100.1:", "-K", "0:"], 1, "free inodes"),
    (["-K", "100.1:"], 2, "free inodes"),
    (["--bytes-critical", "1000000000000000000:"], 2, "free space"),
    (["--free-inodes-warning", "@0:1000000000000"], 1, "free inodes"),
])
def test_each_threshold_reaches_its_state(tmp_path, opts, code, words):
    got, line, m = check("volume", tmp_path, *opts)
    assert got == code, line
    assert words in m.group("text")


def test_missing_path_is_unknown(tmp_path):
    code, line, m = check("volume", tmp_path / "nope")
    assert code == 3 and "No such file or directory" in line


def test_unreadable_path_is_unknown_for_an_unprivileged_user():
    public = public_tmpdir()
    try:
        inner = os.path.join(public, "locked", "inner")
        os.makedirs(inner)
        os.chmod(os.path.dirname(inner), 0o700)
        # the same check as nobody: open path works, the locked one does not
        assert as_nobody(lambda: plugin.run(volume.make_check(public))).exitcode in (0, 1, 2)
        outcome = as_nobody(lambda: plugin.run(volume.make_check(inner)))
        assert outcome.exitcode == 3
        assert "Permission denied" in outcome.text
    finally:
        shutil.rmtree(public)


def test_no_size_filesystem_is_unknown():
    outcome = plugin.run(volume.make_check("/proc"))
    assert outcome.exitcode == 3 and "no size" in outcome.text


@pytest.fixture
def small_tmpfs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "fs"
    mnt.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,nr_inodes=100", "tmpfs",
                        str(mnt)], check=True, stderr=subprocess.PIPE)
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip("cannot mount a tmpfs here: %s" % e)
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_exact_edges_on_a_real_tmpfs(small_tmpfs):
    # 4 MiB, 100 inodes. Fill 3 MiB and 79 files: 25 % space, about 20 % inodes free.
    with open(str(small_tmpfs / "big"), "wb") as f:
        f.write(b"\0" * (3 * 1024 * 1024))
    for i in range(78):
        (small_tmpfs / ("f%d" % i)).touch()
    st = os.statvfs(str(small_tmpfs))
    pct = round(100.0 * st.f_bavail / st.f_blocks, 2)
    ipct = round(100.0 * st.f_favail / st.f_files, 2)
    assert pct == 25.0
    code, line, m = check("volume", small_tmpfs, "-w", "25:", "-c", "10:")
    assert code == 0, line                       # exactly on the edge: inside the range
    code, line, m = check("volume", small_tmpfs, "-w", "25.01:", "-c", "10:")
    assert code == 1 and "free space 25%" in line
    code, line, m = check("volume", small_tmpfs, "-w", "30:", "-c", "25.01:")
    assert code == 2
    code, line, m = check("volume", small_tmpfs, "-W", "%s:" % ipct, "-K", "1:")
    assert code == 0
    code, line, m = check("volume", small_tmpfs, "-W", "%s:" % (ipct + 0.01), "-K", "1:")
    assert code == 1 and "free inodes" in line
    perf = perfdata(m)
    assert perf["space_free"][0] == 1024 * 1024
    assert perf["inodes_free"][0] == st.f_favail and perf["inodes_free"][5] == "100"
