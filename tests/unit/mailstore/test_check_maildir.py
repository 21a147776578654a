"""check maildir: findings, totals, the directory-mtime cache and its safety nets."""
import json
import os
import shutil
import time

import pytest

from check_fixtures import check, perfdata
from mailstore.checks import maildir as mdcheck
from mailstore.checks import plugin
from tests.harness import as_nobody, public_tmpdir

HOUR = 3600
OLD = time.time() - 5 * HOUR     # directory mtimes well before the scan (not "racy")


def msg(root, user, folder, sub, name, size, uid=None):
    d = os.path.join(str(root), user, "Maildir", folder, sub)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, name)
    with open(path, "wb") as f:
        f.write(b"x" * size)
    if uid is not None:
        os.chown(path, uid, -1)
    return path


def settle(root):
    """Give every directory an mtime in the past, as on a store nobody touched lately."""
    for dirpath, dirnames, _ in os.walk(str(root)):
        os.utime(dirpath, (OLD, OLD))


@pytest.fixture
def store(tmp_path):
    root = tmp_path / "mail"
    for sub in ("cur", "new", "tmp"):
        for folder in ("", ".Sent", ".Archive.2024"):
            os.makedirs(str(root / "alice" / "Maildir" / folder / sub), exist_ok=True)
        os.makedirs(str(root / "bob" / "Maildir" / sub), exist_ok=True)
    msg(root, "alice", "", "cur", "1700000000.M1P1.h,S=100:2,S", 100)
    msg(root, "alice", "", "new", "1700000001.M2P1.h,S=200", 200)
    msg(root, "alice", ".Sent", "cur", "1700000002.M3P1.h,S=300:2,S", 300)
    msg(root, "alice", ".Archive.2024", "cur", "1700000003.M4P1.h:2,", 400)
    msg(root, "bob", "", "cur", "1700000004.M5P1.h:2,RS", 50)
    (root / "alice" / "Maildir" / "dovecot-uidlist").write_text("3 V1 N5\n")
    os.makedirs(str(root / "carol"))                  # a user dir without Maildir
    settle(root)
    return root


def run(root, tmp_path, *opts):
    return check("maildir", root, "--cache", tmp_path / "cache.json", *opts)


def test_totals_across_users_and_folders(store, tmp_path):
    code, line, m = run(store, tmp_path)
    assert code == 0, line
    perf = perfdata(m)
    assert perf["messages"][0] == 5 and perf["bytes"][:2] == (1050, "B")
    assert perf["users"][0] == 2
    assert perf["stale_tmp"][0] == 0 and perf["wrong_owner"][0] == 0
    assert "2 Maildirs, 5 messages" in line


@pytest.mark.parametrize("age_hours, code", [(35.9, 0), (36.1, 1)])
def test_stale_tmp_edge_is_36_hours(store, tmp_path, age_hours, code):
    path = msg(store, "alice", ".Sent", "tmp", "1700000009.M9P9.h", 10)
    t = time.time() - age_hours * HOUR
    os.utime(path, (t, t))
    got, line, m = run(store, tmp_path)
    assert got == code, line
    if code:
        assert "1 stale file(s) in tmp/ (e.g. alice/Maildir/.Sent/tmp/1700000009.M9P9.h)" in line
    # tmp/ files are not messages
    assert perfdata(m)["messages"][0] == 5


def test_stale_thresholds_and_age_option(store, tmp_path):
    for i in range(3):
        path = msg(store, "bob", "", "tmp", "t%d" % i, 1)
        os.utime(path, (time.time() - 2 * HOUR, time.time() - 2 * HOUR))
    assert run(store, tmp_path)[0] == 0
    assert run(store, tmp_path, "--stale-age", HOUR)[0] == 1
    assert run(store, tmp_path, "--stale-age", HOUR, "-w", "5", "-c", "2")[0] == 2


def test_wrong_owner_of_a_message_is_critical(store, tmp_path):
    os.chown(msg(store, "bob", "", "new", "1700000010.M1P1.h", 5, uid=65534), 65534, -1)
    code, line, m = run(store, tmp_path)
    assert code == 2
    assert "1 file(s) with the wrong owner (e.g. bob/Maildir/new/1700000010.M1P1.h)" in line


def test_expected_owner_option(store, tmp_path):
    # everything is root's; demanding nobody makes every file and folder dir wrong
    code, line, m = run(store, tmp_path, "--owner", "nobody")
    assert code == 2 and perfdata(m)["wrong_owner"][0] > 5
    assert run(store, tmp_path, "--owner", "0")[0] == 0
    assert run(store, tmp_path, "--owner", "nobody", "--owner-critical", "~:")[0] == 0


def test_a_wrong_owner_in_tmp_and_on_a_folder_directory_count(store, tmp_path):
    os.chown(msg(store, "alice", "", "tmp", "fresh", 1), 65534, -1)
    os.chown(str(store / "alice" / "Maildir" / ".Sent" / "cur"), 65534, -1)
    code, line, m = run(store, tmp_path)
    assert code == 2 and perfdata(m)["wrong_owner"][0] == 2


