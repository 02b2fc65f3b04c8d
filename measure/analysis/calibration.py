"""Control-calibrated latency events: thresholds fitted on control runs, cross-fitted, with
their measured false-event rate.

Why: an inserted text of any content moves every next-token distribution at once, so a fixed
threshold ("KL(run || P_ignore) above 0.1 nats", "r(t) > 0 for 3 tokens") fires at the first
token of every insertion and on the no-change ignore run itself. A latency is only a finding if
its event is *specific*: rare on runs where nothing about the problem changed. Here every event
is defined against what control runs do after the same injection point.

Definitions (k counts tokens after the change, 1-based, as in :mod:`measure.metrics.latency`):

- the *event curve* of a run is one per-token curve after the change that points toward B:
  ``log_ratio`` r(t) = log P_oracle(y_t) - log P_ignore(y_t) (the seed's probability ratio; > 0
  favours B), or ``kl_gap`` g(t) = KL(run || P_ignore) - KL(run || P_oracle) (> 0: the run's
  whole distribution is nearer B's than A's; a content-free insertion moves both KLs alike).
- with a window of w tokens, the run's *windowed curve* at k is the smallest value of the event
  curve over tokens k .. k+w-1 (the curve holds above it for w tokens in a row); its *score* is
  the largest windowed value anywhere after the change.
- the *threshold* m for a window w is the conformal (1 - a) quantile of the scores of the control
  runs of the fitting fold: the ceil((n + 1)(1 - a))-th smallest of n scores, with a = alpha
  divided by the number of candidate windows (Bonferroni: :func:`window_alpha`). For exchangeable
  control runs, a new control's score exceeds it with probability at most a, so it fires at any
  candidate window with probability at most alpha. With fewer than ``min_controls`` control runs
  (at least (number of windows)/alpha - 1, so that the quantile exists) the event is
  *uncalibrated* and no latency is reported. The threshold is never below 0:
  an event must favour B (controls whose curves all stay below 0 would otherwise let a run that
  merely favours A less count as adapting; identical-problem runs, at exactly 0, would fire).
- the *event* of a run is the first k from which the curve stays above m for w tokens; the
  latency is that k, or right-censored at the number of tokens after the change when no window
  does. (A window minimum, not a mean: a mean over a window that straddles a switch would date
  the event up to w - 1 tokens before the first token that favours B.)

Events (:data:`EVENTS`):

- ``detection_latency``: r(t), w = 1: the first token that the new problem makes more likely,
  relative to the old one, than any token of (1 - alpha) of the control runs does.
- ``adaptation_latency``: r(t), w chosen from (2, 4): the first token from which r favours
  B for w tokens in a row by a margin that controls do not sustain (the seed's "ratio > 1 and
  stays consistent", with its window and margin calibrated).
- ``adaptation_latency_kl``: the same on g(t), the KL form.

Control runs (``CONTROL_CONDITIONS``): ``noise`` (a content-free insertion of the update's length),
``repeat`` (the same information again) and the ``ignore`` run from the same injection point on
(nothing inserted, nothing changed), on problems whose B differs from A. Runs of identical
problems (variation type None: r and g are exactly 0) carry no information about the curves'
spread, so they are not fitted on; they are scored and reported as their own control kind.
``CHANGE_CONDITIONS`` (injection, flush, partial on changed problems) give the sensitivity.

Cross-fitting: problems are split into two folds by a seeded permutation (changed and identical
problems each split evenly). Thresholds are fitted per injection point on the controls of one
fold and applied to every run of the other fold, and vice versa, so no run is scored with a
threshold fitted on a run of its own problem. The window w (where there is a choice) is the one
with the largest event rate on the *fitting* fold's change runs (ties: the smaller w); the
held-out fold never influences the parameters it is scored with. The false-event rate reported
is measured on the held-out controls, with a Wilson interval.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from measure.metrics.latency import Latency

DEFAULT_ALPHA = 0.05
ADAPTATION_WINDOWS = (2, 4)
CONTROL_CONDITIONS = ("noise", "repeat", "ignore")
CHANGE_CONDITIONS = ("injection", "flush", "partial")
IDENTICAL = "identical"  # the control kind of runs on identical-problem pairs


@dataclass(frozen=True)
class EventSpec:
    """A calibrated event: which curve, which candidate windows, what it means."""

    name: str
    curve: str  # "log_ratio" | "kl_gap"
    windows: tuple[int, ...]
    description: str


EVENTS = (
    EventSpec("detection_latency", "log_ratio", (1,),
              "first token whose r(t) exceeds what (1 - alpha) of control runs ever reach"),
    EventSpec("adaptation_latency", "log_ratio", ADAPTATION_WINDOWS,
              "first token from which r(t) stays above the calibrated margin for w tokens in a row"),
    EventSpec("adaptation_latency_kl", "kl_gap", ADAPTATION_WINDOWS,
              "first token from which KL(run||P_ignore) - KL(run||P_oracle) stays above the calibrated "
              "margin for w tokens in a row"),
)
EVENT_NAMES = tuple(event.name for event in EVENTS)


def window_alpha(event: EventSpec, alpha: float) -> float:
    """The false-event rate each candidate window is fitted at: alpha split evenly over the windows
    (Bonferroni), so that whichever window the fitting fold picks, a control run fires at any of
    them with probability at most alpha. Without the split, picking the window with the most events
    on the fitting fold picks the one whose threshold came out low by chance: on the embedded model
    that gave 15 false events in 126 held-out controls at alpha = 0.05."""
    return alpha / len(event.windows)


def min_controls(alpha: float, n_windows: int = 1) -> int:
    """Fewest control runs with which the conformal quantile at ``alpha / n_windows`` exists (and at
    least 10)."""
    return max(10, math.ceil(n_windows / alpha) - 1)


@dataclass(frozen=True)
class RunCurve:
    """The event curves of one run after its change (index 0 = the first token after it).

    ``condition`` is the run's condition; an ignore run enters once per injection point, cut at
    that point's t0, with ``point`` set to the point.
    """

    problem_id: str
    condition: str
    point: str
    identical: bool  # the problem pair is an identical-problem control (B == A)
    curves: dict[str, np.ndarray]  # curve name -> (n_after,)

    @property
    def control_kind(self) -> str | None:
        """The kind of control this run is, or None when it is not a control."""
        if self.identical:
            return IDENTICAL
        return self.condition if self.condition in CONTROL_CONDITIONS else None

    @property
    def is_change(self) -> bool:
        return not self.identical and self.condition in CHANGE_CONDITIONS


def windowed_minima(curve, w: int) -> np.ndarray:
    """Smallest value of ``curve`` in each window of ``w`` tokens: ``(n,)`` -> ``(n - w + 1,)``.

    NaN (a missing reference) counts as -inf: it never supports an event.
    """
    x = np.asarray(curve, dtype=np.float64)
    if x.size < w:
        return np.empty(0)
    x = np.where(np.isnan(x), -np.inf, x)
    return np.lib.stride_tricks.sliding_window_view(x, w).min(axis=-1)


def run_score(curve, w: int) -> float:
    """The largest windowed minimum of the run (-inf when no full window exists)."""
    minima = windowed_minima(curve, w)
    return float(minima.max()) if minima.size else -math.inf


def conformal_threshold(scores: Sequence[float], alpha: float) -> float | None:
    """The ceil((n+1)(1-alpha))-th smallest score; None when n is too small for it to exist."""
    x = np.sort(np.asarray(list(scores), dtype=np.float64))
    rank = math.ceil((x.size + 1) * (1 - alpha))
    if x.size == 0 or rank > x.size:
        return None
    return float(x[rank - 1])


def event_latency(curve, w: int, threshold: float) -> Latency:
    """First 1-based k from which ``curve`` exceeds ``threshold`` for w tokens in a row; censored
    at len(curve) when it never does."""
    hits = np.flatnonzero(windowed_minima(curve, w) > threshold)
    n = int(np.asarray(curve).size)
    return Latency(int(hits[0]) + 1, False) if hits.size else Latency(n, True)


def assign_folds(problems: Iterable[tuple[str, bool]], seed: int = 0) -> dict[str, int]:
    """Problem id -> fold 0 or 1 by a seeded permutation, changed and identical problems each split
    evenly. ``problems``: (problem_id, identical) pairs; ids are deduplicated and sorted first so
    the assignment does not depend on record order."""
    unique = dict(sorted(dict(problems).items()))
    folds: dict[str, int] = {}
    rng = np.random.default_rng(seed)
    for identical in (False, True):
        ids = [pid for pid, ident in unique.items() if ident == identical]
        for rank, index in enumerate(rng.permutation(len(ids))):
            folds[ids[index]] = rank % 2
    return folds


@dataclass
class FoldFit:
    """Parameters fitted on one fold's runs at one point, applied to the other fold."""

    fit_fold: int
    n_controls: int
    window: int | None = None
    threshold: float | None = None
    fit_event_rate: float | None = None  # share of the fitting fold's change runs with an event
    reason: str | None = None  # why no threshold (too few controls)

    @property
    def calibrated(self) -> bool:
        return self.threshold is not None


