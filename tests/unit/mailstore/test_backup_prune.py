"""prune: the retention decision (pure, property-tested) and freeing space, on a fake clock."""
import calendar
import os
import time

from hypothesis import assume, given, settings, strategies as st
import pytest

from mailstore import backup
from mailstore.backup.prune import plan
from mailstore.backup.repository import Repository

from tests.harness import make_tree, message_bytes, run_clock, write

DAY = 86400


def _t(y, m, d, hh=3):
    return calendar.timegm((y, m, d, hh, 0, 0))


def test_plan_keeps_the_newest_per_period():
    # two snapshots a day (03:00 and 15:00) from 2026-09-01 to 2026-11-25 (Wed)
    snaps = []
    t = _t(2026, 9, 1)
    while t <= _t(2026, 11, 25, 15):
        snaps.append(("s{}".format(t), t))
        t += 12 * 3600
    keep, remove = plan(snaps, keep_daily=3, keep_weekly=2, keep_monthly=3)
    by_time = {sid: time.strftime("%Y-%m-%d %H", time.gmtime(t)) for sid, t in snaps}
    kept = sorted(by_time[s] for s in keep)
    assert kept == [
        "2026-09-30 15",                     # monthly: newest of September
        "2026-10-31 15",                     # monthly: newest of October
        "2026-11-22 15",                     # weekly: newest of ISO week 47 (Sunday)
        "2026-11-23 15", "2026-11-24 15",    # daily
        "2026-11-25 15",                     # daily + weekly (week 48) + monthly (November)
    ]
    assert len(remove) == len(snaps) - 6
    assert "last" not in sum(keep.values(), [])
    keep, _ = plan(snaps, keep_last=4, keep_daily=0, keep_weekly=0, keep_monthly=0)
    assert sorted(by_time[s] for s in keep) == ["2026-11-24 03", "2026-11-24 15",
                                                "2026-11-25 03", "2026-11-25 15"]


def test_plan_refuses_to_forget_everything():
    with pytest.raises(backup.BackupError, match="every --keep"):
        plan([("a", 1)], 0, 0, 0, 0)


@settings(max_examples=200, deadline=None)
@given(times=st.lists(st.integers(min_value=0, max_value=400 * DAY), max_size=60, unique=True),
       last=st.integers(0, 5), daily=st.integers(0, 10), weekly=st.integers(0, 6),
       monthly=st.integers(0, 4))
def test_plan_properties(times, last, daily, weekly, monthly):
    # every --keep-* at 0 is refused (test_plan_refuses_to_forget_everything): not an example
    assume(last or daily or weekly or monthly)
    snaps = [("s{}".format(t), t) for t in times]
    keep, remove = plan(snaps, last, daily, weekly, monthly)
    ids = {s for s, _ in snaps}
    assert set(keep) | set(remove) == ids and not set(keep) & set(remove)
    if snaps:
        assert max(snaps, key=lambda s: s[1])[0] in keep          # the newest always stays
    days = {time.strftime("%Y-%m-%d", time.gmtime(t)) for t in times}
    kept_daily = [s for s, reasons in keep.items() if any(r.startswith("daily") for r in reasons)]
    assert len(kept_daily) == min(daily, len(days))
    newest = sorted(snaps, key=lambda s: s[1], reverse=True)
    assert {s for s, _ in newest[:last]} <= set(keep)
    assert len(keep) <= last + daily + weekly + monthly


def test_prune_forgets_the_right_snapshots_and_frees_their_objects(tmp_path):
    backup.init(tmp_path / "repo", pack_size=4096)
    make_tree(tmp_path / "src")
    times = [_t(2026, 11, d) for d in range(1, 26)]      # one snapshot a day, Nov 1..25
    clock = run_clock(times)
    ids = {}
    for i, t in enumerate(times):
        # a message that lives in exactly one snapshot: its object must go with it
        path = str(tmp_path / "src/alice/Maildir/new/1800000{:03d}.M1P1.once".format(i))
        write(path, message_bytes("alice", "", 100 + i, b"only on day %d" % i),
              1_800_000_000_000_000_000)
        ids[t] = backup.run(tmp_path / "repo", tmp_path / "src", now=clock)["id"]
        os.unlink(path)
    keep_times = [_t(2026, 11, d) for d in (23, 24, 25)] + [_t(2026, 11, 22)] \
        + [_t(2026, 11, 15)]
    dry = backup.prune(tmp_path / "repo", keep_daily=3, keep_weekly=3, keep_monthly=1,
                       dry_run=True)
    assert sorted(k["id"] for k in dry["keep"]) == sorted(ids[t] for t in keep_times)
    assert backup.status(tmp_path / "repo")["snapshots"] == 25      # dry run changed nothing
    with Repository(tmp_path / "repo") as r:
        objects_before, = r.db.execute("SELECT count(*) FROM objects").fetchone()
        packs_before = r.db.execute("SELECT count(*) FROM packs").fetchone()[0]
    result = backup.prune(tmp_path / "repo", keep_daily=3, keep_weekly=3, keep_monthly=1)
    assert sorted(s["id"] for s in backup.list_snapshots(tmp_path / "repo")) == \
        sorted(ids[t] for t in keep_times)
    assert result["objects_removed"] == 20 == len(result["remove"])
    with Repository(tmp_path / "repo") as r:
        objects_after, = r.db.execute("SELECT count(*) FROM objects").fetchone()
        orphans = r.db.execute("SELECT count(*) FROM messages WHERE id NOT IN"
                               " (SELECT message FROM snapshot_messages)").fetchone()[0]
        on_disk = sum(len(f) for _d, _s, f in os.walk(os.path.join(r.path, "packs")))
        packs_after = r.db.execute("SELECT count(*) FROM packs").fetchone()[0]
    assert objects_after == objects_before - 20 and orphans == 0
    assert on_disk == packs_after and packs_after <= packs_before
    assert backup.verify(tmp_path / "repo", read_data=True)["ok"]
    # every kept snapshot still restores bit-exact, including its one-day message
    for t in keep_times:
        dst = tmp_path / ("dst" + ids[t])
        backup.restore(tmp_path / "repo", ids[t], dst)
        day = times.index(t)
        once = dst / "alice/Maildir/new/1800000{:03d}.M1P1.once".format(day)
        assert once.read_bytes() == message_bytes("alice", "", 100 + day,
                                                  b"only on day %d" % day)
    # pruning again with the same policy is a no-op
    again = backup.prune(tmp_path / "repo", keep_daily=3, keep_weekly=3, keep_monthly=1)
    assert again["remove"] == [] and again["objects_removed"] == 0