def test_cache_lists_only_changed_directories(store, tmp_path):
    code, line, m = run(store, tmp_path)
    assert perfdata(m)["rescanned"][0] == 8          # 4 folders x (new, cur)
    code, line, m = run(store, tmp_path)
    assert perfdata(m)["rescanned"][0] == 0
    assert perfdata(m)["messages"][0] == 5           # from the cache, still right
    # a delivery and an expunge each touch one directory
    msg(store, "bob", "", "new", "1700000020.M1P1.h", 1000)
    os.unlink(str(store / "alice" / "Maildir" / ".Sent" / "cur" / "1700000002.M3P1.h,S=300:2,S"))
    code, line, m = run(store, tmp_path)
    perf = perfdata(m)
    assert perf["rescanned"][0] == 2
    assert perf["messages"][0] == 5 and perf["bytes"][0] == 1050 + 1000 - 300


def test_flag_change_rename_is_seen(store, tmp_path):
    run(store, tmp_path)
    cur = store / "alice" / "Maildir" / "new"
    os.rename(str(cur / "1700000001.M2P1.h,S=200"),
              str(store / "alice" / "Maildir" / "cur" / "1700000001.M2P1.h,S=200:2,S"))
    code, line, m = run(store, tmp_path)
    assert perfdata(m)["messages"][0] == 5 and perfdata(m)["rescanned"][0] == 2


def test_racy_directory_is_listed_again(store, tmp_path):
    msg(store, "bob", "", "cur", "1700000030.M1P1.h", 1)     # mtime = now: racy
    run(store, tmp_path)
    cache = json.loads((tmp_path / "cache.json").read_text())
    assert cache["dirs"]["bob/Maildir/cur"][0] == -1
    code, line, m = run(store, tmp_path)
    assert perfdata(m)["rescanned"][0] == 1


def test_chown_without_directory_change_is_found_after_max_cache_age(store, tmp_path):
    run(store, tmp_path)
    os.chown(str(store / "bob" / "Maildir" / "cur" / "1700000004.M5P1.h:2,RS"), 65534, -1)
    assert run(store, tmp_path)[0] == 0                        # the documented gap ...
    code, line, m = run(store, tmp_path, "--max-cache-age", "0")
    assert code == 2                                           # ... closed by the re-scan


@pytest.mark.parametrize("content", ["{not json", '{"version": 99}', '[]',
                                     '{"version": 1, "root": "/elsewhere", "dirs": {}}'])
def test_bad_cache_is_ignored(store, tmp_path, content):
    (tmp_path / "cache.json").write_text(content)
    code, line, m = run(store, tmp_path)
    assert code == 0 and perfdata(m)["messages"][0] == 5


def test_unwritable_cache_still_answers(store, tmp_path):
    code, line, m = check("maildir", store, "--cache", store / "alice" / "Maildir" /
                          "dovecot-uidlist" / "cache.json")
    assert code == 0 and "not writable" in line and perfdata(m)["messages"][0] == 5


def test_cache_with_a_bare_relative_name_is_saved_and_used(store, tmp_path, monkeypatch):
    # `--cache rel.json`: the file lands in the working directory (no directory part to make)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(str(work))
    code, line, m = check("maildir", store, "--cache", "rel.json")
    assert code == 0 and "not writable" not in line, line
    assert json.loads((work / "rel.json").read_text())["dirs"]
    code, line, m = check("maildir", store, "--cache", "rel.json")
    assert perfdata(m)["rescanned"][0] == 0 and perfdata(m)["messages"][0] == 5


def test_database_not_reachable_is_unknown(store, tmp_path):
    cnf = tmp_path / "my.cnf"
    cnf.write_text("[client]\nhost = 127.0.0.1\nport = 1\nuser = check\npassword = x\n"
                   "database = cacertusers\n")
    code, line, m = run(store, tmp_path, "--db-defaults-file", cnf)
    assert code == 3 and "user database" in line


def test_root_missing_is_unknown(tmp_path):
    code, line, m = run(tmp_path / "nope", tmp_path)
    assert code == 3 and "not a directory" in line


def test_unreadable_maildir_is_unknown_for_an_unprivileged_user():
    public = public_tmpdir()
    try:
        root = os.path.join(public, "mail")
        msg(root, "alice", "", "cur", "1.M1.h:2,", 1)
        for dirpath, _, _ in os.walk(root):
            os.chmod(dirpath, 0o755)
        os.chmod(os.path.join(root, "alice", "Maildir"), 0o700)      # Dovecot's usual mode
        cache = os.path.join(public, "cache.json")
        outcome = as_nobody(lambda: plugin.run(mdcheck.make_check(root, cache_file=cache)))
        assert outcome.exitcode == 3
        assert "cannot read" in outcome.text and "Permission denied" in outcome.text
    finally:
        shutil.rmtree(public)
