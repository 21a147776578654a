"""A fake clock for backup runs: each run asks the time twice (start and finish)."""


def run_clock(times):
    """A `now()` that gives each run the next of `times` at its start and 60 s later at its
    finish, so that snapshots get the days a test chooses."""
    it = iter(times)
    current = [None]

    def now():
        if current[0] is None:
            current[0] = next(it)
            return current[0]
        t, current[0] = current[0], None
        return t + 60
    return now
