"""The cut-over's per-directory message state (mailstore.migrate.delta) and the scan it
builds on (maildir.scan_user_skeleton): what may be reused, what must be listed again."""
import os

from mailstore import maildir

from tests.harness import maildir_trees as trees

MSGS = [("", "new", "1.M1.h,S=3", "", b"abc", 1_500_000_000_000_000_000),
        ("", "cur", "2.M2.h,S=5", "S", b"hello", 1_500_000_001_000_000_000),
        (".Sent", "cur", "3.M3.h", "RS", b"", 1_500_000_002_000_000_000)]


def test_skeleton_scan_is_scan_without_messages(tmp_path):
    root = str(tmp_path)
    md = trees.make_user(root, "alice", MSGS)
    trees.write(os.path.join(md, "tmp", "99.delivering"), b"half")
    os.symlink("/etc/shadow", os.path.join(md, "cur", "evil:2,S"))
    full = maildir.scan_user(root, "alice")
    skel = maildir.scan_user_skeleton(root, "alice")
    assert skel.messages == []
    # the symlink in cur/ is an anomaly only a listing of cur/ finds
    assert [a.relpath for a in full.anomalies] == ["Maildir/cur/evil:2,S"]
    assert skel.anomalies == []
    assert skel._replace(scanned_ns=0) == full._replace(messages=[], anomalies=[],
                                                         scanned_ns=0)
    assert [e.relpath for e in skel.tmp_files] == ["Maildir/tmp/99.delivering"]


from mailstore.migrate import delta as md      # noqa: E402
from mailstore.migrate import plan as mp       # noqa: E402

OLD_NS = 1_500_000_000_000_000_000             # a directory mtime far in the past


def _names(state, key):
    return sorted(state.dirs.get(key, {}))


def _set_mtime(path, ns):
    os.utime(path, ns=(ns, ns))


def test_message_dir_key_matches_the_scan():
    assert md.message_dir_key("Maildir/cur") == ("", "cur")
    assert md.message_dir_key("Maildir/.Sent/new") == (".Sent", "new")
    assert md.message_dir_key("Maildir/tmp") is None
    assert md.message_dir_key("Maildir/.A/.B/cur") is None          # not a Maildir++ folder
    assert md.message_dir_key("Maildir/courierimapkeywords/cur") is None
    assert md.message_dir_key("sieve/cur") is None


def test_refresh_without_previous_equals_a_full_scan(tmp_path):
    root = str(tmp_path)
    trees.make_user(root, "alice", MSGS)
    full = maildir.scan_user(root, "alice")
    state = md.refresh(root, "alice", None)
    assert {k: v for k, v in state.dirs.items() if v} == mp.message_dirs(full)
    assert state.dirs[(".Sent", "new")] == {}            # empty new/ and cur/ are there too
    assert state.message_count == 3 and state.message_bytes == 8


def test_unchanged_old_directory_is_not_listed_again_unless_asked(tmp_path):
    """The skip is real: an old, unchanged mtime means 'same names' and the directory is not
    listed (a file slipped in with the mtime put back stays unseen) - unless relisted."""
    root = str(tmp_path)
    md_dir = trees.make_user(root, "alice", MSGS)
    cur = os.path.join(md_dir, "cur")
    _set_mtime(cur, OLD_NS)
    before = md.refresh(root, "alice", None)
    trees.write(os.path.join(cur, "7.M7.h:2,S"), b"sneaked in")
    _set_mtime(cur, OLD_NS)
    again = md.refresh(root, "alice", before)
    assert again.dirs[("", "cur")] is before.dirs[("", "cur")]
    assert "7.M7.h:2,S" not in again.dirs[("", "cur")]
    forced = md.refresh(root, "alice", before, relist=[("", "cur")])
    assert "7.M7.h:2,S" in forced.dirs[("", "cur")]


def test_directory_changed_in_the_same_second_as_the_look_is_listed_again(tmp_path):
    """A directory whose mtime is within a timestamp tick of the previous look may have
    changed after that look without its mtime moving: it is listed again."""
    root = str(tmp_path)
    md_dir = trees.make_user(root, "alice", MSGS)
    cur = os.path.join(md_dir, "cur")
    before = md.refresh(root, "alice", None)              # cur/ was written just now
    recorded = os.lstat(cur).st_mtime_ns
    # a flag change (rename) in the same tick: the mtime does not move
    os.rename(os.path.join(cur, "2.M2.h,S=5:2,S"), os.path.join(cur, "2.M2.h,S=5:2,RS"))
    _set_mtime(cur, recorded)
    again = md.refresh(root, "alice", before)
    assert _names(again, ("", "cur")) == ["2.M2.h,S=5:2,RS"]
    # the renamed name was looked at (lstat), the message itself is the same file
    m = again.dirs[("", "cur")]["2.M2.h,S=5:2,RS"]
    assert (m.unique, m.info, m.size) == ("2.M2.h,S=5", "2,RS", 5)


