"""Plain-text tables for the reports of operations/adopt.py and operations/drift.py."""


def table(title, rows, header=None):
    """A title line ("== title"), then `rows` (sequences of values) in aligned columns."""
    rows = [[str(c) for c in row] for row in rows]
    lines = [f"== {title}"]
    if not rows:
        return "\n".join(lines + ["  (none)"])
    if header:
        rows = [list(header)] + rows
    widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(max(map(len, rows)))]
    for row in rows:
        lines.append("  " + "  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip())
    return "\n".join(lines)
