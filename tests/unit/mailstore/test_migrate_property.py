"""Property tests: random trees, random mail traffic during the live copy, exact result.

1. The planner alone (pure): for any source and any (possibly stale, partial) target, applying
   the plan to an in-memory target yields the source, and a message whose (folder, unique)
   is already in the target with the same size is renamed, never copied.
2. The whole migration on disk, with deliveries, flag renames, new->cur moves, expunges and
   control-file rewrites interleaved with the executor's file operations (via the kill-switch
   hook) until the quiesce hook runs: afterwards the target equals the source exactly, and
   every message exists once.
"""
import os
import shutil
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailstore import maildir
from mailstore import migrate as migration
from mailstore.migrate import run as migrate_run
from mailstore.migrate import execute as mx
from mailstore.migrate import plan as mp

from tests.harness import maildir_trees as trees

FOLDERS = ["", ".Sent", ".A.B"]
FLAGS = ["", "S", "RS", "FS", "ST"]

# -- 1. planner on plain data ----------------------------------------------------------------
msg_spec = st.tuples(st.sampled_from(FOLDERS), st.sampled_from(["new", "cur"]),
                     st.integers(0, 12), st.sampled_from(FLAGS), st.integers(0, 3),
                     st.integers(0, 2), st.sampled_from([0o600, 0o640]))


def _tree(specs, control_sizes, user="u"):
    msgs, seen = [], set()
    for folder, sub, uid, flags, size, mtime, mode in specs:
        unique = "%d.M.h" % uid
        name = unique if sub == "new" else unique + ":2," + flags
        rel = maildir.message_relpath(folder, sub, name)
        if rel in seen:
            continue
        seen.add(rel)
        msgs.append(maildir.Message(folder, sub, name, unique, "" if sub == "new" else
                                    "2," + flags, size, mtime, 8, 8, mode, 0))
    dirs = [maildir.Entry("", "dir", 0, 1, 8, 8, 0o700, 0),
            maildir.Entry("Maildir", "dir", 0, 1, 8, 8, 0o700, 0)]
    for f in FOLDERS:
        base = "Maildir" + ("/" + f if f else "")
        if f:
            dirs.append(maildir.Entry(base, "dir", 0, 1, 8, 8, 0o700, 0))
        for sub in ("new", "cur", "tmp"):
            dirs.append(maildir.Entry(base + "/" + sub, "dir", 0, 1, 8, 8, 0o700, 0))
    control = [maildir.Entry("Maildir/dovecot-uidlist", "control", s, 5, 8, 8, 0o600, 0)
               for s in control_sizes]
    return maildir.UserTree(user, "/x", msgs, [], control, [], [], [], dirs, [], [])


def _apply(target: dict, plan: mp.UserPlan, source: maildir.UserTree) -> dict:
    src = {m.relpath: m for m in source.messages}
    src.update({e.relpath: e for e in source.control + source.directories})
    t = dict(target)
    for a in plan.actions:
        if a.op == mp.CLEAR or a.op in (mp.DELETE, mp.RMDIR):
            assert a.relpath in t, a
            del t[a.relpath]
        elif a.op == mp.RENAME:
            assert a.relpath not in t, a
            e = src[a.relpath]
            moved = t.pop(a.old_relpath)
            assert (moved.key, moved.size) == (e.key, e.size), a
            t[a.relpath] = moved._replace(subdir=e.subdir, name=e.name, info=e.info)
        elif a.op in (mp.COPY, mp.MKDIR):
            t[a.relpath] = src[a.relpath]
        elif a.op in (mp.META, mp.DIRMETA):
            assert a.relpath in t, a
            e = src[a.relpath]
            t[a.relpath] = t[a.relpath]._replace(mtime_ns=e.mtime_ns, uid=e.uid, gid=e.gid,
                                                 mode=e.mode)
    return t


def _facts(items: dict) -> dict:
    return {k: (v.size if not isinstance(v, maildir.Entry) or v.kind != "dir" else 0,
                v.mtime_ns, v.uid, v.gid, v.mode) for k, v in items.items()}


@settings(max_examples=200, deadline=None)
@given(st.lists(msg_spec, max_size=15), st.lists(msg_spec, max_size=15),
       st.lists(st.integers(0, 3), min_size=1, max_size=1),
       st.lists(st.integers(0, 3), max_size=1), st.booleans())
def test_plan_makes_target_equal_source(src_specs, tgt_specs, s_ctl, t_ctl, target_exists):
    source = _tree(src_specs, s_ctl)
    target = _tree(tgt_specs, t_ctl) if target_exists else None
    plan = mp.plan_user(source, target)
    before = {}
    if target:
        before = {m.relpath: m for m in target.messages}
        before.update({e.relpath: e for e in target.control + target.directories})
    after = _apply(before, plan, source)
    expected = {m.relpath: m for m in source.messages}
    expected.update({e.relpath: e for e in source.control + source.directories})
    assert _facts(after) == _facts(expected)
    # rename-aware: a message is copied only if no unpaired target file had its key and size
    if target:
        from collections import Counter
        s_rel = {m.relpath for m in source.messages}
        t_rel = {m.relpath for m in target.messages}
        s_left = Counter((m.key, m.size) for m in source.messages if m.relpath not in t_rel)
        t_left = Counter((m.key, m.size) for m in target.messages if m.relpath not in s_rel)
        copied = Counter((a.entry.key, a.entry.size) for a in plan.actions
                         if a.op == mp.COPY and a.kind == "message" and a.relpath not in t_rel)
        for ks, n in copied.items():
            assert n <= max(0, s_left[ks] - t_left[ks]), (ks, plan)
    # a second plan against the result has nothing left to do
    diffs = mp.verify_user(source, _tree_from(after, source))
    assert diffs == [], (diffs, plan)