def test_rename_in_an_old_directory_is_seen(tmp_path):
    """The normal case: a rename sets the directory's mtime to now, so an old recorded
    mtime no longer matches; only the new name is lstat'ed, the others are reused."""
    root = str(tmp_path)
    md_dir = trees.make_user(root, "alice", MSGS)
    sent = os.path.join(md_dir, ".Sent", "cur")
    inbox_new = os.path.join(md_dir, "new")
    trees.write(os.path.join(sent, "4.M4.h:2,S"), b"kept")
    for d in (sent, inbox_new):
        _set_mtime(d, OLD_NS)
    before = md.refresh(root, "alice", None)
    # what a look would see but a reuse does not: a mode changed in place (the directory's
    # mtime does not move), a file slipped into INBOX/new with the old mtime put back
    os.chmod(os.path.join(sent, "4.M4.h:2,S"), 0o640)
    trees.write(os.path.join(inbox_new, "8.M8.h"), b"sneaked in")
    _set_mtime(inbox_new, OLD_NS)
    os.rename(os.path.join(sent, "3.M3.h:2,RS"), os.path.join(sent, "3.M3.h:2,FRS"))
    again = md.refresh(root, "alice", before)
    assert _names(again, (".Sent", "cur")) == ["3.M3.h:2,FRS", "4.M4.h:2,S"]
    # the other name of the renamed-in directory was not lstat'ed again
    assert again.dirs[(".Sent", "cur")]["4.M4.h:2,S"].mode == 0o600
    # the unchanged old directory was not listed again: the very same record
    assert again.dirs[("", "new")] is before.dirs[("", "new")]
    assert _names(again, ("", "new")) == ["1.M1.h,S=3"]


def test_restat_looks_at_a_file_changed_in_place(tmp_path):
    """chmod/utime do not move the directory's mtime: names in restat are lstat'ed anew."""
    root = str(tmp_path)
    md_dir = trees.make_user(root, "alice", MSGS)
    cur = os.path.join(md_dir, "cur")
    _set_mtime(cur, OLD_NS)
    before = md.refresh(root, "alice", None)
    os.chmod(os.path.join(cur, "2.M2.h,S=5:2,S"), 0o640)
    stale = md.refresh(root, "alice", before)
    assert stale.dirs[("", "cur")]["2.M2.h,S=5:2,S"].mode == 0o600
    fresh = md.refresh(root, "alice", before, restat={("", "cur"): {"2.M2.h,S=5:2,S"}})
    assert fresh.dirs[("", "cur")]["2.M2.h,S=5:2,S"].mode == 0o640


def test_refresh_reports_a_symlink_in_cur_and_does_not_follow_it(tmp_path):
    root = str(tmp_path)
    md_dir = trees.make_user(root, "alice", MSGS)
    os.symlink("/etc/shadow", os.path.join(md_dir, "cur", "evil:2,S"))
    state = md.refresh(root, "alice", None)
    assert "evil:2,S" not in state.dirs[("", "cur")]
    assert [(a.relpath, a.kind) for a in state.tree.anomalies] == [
        ("Maildir/cur/evil:2,S", "symlink")]


def test_adopt_equal_shares_equal_messages_and_keeps_different_ones(tmp_path):
    src, dst = str(tmp_path / "s"), str(tmp_path / "d")
    trees.make_user(src, "alice", MSGS)
    trees.make_user(dst, "alice", MSGS)
    os.chmod(os.path.join(dst, "alice", "Maildir", "cur", "2.M2.h,S=5:2,S"), 0o644)
    s = md.refresh(src, "alice", None)
    t = md.adopt_equal(md.refresh(dst, "alice", None), s)
    assert t.dirs[("", "new")]["1.M1.h,S=3"] is s.dirs[("", "new")]["1.M1.h,S=3"]
    assert t.dirs[("", "cur")]["2.M2.h,S=5:2,S"] is not s.dirs[("", "cur")]["2.M2.h,S=5:2,S"]
    plan = mp.plan_dirs(s.tree, s.dirs, t.tree, t.dirs)
    metas = [a.relpath for a in plan.actions if a.op == mp.META and a.kind == "message"]
    assert metas == ["Maildir/cur/2.M2.h,S=5:2,S"]
    diffs = mp.verify_dirs(s.tree, s.dirs, t.tree, t.dirs)
    assert [d.relpath for d in diffs if "message" in d.problem] == ["Maildir/cur/2.M2.h,S=5:2,S"]


