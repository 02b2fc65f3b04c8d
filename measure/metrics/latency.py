"""Latencies: how many tokens after the change until an event, right-censored at the run's end.

Counting convention (used everywhere in this package): latencies are 1-based token counts from
the injection point. ``value == 1`` means the event happens at the first token generated after
the change (array index ``t0``); ``value == k`` means it happens at index ``t0 + k - 1``, i.e.
the model needed k tokens. The same 1-based positions define the windows (immediate = 1-5).

Censoring: when the event is not observed before the run ends, the result is
``Latency(value=n, censored=True)`` with ``n`` the number of tokens observed after the change
(the censoring time: the true latency is > n). Never drop or cap these; feed ``value`` and
``censored`` to :func:`measure.analysis.stats.km_median`. A run with no token after the change is
censored at 0.

Every function looks only at ``curve[t0:]``: values before ``t0`` cannot change the result.
NaN values never satisfy a condition (a missing reference is "no event").

The functions take any per-position curve, so they apply equally to divergence curves, the
log-ratio r(t) and attention-mass curves (pass ``t0=0`` for curves that already start at the
change, such as those built from ``RunResult.attention_mass``).

Detection and adaptation latencies are not here: their events are defined against control runs
(a fixed threshold fires on any insertion), so they are computed across a run's records by
:mod:`measure.analysis.calibration`. :func:`first_run` and :func:`threshold_latency` remain generic tools.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from measure.metrics.windows import after_t0

DEFAULT_GAP_TOKENS = 20  # the adaptation gap averages the immediate and short windows (1-20)
DEFAULT_STAB_WINDOW = 5  # tokens per rolling-variance window
DEFAULT_STAB_EPS = 0.1  # rolling variance below this = stable (units of the curve squared)


class Latency(NamedTuple):
    """``value``: 1-based tokens after the change (censoring time if ``censored``)."""

    value: int
    censored: bool

    def as_dict(self, name: str) -> dict:
        return {name: int(self.value), f"{name}_censored": bool(self.censored)}


def first_run(condition, w: int = 1) -> Latency:
    """First 1-based position from which ``condition`` (bool ``(n,)``) holds ``w`` times in a row.

    Censored at ``n`` when no run of ``w`` consecutive True values exists (including a run of
    True values cut short by the end of the sequence).
    """
    if w < 1:
        raise ValueError(f"w must be >= 1, got {w}")
    cond = np.asarray(condition, dtype=bool)
    n = cond.size
    if n >= w:
        # windows[i] = number of True in cond[i:i+w]
        csum = np.concatenate([[0], np.cumsum(cond, dtype=np.int64)])
        full = (csum[w:] - csum[:-w]) == w
        hits = np.flatnonzero(full)
        if hits.size:
            return Latency(int(hits[0]) + 1, False)
    return Latency(n, True)


def threshold_latency(curve, threshold: float, t0: int = 0, *, above: bool = True, w: int = 1) -> Latency:
    """First position after ``t0`` where ``curve`` is above (or below) ``threshold``, w in a row."""
    post = after_t0(curve, t0)
    with np.errstate(invalid="ignore"):
        cond = post > threshold if above else post < threshold
    return first_run(cond, w)


def adaptation_gap(kl_matched, t0: int = 0, tokens: int = DEFAULT_GAP_TOKENS) -> float | None:
    """The adaptation gap of a run: mean KL(run || P_matched) over the first ``tokens`` tokens after
    the change (fewer when the run ends sooner); None when no token follows the change.

    P_matched is the run's own token stream with B from the start, so the gap is what the stale
    problem A still adds to the run's distributions: 0 for flush (an exact recompute of B), the
    full A-vs-B difference for a control that never takes the change in.
    """
    post = after_t0(kl_matched, t0)[:tokens]
    post = post[np.isfinite(post)]
    return float(post.mean()) if post.size else None


def rolling_variance(curve, window: int = DEFAULT_STAB_WINDOW) -> np.ndarray:
    """Population variance of each window ``curve[i:i+window]``: ``(n,)`` -> ``(n - window + 1,)``.

    Empty when the curve is shorter than ``window``; NaN where a window contains NaN.
    """
    x = np.asarray(curve, dtype=np.float64)
    if x.size < window:
        return np.empty(0)
    view = np.lib.stride_tricks.sliding_window_view(x, window)
    return view.var(axis=-1)


def stabilization_latency(
    curve, t0: int = 0, eps: float = DEFAULT_STAB_EPS, window: int = DEFAULT_STAB_WINDOW
) -> Latency:
    """First position k after which the rolling variance of ``curve`` stays below ``eps``.

    With v_k the variance of the ``window`` tokens at positions k .. k+window-1 (1-based after
    ``t0``), the latency is the smallest k with v_j < eps for every j >= k up to the last full
    window: from position k on the curve stays in a narrow band until the run ends. Censored at
    n when the last full window is not below ``eps`` or fewer than ``window`` tokens follow t0.
    ``eps`` is in the curve's units squared (nats^2 for r(t), probability^2 for attention mass).
    """
    post = after_t0(curve, t0)
    v = rolling_variance(post, window)
    if v.size == 0:
        return Latency(post.size, True)
    with np.errstate(invalid="ignore"):
        ok = v < eps
    if not ok[-1]:
        return Latency(post.size, True)
    bad = np.flatnonzero(~ok)
    k0 = int(bad[-1]) + 1 if bad.size else 0
    return Latency(k0 + 1, False)