def fit_fold(runs: Sequence[RunCurve], event: EventSpec, alpha: float, fold: int, n_min: int) -> FoldFit:
    """Threshold and window of ``event`` from one fold's runs (all at the same point)."""
    controls = [run for run in runs if run.control_kind in CONTROL_CONDITIONS]
    changes = [run for run in runs if run.is_change]
    fit = FoldFit(fit_fold=fold, n_controls=len(controls))
    level = window_alpha(event, alpha)
    if len(controls) < n_min:
        fit.reason = f"{len(controls)} control runs in fold {fold}"
        return fit
    best = None
    for w in event.windows:
        threshold = conformal_threshold([run_score(run.curves[event.curve], w) for run in controls], level)
        if threshold is None or not math.isfinite(threshold):
            continue
        threshold = max(threshold, 0.0)  # an event favours B: never below 0, whatever the controls do
        rate = (float(np.mean([run_score(run.curves[event.curve], w) > threshold for run in changes]))
                if changes else 0.0)
        if best is None or rate > best[2]:
            best = (w, threshold, rate)
    if best is None:
        fit.reason = f"no finite threshold from the {len(controls)} control runs of fold {fold}"
        return fit
    fit.window, fit.threshold, fit.fit_event_rate = best
    return fit


@dataclass
class PointCalibration:
    """One event at one injection point: both folds' fits and every run's latency."""

    event: str
    point: str
    alpha: float
    n_windows: int
    fits: list[FoldFit]
    latencies: dict[tuple[str, str], Latency | None] = field(default_factory=dict)  # (problem, condition)
    scored_with: dict[str, int] = field(default_factory=dict)  # problem id -> fold its threshold came from

    @property
    def calibrated(self) -> bool:
        return all(fit.calibrated for fit in self.fits)

    @property
    def reason(self) -> str | None:
        """Why the event is uncalibrated at this point (None when it is calibrated)."""
        if self.calibrated:
            return None
        needed = min_controls(self.alpha, self.n_windows)
        if all(fit.n_controls >= needed for fit in self.fits):
            return "; ".join(fit.reason for fit in self.fits if fit.reason)
        counts = " and ".join(str(fit.n_controls) for fit in self.fits)
        windows = f" over {self.n_windows} candidate windows" if self.n_windows > 1 else ""
        return (f"too few control runs (noise, repeat and ignore on changed problems): {counts} in the two "
                f"folds, at least {needed} per fold are needed at alpha = {self.alpha}{windows}")