def _facts(state):
    return {(k, n): (m.size, m.mtime_ns, m.uid, m.gid, m.mode)
            for k, d in state.dirs.items() for n, m in d.items()}


def test_listed_takes_known_facts_and_lstats_the_rest(tmp_path):
    root = str(tmp_path)
    md_dir = trees.make_user(root, "alice", MSGS)
    full = md.refresh(root, "alice", None)
    known_msg = full.dirs[("", "cur")]["2.M2.h,S=5:2,S"]
    # a stale "known" record for a name that is gone is simply not listed
    gone = known_msg._replace(name="2.M2.h,S=5:2,T")
    look = md.listed(root, "alice", {("", "cur"): {known_msg.name: known_msg,
                                                   gone.name: gone}})
    assert look.dirs[("", "cur")][known_msg.name] is known_msg        # not lstat'ed again
    assert _facts(look) == _facts(full)
    os.unlink(os.path.join(md_dir, "new", "1.M1.h,S=3"))
    assert ("", "new") in md.listed(root, "alice", {}).dirs
    assert md.listed(root, "alice", {}).dirs[("", "new")] == {}


def test_copy_changed_in_place_between_live_passes_is_looked_at_again(tmp_path, monkeypatch):
    """The live copy remembers the fstat of each copy it wrote instead of lstat'ing it
    again; a copy that a later live pass changes in place (here: the mode, following the
    source) still ends up exactly like the source after the cut-over."""
    from mailstore import migrate as migration
    from mailstore.migrate import passes
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    os.makedirs(dst)
    md_dir = trees.make_user(src, "alice", MSGS)
    real_pass, calls = passes.run_pass, []

    def pass_then_chmod(*args, **kw):
        out = real_pass(*args, **kw)
        calls.append(1)
        if len(calls) == 1:          # after the first live pass: the source file changes
            os.chmod(os.path.join(md_dir, "cur", "2.M2.h,S=5:2,S"), 0o640)
        return out

    monkeypatch.setattr(passes, "run_pass", pass_then_chmod)
    r = migration.migrate(src, dst, force_copy=True, live_passes=2, quiesce="true")
    assert r.ok, r.as_dict()
    assert os.stat(os.path.join(dst, "alice", "Maildir", "cur",
                                "2.M2.h,S=5:2,S")).st_mode & 0o777 == 0o640
    assert trees.snapshot(dst, "alice") == trees.snapshot(src, "alice")


def test_refresh_takes_moved_records_only_for_listed_names_and_restat_wins(tmp_path):
    root = str(tmp_path)
    md_dir = trees.make_user(root, "alice", MSGS)
    cur = os.path.join(md_dir, "cur")
    before = md.refresh(root, "alice", None)
    old = before.dirs[("", "cur")]["2.M2.h,S=5:2,S"]
    os.rename(os.path.join(cur, old.name), os.path.join(cur, "2.M2.h,S=5:2,RS"))
    carried = old._replace(name="2.M2.h,S=5:2,RS", info="2,RS")
    ghost = old._replace(name="2.M2.h,S=5:2,T", info="2,T")       # never renamed to
    moved = {("", "cur"): {carried.name: carried, ghost.name: ghost}}
    look = md.refresh(root, "alice", before, relist=[("", "cur")], moved=moved)
    assert look.dirs[("", "cur")] == {carried.name: carried}
    assert look.dirs[("", "cur")][carried.name] is carried            # no lstat
    os.chmod(os.path.join(cur, carried.name), 0o640)
    look = md.refresh(root, "alice", before, relist=[("", "cur")], moved=moved,
                      restat={("", "cur"): {carried.name}})
    assert look.dirs[("", "cur")][carried.name].mode == 0o640


import pytest                                   # noqa: E402

from mailstore.migrate import execute as mx       # noqa: E402


@pytest.mark.parametrize("drain_at", [None, 0])
@pytest.mark.parametrize("tamper", ["extra-in-touched", "extra-in-untouched",
                                    "copy-mode-changed", "renamed-gone",
                                    "mode-changed-in-untouched", "renamed-mode-changed"])
