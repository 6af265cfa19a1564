"""A small printing layer for the everyday client commands (``jobs``, ``logs``,
``triggers``): styled text and fixed-width tables in a few lines of standard library.

rich renders the rest of the command line; importing it costs about as much as the
rest of ``headwater jobs`` together, and these commands are typed all day. Colours follow
the usual conventions: only on a terminal, never with ``NO_COLOR`` or ``TERM=dumb``,
always with ``FORCE_COLOR``.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

__all__ = ["Cell", "Column", "Out", "cut", "render_table"]

_CODES = {
    "bold": "1",
    "dim": "2",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "magenta": "35",
    "cyan": "36",
    "white": "37",
}
# What a terminal would act on rather than show (bell, backspace, carriage return...).
_CONTROL = dict.fromkeys((7, 8, 11, 12, 13))


def wants_color(stream: TextIO) -> bool:
    env = os.environ
    if env.get("FORCE_COLOR"):
        return True
    if "NO_COLOR" in env or env.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def cut(text: str, width: int) -> str:
    """``text`` on at most ``width`` columns, ending in "…" when it was longer."""
    if len(text) <= width:
        return text
    return text[: max(width - 1, 0)] + "…" if width > 0 else ""


class Out:
    """One output stream: lines, styles when it is a colour terminal, its width."""

    def __init__(self, stream: TextIO | None = None, *, color: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.color = wants_color(self.stream) if color is None else color

    @property
    def width(self) -> int:
        return shutil.get_terminal_size((80, 24)).columns

    def style(self, text: str, style: str | None) -> str:
        if not style or not self.color:
            return text
        codes = ";".join(_CODES[s] for s in style.split() if s in _CODES)
        return f"\x1b[{codes}m{text}\x1b[0m" if codes else text

    def line(self, text: str = "", style: str | None = None) -> None:
        self.stream.write(self.style(text.translate(_CONTROL), style) + "\n")
        self.stream.flush()


@dataclass(frozen=True, slots=True)
class Column:
    header: str
    width: int
    right: bool = False  # right-justified (numbers, durations)


@dataclass(frozen=True, slots=True)
class Cell:
    text: str
    style: str | None = None


def render_table(
    out: Out, columns: Sequence[Column], rows: Sequence[Sequence[Cell | str]], gap: int = 2
) -> list[str]:
    """The header and rows, each cell cut to its column ("…") and padded; no line ends
    in spaces."""

    def fmt(cells: Sequence[Cell | str], header: bool) -> str:
        parts = []
        for column, cell in zip(columns, cells, strict=True):
            c = cell if isinstance(cell, Cell) else Cell(cell)
            text = cut(c.text.translate(_CONTROL), column.width)
            pad = " " * (column.width - len(text))
            styled = out.style(text, "bold" if header else c.style)
            parts.append(pad + styled if column.right else styled + pad)
        return (" " * gap).join(parts).rstrip()

    return [fmt([c.header for c in columns], True), *(fmt(r, False) for r in rows)]
