"""Window means of per-position curves after the change.

Positions are counted 1-based from the injection point: position 1 is the first token generated
after the change (array index ``t0``). Windows (inclusive, 1-based):

- ``immediate``: positions 1-5   (indices t0 .. t0+4)
- ``short``:     positions 6-20  (indices t0+5 .. t0+19)
- ``long``:      positions 21+   (indices t0+20 .. end)
- ``all``:       every position after the change

A window that is empty (the run ended earlier) or holds only NaN has mean ``None`` -- explicitly
not 0 and not NaN, so the dict is JSON-serialisable and the missing value cannot be mistaken for
a measurement. NaN entries inside a window are ignored (``nanmean``).
"""

from __future__ import annotations

import numpy as np

# name -> (first, last) 1-based positions after t0, last=None for "to the end"
WINDOWS: dict[str, tuple[int, int | None]] = {
    "immediate": (1, 5),
    "short": (6, 20),
    "long": (21, None),
    "all": (1, None),
}


def after_t0(curve, t0: int = 0) -> np.ndarray:
    """``curve[..., t0:]`` as a float array: the part of a per-position curve after the change."""
    arr = np.asarray(curve, dtype=np.float64)
    if t0 < 0:
        raise ValueError(f"t0 must be >= 0, got {t0}")
    return arr[..., t0:]


def window_slice(name: str) -> slice:
    """Index slice into a post-t0 curve for window ``name``."""
    first, last = WINDOWS[name]
    return slice(first - 1, last)


def _nanmean_or_none(x: np.ndarray) -> float | None:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else None


def window_mean(curve, name: str, t0: int = 0) -> float | None:
    """Mean of ``curve`` (``(n_generated,)``) over window ``name`` after ``t0``; None if empty."""
    return _nanmean_or_none(after_t0(curve, t0)[window_slice(name)])


def window_means(curve, t0: int = 0, windows=tuple(WINDOWS)) -> dict[str, float | None]:
    """``{window: mean or None}`` for a per-position curve ``(n_generated,)``."""
    post = after_t0(curve, t0)
    return {w: _nanmean_or_none(post[window_slice(w)]) for w in windows}


def window_means_rows(curves, t0: int = 0, windows=tuple(WINDOWS)) -> dict[str, np.ndarray]:
    """Window means of each row of ``(rows, n_generated)``: ``{window: (rows,)}``, NaN if empty.

    Row-wise companion of :func:`window_means` (used for per-layer hidden-state curves); here an
    empty window is NaN inside the array, and callers convert to None when serialising.
    """
    post = after_t0(np.atleast_2d(curves), t0)
    out = {}
    for w in windows:
        part = post[:, window_slice(w)]
        valid = ~np.isnan(part)
        cnt = valid.sum(axis=1)
        tot = np.where(valid, part, 0.0).sum(axis=1)
        out[w] = np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan)
    return out