def test_cut_over_verification_looks_at_the_target_for_real(tmp_path, monkeypatch, tamper,
                                                           drain_at):
    """Whatever happens to the target between the cut-over's actions and its verification
    is seen: the verification is a fresh look, not the plan's bookkeeping - also when the
    target's events were read early (the queue filled up: drain_at 0)."""
    from mailstore import migrate as migration
    from mailstore.migrate import cutover, run as migrate_run
    if drain_at is not None:
        monkeypatch.setattr(cutover, "TARGET_QUEUE_DRAIN_AT", drain_at)
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    os.makedirs(dst)
    s_md = trees.make_user(src, "alice", MSGS)
    for sub in ("cur", ".Sent/cur"):           # directories the live copy sees as old
        _set_mtime(os.path.join(s_md, sub), OLD_NS)
    t_md = os.path.join(dst, "alice", "Maildir")
    real_run = mx.Executor.run

    def run_then_tamper(self, plan):
        res = real_run(self, plan)
        if not self.live:
            if tamper == "extra-in-touched":
                trees.write(os.path.join(t_md, "cur", "66.M66.h:2,S"), b"not in the source")
            elif tamper == "extra-in-untouched":
                trees.write(os.path.join(t_md, ".Sent", "cur", "67.M67.h:2,S"), b"stray")
            elif tamper == "copy-mode-changed":
                os.chmod(os.path.join(t_md, "new", "5.M5.h"), 0o644)
            elif tamper == "renamed-gone":
                os.unlink(os.path.join(t_md, "cur", "2.M2.h,S=5:2,RS"))
            elif tamper == "renamed-mode-changed":
                os.chmod(os.path.join(t_md, "cur", "2.M2.h,S=5:2,RS"), 0o644)
            elif tamper == "mode-changed-in-untouched":
                os.chmod(os.path.join(t_md, ".Sent", "cur", "3.M3.h:2,RS"), 0o644)
        return res

    def traffic(command, out=None):             # the quiesce hook: a day of IMAP use
        cur = os.path.join(s_md, "cur")
        os.rename(os.path.join(cur, "2.M2.h,S=5:2,S"), os.path.join(cur, "2.M2.h,S=5:2,RS"))
        trees.write(os.path.join(s_md, "new", "5.M5.h"), b"new mail")
        return migration.HookResult(command, 0)

    monkeypatch.setattr(mx.Executor, "run", run_then_tamper)
    monkeypatch.setattr(migrate_run, "run_hook", traffic)
    r = migration.migrate(src, dst, force_copy=True, live_passes=1, quiesce="Q")
    alice = r.users[0]
    assert not r.ok and not alice.done and alice.differences, alice.as_dict()
    # and a run without tampering repairs it (the user was not recorded as done)
    monkeypatch.setattr(mx.Executor, "run", real_run)
    monkeypatch.setattr(migrate_run, "run_hook", lambda c, out=None: migration.HookResult(c, 0))
    r = migration.migrate(src, dst, force_copy=True, live_passes=1, quiesce="Q")
    assert r.ok, r.as_dict()
    assert trees.snapshot(dst, "alice") == trees.snapshot(src, "alice")


def test_cut_over_compares_only_the_names_that_changed(tmp_path, monkeypatch):
    """A mailbox of 300 messages with one flag change, one new and one expunged message
    during the quiesce: the cut-over's plan and verification compare those names (and
    what differed at the end of the live copy), not the mailbox; the result is exact."""
    from mailstore import migrate as migration
    from mailstore.migrate import cutover, run as migrate_run
    from mailstore.migrate.dirwatch import DirWatch
    if DirWatch().fd is None:
        pytest.skip("no inotify on this system")
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    os.makedirs(dst)
    msgs = [("", "cur", "%d.M%d.h" % (i, i), "S", b"m%d" % i, OLD_NS + i) for i in range(300)]
    s_md = trees.make_user(src, "alice", msgs)
    cur = os.path.join(s_md, "cur")
    compared = []
    cut_over = []
    real_split, real_final = mp.split_names, cutover.final_pass

    def split(names, other):
        if cut_over:
            compared.append(len(names))
        return real_split(names, other)

    def final_pass(*a, **k):
        cut_over.append(True)
        return real_final(*a, **k)

    def traffic(command, out=None):             # the quiesce hook
        os.rename(os.path.join(cur, "7.M7.h:2,S"), os.path.join(cur, "7.M7.h:2,RS"))
        os.unlink(os.path.join(cur, "8.M8.h:2,S"))
        trees.write(os.path.join(s_md, "new", "900.M900.h"), b"new mail")
        return migration.HookResult(command, 0)

    monkeypatch.setattr(mp, "split_names", split)
    monkeypatch.setattr(cutover, "final_pass", final_pass)
    monkeypatch.setattr(migrate_run, "run_hook", traffic)
    r = migration.migrate(src, dst, force_copy=True, live_passes=1, quiesce="Q")
    assert r.ok, r.as_dict()
    assert trees.snapshot(dst, "alice") == trees.snapshot(src, "alice")
    assert (r.users[0].renamed, r.users[0].deleted, r.users[0].copied_messages) == (1, 1, 301)
    assert compared and sum(compared) < 20, compared
