"""Tables for the person at the terminal: `edgert status`, `values`, `fleet status`.

`age` writes a time span the way those tables show it.

`render` lays rows out with rich: aligned columns fitted to the terminal's
width (long text columns wrap inside their column instead of being cut), and
states in colour when the output is a terminal. On a terminal too narrow to
give those text columns room (80 columns for `status`), they go under their
row instead, one `  NAME: text` line each, folded to the width, so they are
never cut nor folded a word or a letter to a line; piped, the same columns
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
MIN_WRAPPED = 24  # narrower, a wrapped column reads a word or a letter a line


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
    under = _too_narrow(headers, rows, wrap, width)
    if under:
        return _stacked(headers, rows, under, tty, right, styles, width)
    table = Table(box=None, show_edge=False, pad_edge=False, header_style="bold" if tty else None)
    first = max([len(headers[0])] + [len(str(row[0] or "")) for row in rows]) if headers else 0
    for i, h in enumerate(headers):
        table.add_column(
            h,
            justify="right" if h in right else "left",
            overflow="fold" if h in wrap else "ellipsis",
            no_wrap=h not in wrap,
            ratio=1 if h in wrap else None,
            # what the row is about: never cut (piped, nothing is: no width limit)
            min_width=first if i == 0 and width < PIPED_WIDTH else None,
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


def _too_narrow(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], wrap: Sequence[str], width: int
) -> list[str]:
    """The `wrap` columns that must go under their rows (all of them), when the other
    columns at their full width leave them too little room: less than their longest
    text, and less than MIN_WRAPPED each; else []."""
    from rich.cells import cell_len

    texts = [["" if v is None else str(v) for v in row] for row in rows]
    full = [max([cell_len(h)] + [cell_len(t[i]) for t in texts]) for i, h in enumerate(headers)]
    under = [h for h in headers if h in wrap]
    fixed = sum(w + 2 for h, w in zip(headers, full, strict=True) if h not in wrap)
    room = width - fixed - 2 * (len(under) - 1)
    need = sum(min(w, MIN_WRAPPED) for h, w in zip(headers, full, strict=True) if h in wrap)
    return under if under and room < need else []


def _stacked(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    under: Sequence[str],
    tty: bool,
    right: Sequence[str],
    styles: dict[str, dict[str, str]] | None,
    width: int,
) -> str:
    """The table without the `under` columns, each row followed by its `under` texts
    (those it has), one `  NAME: text` line each, folded to `width`."""
    import textwrap

    keep = [i for i, h in enumerate(headers) if h not in under]
    narrow = render(
        [headers[i] for i in keep],
        [[row[i] for i in keep] for row in rows],
        tty=tty,
        right=right,
        styles=styles,
        width=width,
    ).splitlines()
    if len(narrow) != len(rows) + 1:  # not one line a row: leave it as rich made it
        return "\n".join(narrow)
    out = narrow[:1]
    for line, row in zip(narrow[1:], rows, strict=True):
        out.append(line)
        for h, v in zip(headers, row, strict=True):
            text = "" if v is None else str(v)
            if h in under and text:
                out += textwrap.wrap(
                    f"{h}: {text}",
                    width=max(width, 20),
                    initial_indent="  ",
                    subsequent_indent="    ",
                    break_on_hyphens=False,
                )
    return "\n".join(out)
