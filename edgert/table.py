"""Tables for the person at the terminal: `edgert status`, `values`, `fleet status`.

`age` writes a time span the way those tables show it.

`render` lays rows out with rich: aligned columns fitted to the terminal's
width (long text columns wrap inside their column instead of being cut), and
states in colour when the output is a terminal; piped, the same columns
without colour or width limit, one line per row, for grep and awk. rich is
imported only here, when a table is printed on a terminal, so a command that
fails before (or prints JSON) does not pay for it; a piped table of plain
ASCII text is laid out the same way without it (importing rich is most of
`edgert status`'s start-up).
"""

from __future__ import annotations

import io
import shutil
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["render", "is_tty", "age", "STATE_STYLES"]

STATE_STYLES = {
    "running": "green",
    "starting": "cyan",
    "backing_off": "yellow",
    "stopping": "yellow",
    "stopped": "dim",
    "failed": "bold red",
}
PIPED_WIDTH = 100_000  # no limit: a row is one line


def is_tty() -> bool:
    return sys.stdout.isatty()


def age(seconds: float) -> str:
    """How long, for people: 0.4s, 12s, 3m05s, 2h10m, 3d4h; a negative time (a point
    from the future: a clock set back since) is shown with a minus."""
    if seconds < 0:
        return "-" + age(-seconds)
    s = int(seconds)
    if s < 10:
        return f"{seconds:.1f}s"
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 172800:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600}h"


def render(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    tty: bool | None = None,
    wrap: Sequence[str] = (),
    right: Sequence[str] = (),
    styles: dict[str, dict[str, str]] | None = None,
    width: int | None = None,
) -> str:
    """`rows` under `headers` as text. Columns named in `wrap` fold when the terminal
    is too narrow; those in `right` are right-aligned (numbers); `styles` maps a
    column to {cell text: rich style}, applied on a terminal only."""
    tty = is_tty() if tty is None else tty
    if not tty and width is None:
        plain = _plain(headers, rows, right)
        if plain is not None:
            return plain
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    if width is None:
        width = shutil.get_terminal_size().columns if tty else PIPED_WIDTH
    table = Table(box=None, show_edge=False, pad_edge=False, header_style="bold" if tty else None)
    for h in headers:
        table.add_column(
            h,
            justify="right" if h in right else "left",
            overflow="fold" if h in wrap else "ellipsis",
            no_wrap=h not in wrap,
            ratio=1 if h in wrap else None,
        )
    styles = styles or {}
    for row in rows:
        cells = []
        for h, v in zip(headers, row, strict=True):
            text = "" if v is None else str(v)
            style = styles.get(h, {}).get(text, "") if tty else ""
            cells.append(Text(text, style=style))
        table.add_row(*cells)
    out = io.StringIO()
    console = Console(
        file=out,
        width=width,
        color_system="standard" if tty else None,
        force_terminal=tty,
        highlight=False,
        soft_wrap=False,
    )
    console.print(table)
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines())


def _plain(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[str]
) -> str | None:
    """The piped table as rich lays it out (columns two spaces apart, no width limit),
    without importing rich: most of `edgert status`'s start-up. None when a cell has
    what only rich measures right (a line break, a character that is not ASCII)."""
    cells = [list(headers)] + [["" if v is None else str(v) for v in row] for row in rows]
    for row in cells:
        if len(row) != len(headers):
            raise ValueError(f"a row of {len(row)} cells under {len(headers)} headers")
        for c in row:
            if not c.isascii() or not c.isprintable():
                return None
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        out = [
            c.rjust(w) if h in right else c.ljust(w)
            for h, c, w in zip(headers, row, widths, strict=True)
        ]
        lines.append("  ".join(out).rstrip())
    return "\n".join(lines)
