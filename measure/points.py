"""Injection points: absolute token counts ("16"), fractions of the ignore run ("0.3"), or points
timed by content ("after:quantity", "boundary:16", "before:answer"; measure.content_points).

Every point has a ``label`` (its name in record keys) and ``resolve_in(pieces, problem)``: t0, the
tokens of the ignore run before the change, or PointNotReached with the reason the point is
skipped for that problem."""

from __future__ import annotations

import math
from dataclasses import dataclass

from measure.content_points import CONTENT_PREFIXES, PointNotReached, parse_content_point


@dataclass(frozen=True)
class InjectionPoint:
    value: float
    is_fraction: bool

    @property
    def label(self) -> str:
        return f"f{self.value:g}" if self.is_fraction else f"t{int(self.value)}"

    def resolve(self, ignore_length: int) -> int:
        """Tokens generated before the change; at least 1 so the change follows some output."""
        if self.is_fraction:
            return max(1, int(math.floor(self.value * ignore_length)))
        return int(self.value)

    def resolve_in(self, pieces: list[str], problem) -> int:
        """t0 in an ignore run of these tokens (the interface of measure.content_points)."""
        t0 = self.resolve(len(pieces))
        if t0 >= len(pieces):
            raise PointNotReached(f"the ignore run stopped after {len(pieces)} tokens, at or before the injection "
                                  f"point t0={t0}")
        return t0

    @property
    def min_tokens(self) -> int:
        """Tokens the ignore run needs at least for this point to be reachable."""
        return 0 if self.is_fraction else int(self.value) + 1

    @property
    def fixed_t0(self) -> int | None:
        """t0 when it does not depend on the ignore run (a token count), else None (a fraction of
        the run's length). Such a point forks once the ignore run has t0 + 1 tokens, while the
        run goes on (measure.engine.engine)."""
        return None if self.is_fraction else int(self.value)


def parse_point(text: str | int | float):
    """'16' or 16 -> 16 tokens; '0.3' or 0.3 -> 30% of the ignore run's length; 'after:quantity',
    'boundary:N', 'before:answer' -> a content-timed point (measure.content_points)."""
    raw = str(text).strip()
    if raw.startswith(CONTENT_PREFIXES):
        return parse_content_point(raw)
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"injection point {raw!r} is neither a token count (16) nor a fraction (0.3)") from None
    if not math.isfinite(value):  # float() accepts 'inf' and 'nan'; neither is a place in a stream
        raise ValueError(f"injection point {raw!r} is not a finite number: give a token count (16) or a fraction (0.3)")
    if "." in raw or isinstance(text, float):
        if not 0.0 < value < 1.0:
            raise ValueError(f"fractional injection point {raw} must lie strictly between 0 and 1")
        return InjectionPoint(value, True)
    if value < 1 or value != int(value):
        raise ValueError(f"injection point {raw} must be a positive whole number of tokens")
    return InjectionPoint(value, False)


def parse_points(values) -> tuple[InjectionPoint, ...]:
    if isinstance(values, str):
        values = [v for v in values.split(",") if v.strip()]
    points = tuple(parse_point(v) for v in values)
    if not points:
        raise ValueError("at least one injection point is needed")
    return points


def merge_duplicate_points(values) -> tuple[list[str], list[str]]:
    """The points with repeats removed (first spelling kept, order kept), and one note per repeat.

    Points are told apart by their label, so '4', '04' and '4 ' are one point: measured twice they
    would be stored twice under one record key. Raises ValueError on a bad point.
    """
    if isinstance(values, str):
        values = [v for v in values.split(",") if v.strip()]
    kept: dict[str, str] = {}
    notes = []
    for value in values:
        label = parse_point(value).label
        if label in kept:
            notes.append(f"injection point {str(value).strip()!r} repeats {kept[label]!r} ({label}): measured once")
        else:
            kept[label] = str(value).strip()
    return list(kept.values()), notes