def calibrate_point(runs: Sequence[RunCurve], event: EventSpec, folds: dict[str, int],
                    alpha: float = DEFAULT_ALPHA) -> PointCalibration:
    """Fit on each fold, score the other: every run of ``runs`` (one point) gets a latency, or None
    for every run when either fold is uncalibrated (a latency from one fold only would be scored
    on half the problems and read as the whole)."""
    point = runs[0].point if runs else "-"
    n_min = min_controls(alpha, len(event.windows))
    fits = [fit_fold([r for r in runs if folds[r.problem_id] == fold], event, alpha, fold, n_min) for fold in (0, 1)]
    result = PointCalibration(event.name, point, alpha, len(event.windows), fits)
    for run in runs:
        fit = fits[1 - folds[run.problem_id]]
        result.scored_with[run.problem_id] = fit.fit_fold
        result.latencies[(run.problem_id, run.condition)] = (
            event_latency(run.curves[event.curve], fit.window, fit.threshold) if result.calibrated else None)
    return result


def event_rates(calibration: PointCalibration, runs: Sequence[RunCurve]) -> dict:
    """Held-out event counts: ``{"false": {kind: (k, n)}, "true": {condition: (k, n)}}``.

    A run has an event when its latency is not censored. ``false`` pools the fitted control kinds
    under ``"controls"`` and lists each kind (identical-problem runs included) on its own.
    """
    false: dict[str, list[int]] = {}
    true: dict[str, list[int]] = {}
    for run in runs:
        latency = calibration.latencies.get((run.problem_id, run.condition))
        if latency is None:
            continue
        hit = int(not latency.censored)
        kind = run.control_kind
        if kind is not None:
            for name in ((kind, "controls") if kind in CONTROL_CONDITIONS else (kind,)):
                entry = false.setdefault(name, [0, 0])
                entry[0] += hit
                entry[1] += 1
        elif run.is_change:
            entry = true.setdefault(run.condition, [0, 0])
            entry[0] += hit
            entry[1] += 1
    return {"false": {k: tuple(v) for k, v in false.items()}, "true": {k: tuple(v) for k, v in true.items()}}
