"""Plain-text tables for CLI listings."""

from __future__ import annotations

from typing import Sequence


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]], indent: str = "") -> str:
    """Formats rows as left-aligned columns under upper-case headers.

    Args:
        headers: Column titles.
        rows: One sequence of cells per row; cells are converted with ``str``.
        indent: Prefix for every line.

    Returns:
        The table as one string without a trailing newline.
    """
    cells = [[h.upper() for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(indent + line for line in lines)
