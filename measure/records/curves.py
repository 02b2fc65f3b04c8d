"""A record's stored per-token values as numpy arrays, whatever form they were read in.

Records read in full hold their arrays as JSON-like lists (a missing value is None); the report's
compact reader (:mod:`measure.report.inputs`) holds them as numpy arrays (a missing value is NaN).
Every reader turns them into float arrays through these two functions, so both forms give the same
values.
"""

from __future__ import annotations

import numpy as np


def as_curve(values) -> np.ndarray:
    """A per-token curve as float64, NaN where a value is missing; empty when there is none."""
    if values is None:
        return np.array([], dtype=np.float64)
    if isinstance(values, np.ndarray):
        return values.astype(np.float64)
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def as_grid(values, dtype=np.float64) -> np.ndarray:
    """A grid (layers x tokens) as a 2-D float array, NaN where a value is missing; (0, 0) when
    there is none."""
    if values is None or len(values) == 0:
        return np.zeros((0, 0), dtype=dtype)
    if isinstance(values, np.ndarray):
        return values.astype(dtype)
    return np.array([[np.nan if v is None else v for v in row] for row in values], dtype=dtype)
