"""mailstore.migrate end to end on real directories (library and CLI)."""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from mailstore import migrate as migration
from mailstore.migrate import run as migrate_run
from mailstore.migrate import execute as mx
from mailstore.cli import main

from tests.harness import maildir_trees as trees

MSGS = [("", "new", "1.M1.h,S=3", "", b"abc", 1_500_000_000_000_000_000),
        ("", "cur", "2.M2.h,S=5", "S", b"hello", 1_500_000_001_000_000_000),
        (".Sent", "cur", "3.M3.h", "RS", b"", 1_500_000_002_000_000_000),     # zero bytes
        (".A.B", "cur", "4.M4.h", "FS", b"x" * 300000, 1_500_000_003_000_000_000)]


def _cli(*args):
    """`python -m mailstore ARGS`, stdout and stderr apart (as cron and pipes see them)."""
    return subprocess.run([sys.executable, "-m", "mailstore"] + list(args),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True)


@pytest.fixture
def roots(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    trees.make_user(str(src), "alice", MSGS)
    trees.make_user(str(src), "bob", MSGS[:2])
    return str(src), str(dst)


def test_copy_makes_exact_copy_and_keeps_source(roots):
    src, dst = roots
    before = {u: trees.snapshot(src, u) for u in ("alice", "bob")}
    r = migration.migrate(src, dst, force_copy=True)
    assert r.ok, r.as_dict()
    for u in ("alice", "bob"):
        assert trees.snapshot(dst, u) == before[u]
        assert trees.snapshot(src, u) == before[u]          # source untouched
    assert os.path.isdir(os.path.join(dst, "alice", "Maildir", ".A.B", "cur"))
    assert [u.mode for u in r.users] == ["copy", "copy"]
    assert r.users[0].messages == 4


def test_second_run_leaves_migrated_users_alone(roots):
    src, dst = roots
    assert migration.migrate(src, dst, force_copy=True).ok
    # mail delivered to the target after the cut-over must survive a re-run
    trees.write(os.path.join(dst, "alice", "Maildir", "new", "9.M9.h"), b"after")
    r = migration.migrate(src, dst, force_copy=True)
    assert r.ok and [u.mode for u in r.users] == ["already-migrated"] * 2
    assert os.path.exists(os.path.join(dst, "alice", "Maildir", "new", "9.M9.h"))


def test_a_stale_journal_whose_copy_is_gone_is_refused_not_trusted(roots):
    # Moved there, back again, and the first copy cleaned up: the target's journal still
    # says done. Trusting it would leave the user with an empty mailbox after the switch.
    src, dst = roots
    assert migration.migrate(src, dst, force_copy=True).ok
    shutil.rmtree(os.path.join(dst, "bob"))
    r = migration.migrate(src, dst, force_copy=True)
    by_user = {u.user: u for u in r.users}
    assert not r.ok and by_user["alice"].mode == "already-migrated"
    assert by_user["bob"].mode == "refused"
    assert "from an earlier migration" in by_user["bob"].errors[0]
    assert os.path.isdir(os.path.join(src, "bob"))


def test_same_filesystem_renames_user_dirs(roots):
    src, dst = roots
    before = trees.snapshot(src, "alice")
    r = migration.migrate(src, dst, users=["alice"])
    assert r.ok and r.same_filesystem and r.users[0].mode == "rename"
    assert not os.path.exists(os.path.join(src, "alice"))
    assert os.path.exists(os.path.join(src, "bob"))          # not asked for
    assert trees.snapshot(dst, "alice") == before


def test_refuses_target_user_not_created_by_migration(roots):
    src, dst = roots
    os.makedirs(os.path.join(dst, "alice", "Maildir"))
    trees.write(os.path.join(dst, "alice", "Maildir", "cur", "keep:2,S"), b"precious")
    r = migration.migrate(src, dst, force_copy=True)
    assert not r.ok
    alice = r.users[0]
    assert alice.mode == "refused" and "not created by this migration" in alice.errors[0]
    assert os.path.exists(os.path.join(dst, "alice", "Maildir", "cur", "keep:2,S"))
    assert r.users[1].ok                                      # bob still migrated


def test_dry_run_changes_nothing(roots):
    src, dst = roots
    before = trees.snapshot(src, "alice")
    r = migration.migrate(src, dst, dry_run=True, force_copy=True)
    assert os.listdir(dst) == []
    assert trees.snapshot(src, "alice") == before
    alice = r.users[0]
    assert (alice.messages, alice.bytes, alice.copied_messages) == (4, 300008, 4)


def test_bad_roots_and_users(tmp_path, roots):
    src, dst = roots
    with pytest.raises(migration.MigrateError, match="overlap"):
        migration.migrate(src, os.path.join(src, "alice"))
    with pytest.raises(migration.MigrateError, match="target root"):
        migration.migrate(src, str(tmp_path / "missing" / "root"))     # parent missing too
    with pytest.raises(ValueError):
        migration.migrate(src, dst, users=[".."])
    r = migration.migrate(src, dst, users=["carol"], force_copy=True)
    assert not r.ok and "no such user" in r.users[0].errors[0]


def test_anomalies_are_skipped_reported_and_fail_the_run(roots):
    src, dst = roots
    md = os.path.join(src, "alice", "Maildir")
    os.symlink("/etc/shadow", os.path.join(md, "cur", "evil:2,S"))
    os.makedirs(os.path.join(md, "new", "adir"))
    raw = os.path.join(os.fsencode(md), b"cur", b"5.M5.h\xff:2,S")
    with open(raw, "wb") as f:
        f.write(b"non-utf8 name")
    r = migration.migrate(src, dst, users=["alice"], force_copy=True)
    alice = r.users[0]
    # what was copied verifies, but the user is not recorded as migrated: the skipped
    # entries were never copied, and a "done" user is left alone by every later run
    assert not r.ok and alice.verified and not alice.done
    assert sorted(a.split(":")[0] for a in alice.anomalies) == [
        "Maildir/cur/evil", "Maildir/new/adir"]
    assert any("not recorded as migrated" in e for e in alice.errors)
    tcur = os.path.join(dst, "alice", "Maildir", "cur")
    assert not os.path.lexists(os.path.join(tcur, "evil:2,S"))
    assert not os.path.exists(os.path.join(dst, "alice", "Maildir", "new", "adir"))
    with open(os.path.join(os.fsencode(tcur), b"5.M5.h\xff:2,S"), "rb") as f:
        assert f.read() == b"non-utf8 name"
    # still there: the next run is not "already-migrated", and fails again
    r = migration.migrate(src, dst, users=["alice"], force_copy=True)
    assert not r.ok and r.users[0].mode == "copy" and not r.users[0].done
    # mended (the directory gone, a message delivered in its place): migrated fully
    os.rmdir(os.path.join(md, "new", "adir"))
    os.unlink(os.path.join(md, "cur", "evil:2,S"))
    trees.write(os.path.join(md, "new", "6.M6.h"), b"delivered since")
    r = migration.migrate(src, dst, users=["alice"], force_copy=True)
    assert r.ok and r.users[0].done, r.as_dict()
    assert trees.snapshot(dst, "alice") == trees.snapshot(src, "alice")


def test_delta_renames_instead_of_copying(roots):
    src, dst = roots
    r = migration.migrate(src, dst, users=["alice"], force_copy=True, live_passes=1,
                          quiesce="true")
    assert r.ok
    # pretend the cut-over did not happen yet: drop the done mark, change flags, expunge
    journal = os.path.join(dst, mx.STATE_DIR, migration.JOURNAL)
    lines = [l for l in open(journal) if '"done"' not in l]
    open(journal, "w").writelines(lines)
    md = os.path.join(src, "alice", "Maildir")
    os.rename(os.path.join(md, "new", "1.M1.h,S=3"), os.path.join(md, "cur", "1.M1.h,S=3:2,S"))
    os.rename(os.path.join(md, ".A.B", "cur", "4.M4.h:2,FS"),
              os.path.join(md, ".A.B", "cur", "4.M4.h:2,S"))
    os.unlink(os.path.join(md, "cur", "2.M2.h,S=5:2,S"))
    ino = os.stat(os.path.join(dst, "alice", "Maildir", ".A.B", "cur", "4.M4.h:2,FS")).st_ino
    r = migration.migrate(src, dst, users=["alice"], force_copy=True, live_passes=0)
    assert r.ok, r.as_dict()
    alice = r.users[0]
    assert (alice.copied_messages, alice.renamed, alice.deleted) == (0, 2, 1)
    assert os.stat(os.path.join(dst, "alice", "Maildir", ".A.B", "cur",
                                "4.M4.h:2,S")).st_ino == ino          # renamed, not copied
    assert trees.snapshot(dst, "alice") == trees.snapshot(src, "alice")


def test_live_copy_is_flushed_before_delivery_is_quiesced(roots, tmp_path, monkeypatch):
    """The target is flushed once before the quiesce hook (the live copy's writes leave the
    deferred-delivery window) and once after the cut-over's changes. The flush itself is the
    real syncfs(2); only the order is recorded."""
    src, dst = roots
    log = tmp_path / "order.log"
    real = mx.sync_filesystem

    def recorded(path):
        real(path)
        with open(log, "a") as f:
            f.write("flush %s\n" % path)
    monkeypatch.setattr(mx, "sync_filesystem", recorded)
    r = migration.migrate(src, dst, force_copy=True, processes=1,
                          quiesce="echo quiesce >> %s" % log, resume="echo resume >> %s" % log)
    assert r.ok, r.as_dict()
    assert log.read_text() == "flush %s\nquiesce\nflush %s\nresume\n" % (dst, dst)
    assert "live_flush" in r.phases


def test_hooks_order_and_failing_quiesce(roots, tmp_path):
    src, dst = roots
    log = tmp_path / "hooks.log"
    r = migration.migrate(src, dst, force_copy=True, quiesce="echo quiesce >> %s" % log,
                          resume="echo resume >> %s" % log)
    assert r.ok and log.read_text() == "quiesce\nresume\n"
    log.unlink()
    trees.make_user(src, "carol", MSGS[:1])
    r = migration.migrate(src, dst, users=["carol"], force_copy=True,
                          quiesce="echo quiesce >> %s; exit 3" % log,
                          resume="echo resume >> %s" % log)
    assert not r.ok and "quiesce hook failed (exit 3)" in r.error
    assert log.read_text() == "quiesce\nresume\n"
    assert r.hooks["resume"].exit == 0
    assert not r.users[0].done          # live copy happened, no cut-over recorded
    r = migration.migrate(src, dst, users=["carol"], force_copy=True)
    assert r.ok                          # a later run finishes it


def test_cleanup_source_refuses_unless_target_verifies(roots):
    src, dst = roots
    assert migration.migrate(src, dst, force_copy=True).ok
    # corrupt alice's target copy (same size): byte comparison must catch it
    p = os.path.join(dst, "alice", "Maildir", "cur", "2.M2.h,S=5:2,S")
    with open(p, "r+b") as f:
        f.write(b"J")
    # bob's flags changed in the target after the cut-over: still counts as present
    bcur = os.path.join(dst, "bob", "Maildir", "cur")
    os.rename(os.path.join(bcur, "2.M2.h,S=5:2,S"), os.path.join(bcur, "2.M2.h,S=5:2,FS"))
    r = migration.cleanup_source(src, dst)
    by_user = {u["user"]: u for u in r.users}
    assert not r.ok
    assert not by_user["alice"]["ok"] and "contents differ" in by_user["alice"]["problems"][0]
    assert os.path.exists(os.path.join(src, "alice", "Maildir", "cur", "2.M2.h,S=5:2,S"))
    assert by_user["bob"]["ok"] and not os.path.exists(os.path.join(src, "bob"))


def test_cleanup_source_accepts_a_uidvalidity_marker_dovecot_moved_on(roots):
    # Dovecot names an empty file after the next UIDVALIDITY it will give and renames it when
    # a folder is made in the target after the cut-over: the source's older one is not
    # missing. A lower one in the target still is.
    src, dst = roots
    for user in ("alice", "bob"):
        open(os.path.join(src, user, "Maildir", "dovecot-uidvalidity.6b1526ad"), "w").close()
    assert migration.migrate(src, dst, force_copy=True).ok
    os.rename(os.path.join(dst, "alice", "Maildir", "dovecot-uidvalidity.6b1526ad"),
              os.path.join(dst, "alice", "Maildir", "dovecot-uidvalidity.6b1526ae"))
    os.rename(os.path.join(dst, "bob", "Maildir", "dovecot-uidvalidity.6b1526ad"),
              os.path.join(dst, "bob", "Maildir", "dovecot-uidvalidity.6b1526ac"))
    by_user = {u["user"]: u for u in migration.cleanup_source(src, dst).users}
    assert by_user["alice"]["ok"] and not os.path.exists(os.path.join(src, "alice"))
    assert not by_user["bob"]["ok"]
    assert "dovecot-uidvalidity.6b1526ad: file not in target" in by_user["bob"]["problems"][0]


def test_cleanup_source_dry_run_deletes_nothing(roots):
    src, dst = roots
    assert migration.migrate(src, dst, force_copy=True).ok
    before = {u: trees.snapshot(src, u) for u in ("alice", "bob")}
    proc = _cli("cleanup-source", src, dst, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "DRY RUN" in proc.stdout
    assert "would delete 12 files" in proc.stdout and "would delete 10 files" in proc.stdout
    assert {u: trees.snapshot(src, u) for u in ("alice", "bob")} == before
    r = migration.cleanup_source(src, dst, users=["bob"], dry_run=True)
    assert r.ok and r.users[0]["would_delete_files"] == 10 and r.users[0]["deleted_files"] == 0
    assert trees.snapshot(src, "bob") == before["bob"]
    proc = _cli("cleanup-source", src, dst)
    assert proc.returncode == 0 and not os.path.exists(os.path.join(src, "alice"))


def test_cleanup_source_refuses_unmigrated_user(roots):
    src, dst = roots
    r = migration.cleanup_source(src, dst, users=["alice"])
    assert not r.ok and "not recorded as migrated" in r.users[0]["problems"][0]
    assert os.path.exists(os.path.join(src, "alice"))


# -- CLI ----------------------------------------------------------------------------------
def test_cli_help():
    runner = CliRunner()
    for verb in ("migrate", "cleanup-source"):
        res = runner.invoke(main, [verb, "--help"])
        assert res.exit_code == 0 and "TARGET_ROOT" in res.output
    assert "--quiesce" in runner.invoke(main, ["migrate", "--help"]).output


def test_cli_dry_run_and_json(roots):
    src, dst = roots
    runner = CliRunner()
    res = runner.invoke(main, ["migrate", src, dst, "--dry-run", "--copy"])
    assert res.exit_code == 0 and "DRY RUN" in res.output and "alice" in res.output
    assert os.listdir(dst) == []
    res = runner.invoke(main, ["migrate", src, dst, "--json", "--copy"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["ok"] is True and data["totals"]["messages"] == 6
    assert {u["user"]: u["mode"] for u in data["users"]} == {"alice": "copy", "bob": "copy"}
    assert set(data["users"][0]) >= {"messages", "bytes", "copied_messages", "verified",
                                     "differences", "errors", "anomalies"}


def test_cli_failing_quiesce_exits_nonzero(roots):
    src, dst = roots
    res = CliRunner().invoke(main, ["migrate", src, dst, "--copy", "--json",
                                    "--quiesce", "exit 1", "--resume", "true"])
    assert res.exit_code == 1
    data = json.loads(res.output)
    assert data["hooks"]["quiesce"]["exit"] == 1 and data["hooks"]["resume"]["exit"] == 0


def test_cli_errors_go_to_stderr_json_to_stdout(roots):
    """What went wrong is on stderr, naming the user; stdout keeps the report (or the JSON
    summary, complete, alone)."""
    src, dst = roots
    md = os.path.join(src, "alice", "Maildir")
    os.symlink("/etc/shadow", os.path.join(md, "cur", "evil:2,S"))
    proc = _cli("migrate", src, dst, "--copy", "--quiesce", "exit 3")
    assert proc.returncode == 1
    assert "ERROR" not in proc.stdout and "evil" not in proc.stdout, proc.stdout
    assert "alice" in proc.stdout and "FAILED" in proc.stdout
    assert "quiesce hook failed (exit 3)" in proc.stderr
    assert "quiesce hook exited 3" in proc.stderr
    proc = _cli("migrate", src, dst, "--copy")
    assert proc.returncode == 1 and "evil" not in proc.stdout
    assert "alice: skipped: Maildir/cur/evil" in proc.stderr
    assert "alice: error: not recorded as migrated" in proc.stderr
    proc = _cli("migrate", src, dst, "--copy", "--json")
    assert proc.returncode == 1 and json.loads(proc.stdout)["ok"] is False
    proc = _cli("cleanup-source", src, dst, "--user", "carol")
    assert proc.returncode == 1 and "not recorded" not in proc.stdout
    assert "cleanup-source: carol: problem: not recorded as migrated" in proc.stderr


def test_cli_quiet_prints_only_errors(roots):
    src, dst = roots
    md = os.path.join(src, "alice", "Maildir")
    proc = _cli("migrate", src, dst, "--copy", "--quiet", "--user", "bob")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    os.symlink("/etc/shadow", os.path.join(md, "cur", "evil:2,S"))
    proc = _cli("migrate", src, dst, "--copy", "--quiet")
    assert proc.returncode == 1 and proc.stdout == ""
    assert "alice: skipped: Maildir/cur/evil" in proc.stderr
    proc = _cli("migrate", src, dst, "--copy", "--quiet", "--json")     # asked for: given
    assert proc.returncode == 1 and json.loads(proc.stdout)["ok"] is False
    proc = _cli("cleanup-source", src, dst, "--quiet", "--dry-run")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    proc = _cli("cleanup-source", src, dst, "--quiet", "--user", "alice")
    assert proc.returncode == 1 and proc.stdout == "" and "alice: problem" in proc.stderr
    proc = _cli("cleanup-source", src, dst, "--quiet")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert not os.path.exists(os.path.join(src, "bob"))


def test_cli_creates_target_root_when_its_parent_exists(roots, tmp_path):
    """As `cp -a` and `rsync` do: TARGET_ROOT is made (with the source root's mode and
    owner); a missing parent is one clear error line, and nothing is made."""
    src, _dst = roots
    os.chmod(src, 0o751)
    target = str(tmp_path / "new-root")
    res = CliRunner().invoke(main, ["migrate", src, target, "--copy", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert not os.path.exists(target)                # a dry run makes nothing
    res = CliRunner().invoke(main, ["migrate", src, target, "--copy"])
    assert res.exit_code == 0, res.output
    assert os.stat(target).st_mode & 0o7777 == 0o751
    assert trees.snapshot(target, "alice") == trees.snapshot(src, "alice")
    deep = str(tmp_path / "missing" / "new-root")
    proc = _cli("migrate", src, deep, "--copy")
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "missing" in proc.stderr
    assert not os.path.exists(str(tmp_path / "missing"))


def test_cli_bad_user_is_usage_error(roots):
    src, dst = roots
    res = CliRunner().invoke(main, ["migrate", src, dst, "--user", "a/../etc"])
    assert res.exit_code == 2 and "path component" in res.output


def test_cli_subprocess_quiet_when_not_a_tty(roots):
    src, dst = roots
    proc = subprocess.run([sys.executable, "-m", "mailstore", "migrate", src, dst, "--copy"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.returncode == 0 and proc.stderr == b""
    assert b"OK in" in proc.stdout


def test_progress_draws_on_a_terminal():
    import io

    class Tty(io.StringIO):
        def isatty(self):
            return True
    out = Tty()
    p = mx.Progress(out, interval=0)
    p.start("live copy alice", 10, 1000)
    p.advance(5, 500)
    p.finish()
    assert "5/10 messages" in out.getvalue() and "ETA" in out.getvalue()
    quiet = Tty()
    p = mx.Progress(quiet, interval=0, quiet=True)       # --quiet: not even on a terminal
    p.start("live copy alice", 10, 1000)
    p.advance(5, 500)
    p.finish()
    assert quiet.getvalue() == ""


# -- as an unprivileged user: unreadable files for real ------------------------------------
NOBODY_MIGRATE = textwrap.dedent("""
    import json, os, sys
    from mailstore import maildir, migrate
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
    r = migrate.migrate(sys.argv[1], sys.argv[2], force_copy=True)
    print(json.dumps(r.as_dict()))
""")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to nobody")
def test_unreadable_message_is_reported_others_copied():
    import shutil
    import tempfile
    base = tempfile.mkdtemp(prefix="mailstore-test-")
    try:
        os.chmod(base, 0o755)
        src, dst = os.path.join(base, "src"), os.path.join(base, "dst")
        os.mkdir(dst)
        trees.make_user(src, "alice", MSGS)
        for dirpath, dirnames, filenames in os.walk(base):
            for n in dirnames + filenames + [""]:
                os.chown(os.path.join(dirpath, n), 65534, 65534)
        locked = os.path.join(src, "alice", "Maildir", "cur", "2.M2.h,S=5:2,S")
        os.chmod(locked, 0)
        proc = subprocess.run([sys.executable, "-c", NOBODY_MIGRATE, src, dst],
                              stdout=subprocess.PIPE, check=True)
        data = json.loads(proc.stdout)
        alice = data["users"][0]
        assert data["ok"] is False
        assert any("Maildir/cur/2.M2.h,S=5:2,S" in e and "Permission denied" in e
                   for e in alice["errors"])
        assert alice["verified"] is False
        tmd = os.path.join(dst, "alice", "Maildir")
        assert os.path.exists(os.path.join(tmd, ".A.B", "cur", "4.M4.h:2,FS"))
        assert not os.path.exists(os.path.join(tmd, "cur", "2.M2.h,S=5:2,S"))
    finally:
        for dirpath, dirnames, filenames in os.walk(base):
            os.chmod(dirpath, 0o755)
        shutil.rmtree(base)


def test_unreadable_folder_keeps_the_user_pending_until_it_can_be_copied(roots, monkeypatch):
    """A folder the source scan cannot list (EIO, or permissions for a non-root run): what
    could be read is copied and verifies, but the user is not recorded as migrated, so that
    a later run, once the folder reads again, copies it."""
    src, dst = roots
    sent = os.path.join(src, "alice", "Maildir", ".Sent", "cur")
    real_scandir, real_listdir = os.scandir, os.listdir

    def refuse(real):
        def listing(path="."):
            if os.fspath(path).rstrip("/") == sent:
                raise OSError(5, "Input/output error", path)
            return real(path)
        return listing
    monkeypatch.setattr(os, "scandir", refuse(real_scandir))
    monkeypatch.setattr(os, "listdir", refuse(real_listdir))
    for attempt in (1, 2):         # a second run does not take the user as migrated either
        r = migration.migrate(src, dst, users=["alice"], force_copy=True, processes=1)
        alice = r.users[0]
        assert not r.ok and alice.mode == "copy" and not alice.done, (attempt, alice.as_dict())
        assert any(a.startswith("Maildir/.Sent/cur: unreadable") for a in alice.anomalies)
    monkeypatch.setattr(os, "scandir", real_scandir)
    monkeypatch.setattr(os, "listdir", real_listdir)
    r = migration.migrate(src, dst, users=["alice"], force_copy=True, processes=1)
    assert r.ok and r.users[0].done, r.as_dict()
    assert trees.snapshot(dst, "alice") == trees.snapshot(src, "alice")


def test_source_changing_during_cut_over_is_detected(roots, monkeypatch):
    """A quiesce hook that does not really stop delivery must not pass verification."""
    src, dst = roots
    state = {"quiesced": False, "done": False}

    class LateDelivery:
        def tick(self):
            if state["quiesced"] and not state["done"]:
                state["done"] = True
                trees.write(os.path.join(src, "alice", "Maildir", "new", "late.M.h"), b"late")

    def hook(command, out=None):
        state["quiesced"] = command == "QUIESCE"
        if state["quiesced"]:       # one last flag change, so that the cut-over has work
            cur = os.path.join(src, "alice", "Maildir", "cur")
            os.rename(os.path.join(cur, "2.M2.h,S=5:2,S"), os.path.join(cur, "2.M2.h,S=5:2,RS"))
        return migration.HookResult(command, 0)
    monkeypatch.setattr(mx, "KILL", LateDelivery())
    monkeypatch.setattr(migrate_run, "run_hook", hook)
    r = migration.migrate(src, dst, users=["alice"], force_copy=True, quiesce="QUIESCE")
    assert state["done"] and not r.ok
    assert any("source changed during the cut-over" in d for d in r.users[0].differences)
    assert not r.users[0].done


@pytest.mark.parametrize("path", ["buffer", "sendfile"])
def test_copy_that_reads_back_different_is_an_error(roots, monkeypatch, path):
    """Each copy is read back and compared with its source before it is renamed into place."""
    src, dst = roots
    if path == "sendfile":                   # the large-file path: corrupt what is written
        monkeypatch.setattr(mx, "SMALL", -1)
        real = mx._copy_fd

        def corrupting(s, d, size):
            n = real(s, d, size)
            if size:
                os.pwrite(d, b"\0", 0)
            return n
        monkeypatch.setattr(mx, "_copy_fd", corrupting)
    else:                                    # the buffer path: the disk returns other bytes
        real = mx._read_back
        monkeypatch.setattr(mx, "_read_back",
                            lambda fd, size: b"\0" + real(fd, size)[1:] if size else b"")
    r = migration.migrate(src, dst, users=["alice"], force_copy=True)
    assert not r.ok
    assert any("differs from the source" in e for e in r.users[0].errors)
    assert not os.path.exists(os.path.join(dst, "alice", "Maildir", "cur", "2.M2.h,S=5:2,S"))


def test_cleanup_source_interrupted_then_rerun(roots):
    src, dst = roots
    assert migration.migrate(src, dst, force_copy=True).ok
    before = trees.snapshot(dst, "alice")
    # as if a first clean-up was killed half-way: some source files already gone
    os.unlink(os.path.join(src, "alice", "Maildir", "cur", "2.M2.h,S=5:2,S"))
    os.unlink(os.path.join(src, "alice", "Maildir", "subscriptions"))
    r = migration.cleanup_source(src, dst, users=["alice"])
    assert r.ok, r.as_dict()
    assert not os.path.exists(os.path.join(src, "alice"))
    assert trees.snapshot(dst, "alice") == before            # target untouched
    # a message only the source has (arrived after the cut-over) blocks the clean-up
    trees.make_user(src, "bob", MSGS[:2])
    trees.write(os.path.join(src, "bob", "Maildir", "new", "stray.M.h"), b"stray")
    r = migration.cleanup_source(src, dst, users=["bob"])
    assert not r.ok and "message not in target" in " ".join(r.users[0]["problems"])
    assert os.path.exists(os.path.join(src, "bob", "Maildir", "new", "stray.M.h"))


def _forget_done(dst):
    journal = os.path.join(dst, mx.STATE_DIR, migration.JOURNAL)
    lines = [l for l in open(journal) if '"done"' not in l]
    open(journal, "w").writelines(lines)


def test_type_conflicts_between_target_and_source_are_cleared(roots):
    """A stale target where a file became a folder and folders (or a cur/ holding
    messages) became plain files: the planner clears them, messages below included."""
    src, dst = roots
    r = migration.migrate(src, dst, users=["alice"], force_copy=True, live_passes=1)
    assert r.ok, r.as_dict()
    _forget_done(dst)
    s_md, t_md = os.path.join(src, "alice", "Maildir"), os.path.join(dst, "alice", "Maildir")
    # source: .Old is a plain file, .A.B/cur a plain file, .New a real folder
    trees.write(os.path.join(s_md, ".Old"), b"not a folder")
    for name in os.listdir(os.path.join(s_md, ".A.B", "cur")):
        os.unlink(os.path.join(s_md, ".A.B", "cur", name))
    os.rmdir(os.path.join(s_md, ".A.B", "cur"))
    trees.write(os.path.join(s_md, ".A.B", "cur"), b"a file where cur/ was")
    trees.write(os.path.join(s_md, ".New", "cur", "9.M9.h:2,S"), b"new folder mail")
    # target: .Old a folder with a message, .New a plain file (.A.B/cur keeps its message)
    trees.write(os.path.join(t_md, ".Old", "cur", "8.M8.h:2,S"), b"stale")
    trees.write(os.path.join(t_md, ".New"), b"stale file")
    r = migration.migrate(src, dst, users=["alice"], force_copy=True, live_passes=0)
    assert r.ok, r.as_dict()
    assert trees.snapshot(dst, "alice") == trees.snapshot(src, "alice")