def _tree_from(items: dict, like: maildir.UserTree) -> maildir.UserTree:
    msgs = [v for v in items.values() if isinstance(v, maildir.Message)]
    ents = [v for v in items.values() if isinstance(v, maildir.Entry)]
    return like._replace(messages=msgs, control=[e for e in ents if e.kind == "control"],
                         directories=[e for e in ents if e.kind == "dir"])


# -- 2. on disk, with traffic ----------------------------------------------------------------
initial = st.lists(st.tuples(st.sampled_from(FOLDERS), st.sampled_from(["new", "cur"]),
                             st.sampled_from(FLAGS), st.binary(max_size=40)), max_size=12)
event = st.one_of(
    st.tuples(st.just("deliver"), st.sampled_from(FOLDERS), st.binary(max_size=30)),
    st.tuples(st.just("flag"), st.integers(0, 1000), st.sampled_from(FLAGS)),
    st.tuples(st.just("tocur"), st.integers(0, 1000), st.sampled_from(FLAGS)),
    st.tuples(st.just("expunge"), st.integers(0, 1000), st.just(None)),
    st.tuples(st.just("control"), st.sampled_from(FOLDERS), st.binary(max_size=20)),
)
timed_events = st.lists(st.tuples(st.integers(0, 40), event), max_size=25)


class Traffic:
    """Applies queued mail events to the source between the executor's file operations."""

    def __init__(self, root, user, events):
        self.md = os.path.join(root, user, "Maildir")
        self.events = list(events)
        self.seq = 0
        self.ticks = 0
        self.active = True

    def _messages(self):
        found = []
        for folder in FOLDERS:
            for sub in ("new", "cur"):
                d = os.path.join(self.md, folder, sub)
                found += [(folder, sub, n) for n in sorted(os.listdir(d))]
        return found

    def apply(self, ev):
        kind, a, b = ev
        msgs = self._messages()
        if kind == "deliver":
            self.seq += 1
            # Dovecot delivers via tmp/ then rename: never a torn file in new/
            tmp = os.path.join(self.md, a, "tmp", "d%d.M.h" % self.seq)
            trees.write(tmp, b, 1_700_000_000_000_000_000 + self.seq)
            os.rename(tmp, os.path.join(self.md, a, "new", "d%d.M.h" % self.seq))
        elif kind == "control":
            trees.write(os.path.join(self.md, a, "dovecot-uidlist"), b,
                        1_700_000_100_000_000_000 + self.seq)
            self.seq += 1
        elif msgs:
            folder, sub, name = msgs[a % len(msgs)]
            path = os.path.join(self.md, folder, sub, name)
            unique = name.partition(":")[0]
            if kind == "expunge":
                os.unlink(path)
            elif kind == "flag" and sub == "cur":
                os.rename(path, os.path.join(self.md, folder, "cur", unique + ":2," + b))
            elif kind == "tocur" and sub == "new":
                os.rename(path, os.path.join(self.md, folder, "cur", unique + ":2," + b))

    def tick(self):
        if not self.active:
            return
        self.ticks += 1
        while self.events and self.events[0][0] <= 0:
            self.apply(self.events.pop(0)[1])
        if self.events:
            gap, ev = self.events[0]
            self.events[0] = (gap - 1, ev)

    def quiesce(self):
        while self.events:
            self.apply(self.events.pop(0)[1])
        self.active = False


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(initial, timed_events, st.integers(1, 2), st.booleans())
def test_live_migration_with_traffic_ends_exact(init, events, live_passes, pre_existing):
    base = tempfile.mkdtemp(prefix="mailstore-prop-")
    real_kill, real_hook = mx.KILL, migrate_run.run_hook
    try:
        src, dst = os.path.join(base, "src"), os.path.join(base, "dst")
        os.makedirs(dst)
        msgs = [(f, sub, "%d.M%d.h" % (i, i), fl, data, 1_600_000_000_000_000_000 + i)
                for i, (f, sub, fl, data) in enumerate(init)]
        trees.make_user(src, "alice", msgs)
        if pre_existing:   # a killed earlier run left a partial, stale copy
            migration.migrate(src, dst, force_copy=True, live_passes=1, quiesce="exit 1")
        traffic = Traffic(src, "alice", events)

        def hook(command, out=None):
            if command == "QUIESCE":
                traffic.quiesce()
            return migration.HookResult(command, 0)

        mx.KILL = traffic
        migrate_run.run_hook = hook
        r = migration.migrate(src, dst, force_copy=True, quiesce="QUIESCE", resume="RESUME",
                              live_passes=live_passes)
        assert not traffic.events
        assert r.ok, r.as_dict()
        assert trees.snapshot(dst, "alice") == trees.snapshot(src, "alice")
        by_key = trees.messages_by_key(dst, "alice")
        assert all(len(v) == 1 for v in by_key.values())
        assert by_key.keys() == trees.messages_by_key(src, "alice").keys()
    finally:
        mx.KILL, migrate_run.run_hook = real_kill, real_hook
        shutil.rmtree(base)
