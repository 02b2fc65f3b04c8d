"""Formatting and sort orders shared by every part of the report (tables, figures, findings,
compare): numbers for table cells, and the order conditions and points are shown in.

It imports nothing of the report, so any report module can use it without an import cycle.
"""

from __future__ import annotations

import math
import re

CONDITION_ORDER = ("ignore", "oracle", "injection", "flush", "partial", "noise", "repeat")


def fmt(value, digits: int = 3) -> str:
    """A number for a table cell: 3 significant digits, '–' for missing."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        if value == 0:
            return "0"
        if abs(value) >= 1e4 or abs(value) < 1e-3:
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}g}"
    return str(value)


def fmt_pct(value) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def condition_sort_key(name) -> tuple:
    name = "" if name is None else str(name)
    return (CONDITION_ORDER.index(name) if name in CONDITION_ORDER else len(CONDITION_ORDER), name)


def point_sort_key(point) -> tuple:
    """"-" first, then absolute points by value, then fractions by value."""
    point = str(point)
    if point == "-":
        return (0, 0.0, point)
    match = re.fullmatch(r"([tf])([0-9.]+)", point)
    if match:
        return (1 if match.group(1) == "t" else 2, float(match.group(2)), point)
    return (3, 0.0, point)
