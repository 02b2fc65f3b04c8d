"""Injection points: absolute token counts ("16") or fractions of the ignore run ("0.3")."""

from __future__ import annotations

import math
from dataclasses import dataclass


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


def parse_point(text: str | int | float) -> InjectionPoint:
    """'16' or 16 -> 16 tokens; '0.3' or 0.3 -> 30% of the ignore run's length."""
    raw = str(text).strip()
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"injection point {raw!r} is neither a token count (16) nor a fraction (0.3)") from None
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
