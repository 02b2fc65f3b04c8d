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
  runs of the fitting set (every fold but the scored one): the ceil((n + 1)(1 - a))-th smallest
  of n scores, with a = alpha divided by the number of candidate windows (Bonferroni:
  :func:`window_alpha`). For exchangeable control runs, a new control's score exceeds it with
  probability at most a, so it fires at any candidate window with probability at most alpha.
  With fewer than ``min_controls`` control runs (at least (number of windows)/alpha - 1, so that
  the quantile exists) the event is *uncalibrated* and no latency is reported. The threshold is never below 0:
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

Cross-fitting: problems are split into :data:`N_FOLDS` folds by a seeded permutation (changed
and identical problems each dealt round the folds). For each fold, thresholds are fitted per
injection point on the controls of every *other* fold (the fitting set) and applied to the runs
of that fold, so no run is scored with a threshold fitted on a run of its own problem. The window
w (where there is a choice) is the one with the largest event rate on the fitting set's change
runs (ties: the smaller w); the scored fold never influences the parameters it is scored with.
Ten folds, not two: with two, each threshold rested on half the controls, and the conformal
quantile of 63 scores (their third largest) moved from 4.7 to 9.4 nats between the two halves of
the default run; with ten, each rests on nine tenths of them. The false-event rate reported
is measured on the held-out controls, with a Wilson interval.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from measure.metrics.latency import Latency

DEFAULT_ALPHA = 0.05
N_FOLDS = 10  # cross-fitting folds of problems (see the module's docstring)
ADAPTATION_WINDOWS = (2, 4)
CONTROL_CONDITIONS = ("noise", "repeat", "ignore")
CHANGE_CONDITIONS = ("injection", "flush", "partial")
IDENTICAL = "identical"  # the control kind of runs on identical-problem pairs


WINDOW, CUSUM, CUMULATIVE = "window", "cusum", "cumulative"  # the statistics an event reads its curve with


@dataclass(frozen=True)
class EventSpec:
    """A calibrated event: which curve, which statistic of it, which candidate parameters, what it
    means.

    ``statistic``: ``"window"`` (the curve above the threshold for w tokens in a row; candidates:
    ``windows``), ``"cusum"`` (Page's CUSUM C_k = max(0, C_{k-1} + x_k - d); candidates: ``drifts``
    d) or ``"cumulative"`` (the running sum S_k = x_1 + ... + x_k, no reset; one candidate). The
    candidates of an event are what its fitting set chooses among, and alpha is split over them.
    """

    name: str
    curve: str  # "log_ratio" | "kl_gap"
    windows: tuple[int, ...]
    description: str
    statistic: str = WINDOW
    drifts: tuple[float, ...] = (0.0,)

    @property
    def candidates(self) -> tuple:
        """The parameters the fitting fold chooses among: windows, or CUSUM drifts."""
        return {WINDOW: self.windows, CUSUM: self.drifts}.get(self.statistic, (None,))

    @property
    def sequential(self) -> bool:
        """An evidence-accumulating statistic (CUSUM or cumulative sum) rather than a window."""
        return self.statistic != WINDOW


EVENTS = (
    EventSpec("detection_latency", "log_ratio", (1,),
              "first token whose r(t) exceeds what (1 - alpha) of control runs ever reach"),
    EventSpec("adaptation_latency", "log_ratio", ADAPTATION_WINDOWS,
              "first token from which r(t) stays above the calibrated margin for w tokens in a row"),
    EventSpec("adaptation_latency_kl", "kl_gap", ADAPTATION_WINDOWS,
              "first token from which KL(run||P_ignore) - KL(run||P_oracle) stays above the calibrated "
              "margin for w tokens in a row"),
    EventSpec("cusum_latency", "log_ratio", (), "first token at which Page's CUSUM of r(t), "
              "C_k = max(0, C_(k-1) + r_k), exceeds what (1 - alpha) of control runs ever reach", CUSUM),
    EventSpec("cusum_latency_kl", "kl_gap", (), "first token at which Page's CUSUM of "
              "KL(run||P_ignore) - KL(run||P_oracle) exceeds what (1 - alpha) of control runs ever reach", CUSUM),
    EventSpec("cumulative_llr_latency", "log_ratio", (), "first token at which the cumulative log-likelihood ratio "
              "of the run's tokens since the change, r_1 + ... + r_k, exceeds what (1 - alpha) of control runs ever "
              "reach", CUMULATIVE),
)
EVENT_NAMES = tuple(event.name for event in EVENTS)
EVENTS_BY_NAME = {event.name: event for event in EVENTS}


def window_alpha(event: EventSpec, alpha: float) -> float:
    """The false-event rate each candidate (window or drift) is fitted at: alpha split evenly over
    the candidates (Bonferroni), so that whichever the fitting set picks, a control run fires at
    any of them with probability at most alpha. Without the split, picking the window with the most
    events on the fitting set picks the one whose threshold came out low by chance: on the embedded
    model that gave 15 false events in 126 held-out controls at alpha = 0.05."""
    return alpha / len(event.candidates)


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


def statistic_path(event: EventSpec, curve, parameter) -> np.ndarray:
    """The event's statistic at each position after the change; the event is the first position
    where it exceeds the threshold, the run's score its largest value.

    - window (``parameter`` = w): the windowed minima, position k = the window's first token;
    - cusum (``parameter`` = drift d): Page's C_k = max(0, C_{k-1} + x_k - d), C_0 = 0;
    - cumulative: S_k = x_1 + ... + x_k.

    A missing value (NaN: a missing reference) supports nothing: -inf in a window, a zero
    increment in a sum.
    """
    if event.statistic == WINDOW:
        return windowed_minima(curve, parameter)
    x = np.nan_to_num(np.asarray(curve, dtype=np.float64), nan=0.0, posinf=np.inf, neginf=-np.inf)
    if event.statistic == CUMULATIVE:
        return np.cumsum(x)
    # Page's recursion unrolled: C_k = S_k - min(0, S_1, ..., S_k) for S the running sum of x - d.
    running = np.cumsum(x - (parameter or 0.0))
    return running - np.minimum(np.minimum.accumulate(running), 0.0) if running.size else running


def event_score(event: EventSpec, curve, parameter) -> float:
    """The largest value of the event's statistic over the run (-inf when it has none)."""
    path = statistic_path(event, curve, parameter)
    return float(path.max()) if path.size else -math.inf


def event_latency_of(event: EventSpec, curve, parameter, threshold: float) -> Latency:
    """First 1-based position at which the event's statistic exceeds ``threshold``; censored at
    len(curve) when it never does."""
    hits = np.flatnonzero(statistic_path(event, curve, parameter) > threshold)
    n = int(np.asarray(curve).size)
    return Latency(int(hits[0]) + 1, False) if hits.size else Latency(n, True)


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


def assign_folds(problems: Iterable[tuple[str, bool]], seed: int = 0, n_folds: int = N_FOLDS) -> dict[str, int]:
    """Problem id -> fold 0 .. n_folds - 1 by a seeded permutation, changed and identical problems
    each dealt round the folds in turn (so fold sizes differ by at most one of each). ``problems``:
    (problem_id, identical) pairs; ids are deduplicated and sorted first so the assignment does not
    depend on record order."""
    unique = dict(sorted(dict(problems).items()))
    folds: dict[str, int] = {}
    rng = np.random.default_rng(seed)
    for identical in (False, True):
        ids = [pid for pid, ident in unique.items() if ident == identical]
        for rank, index in enumerate(rng.permutation(len(ids))):
            folds[ids[index]] = rank % n_folds
    return folds


@dataclass
class FoldFit:
    """Parameters fitted at one point on the runs of every fold but ``fold`` (the fitting set),
    applied to the runs of ``fold``."""

    fold: int  # the fold this fit scores
    n_controls: int  # control runs in the fitting set
    window: int | None = None  # the chosen window (window events)
    threshold: float | None = None
    drift: float | None = None  # the chosen drift (CUSUM events)
    fit_event_rate: float | None = None  # share of the fitting set's change runs with an event
    reason: str | None = None  # why no threshold (too few controls)

    @property
    def calibrated(self) -> bool:
        return self.threshold is not None

    @property
    def parameter(self):
        """The chosen candidate: the window of a window event, the drift of a CUSUM."""
        return self.window if self.window is not None else self.drift

    def latency(self, event: EventSpec, curve) -> Latency:
        """The event's latency on ``curve`` with this fold's parameter and threshold."""
        return event_latency_of(event, curve, self.parameter, self.threshold)


def fit_fold(runs: Sequence[RunCurve], event: EventSpec, alpha: float, fold: int, n_min: int) -> FoldFit:
    """Threshold and window of ``event`` for the runs of ``fold``, from ``runs``: the fitting set's
    runs (every other fold's, all at the same point)."""
    controls = [run for run in runs if run.control_kind in CONTROL_CONDITIONS]
    changes = [run for run in runs if run.is_change]
    fit = FoldFit(fold=fold, n_controls=len(controls))
    level = window_alpha(event, alpha)
    if len(controls) < n_min:
        fit.reason = f"{len(controls)} control runs outside fold {fold}"
        return fit
    best = None
    for candidate in event.candidates:
        threshold = conformal_threshold([event_score(event, run.curves[event.curve], candidate) for run in controls],
                                        level)
        if threshold is None or not math.isfinite(threshold):
            continue
        threshold = max(threshold, 0.0)  # an event favours B: never below 0, whatever the controls do
        rate = (float(np.mean([event_score(event, run.curves[event.curve], candidate) > threshold
                               for run in changes])) if changes else 0.0)
        if best is None or rate > best[2]:
            best = (candidate, threshold, rate)
    if best is None:
        fit.reason = f"no finite threshold from the {len(controls)} control runs outside fold {fold}"
        return fit
    candidate, fit.threshold, fit.fit_event_rate = best
    if event.statistic == WINDOW:
        fit.window = candidate
    elif event.statistic == CUSUM:
        fit.drift = candidate
    return fit


def n_folds_of(folds: dict[str, int]) -> int:
    """How many folds an assignment has (folds are numbered from 0)."""
    return max(folds.values(), default=0) + 1


@dataclass
class PointCalibration:
    """One event at one injection point: each fold's fit (``fits[k]`` scores fold k) and every run's latency."""

    event: str
    point: str
    alpha: float
    n_windows: int
    fits: list[FoldFit]
    latencies: dict[tuple[str, str], Latency | None] = field(default_factory=dict)  # (problem, condition)
    # (problem, condition) -> whether a perfect adapter could fire on the run (observable); None: unknown
    observable: dict[tuple[str, str], bool | None] = field(default_factory=dict)

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
        counts = sorted(fit.n_controls for fit in self.fits)
        shown = str(counts[0]) if counts[0] == counts[-1] else f"{counts[0]} to {counts[-1]}"
        windows = f" over {self.n_windows} candidates" if self.n_windows > 1 else ""
        return (f"too few control runs (noise, repeat and ignore on changed problems): {shown} in each fold's "
                f"fitting set, at least {needed} are needed at alpha = {self.alpha}{windows}")


def calibrate_point(runs: Sequence[RunCurve], event: EventSpec, folds: dict[str, int],
                    alpha: float = DEFAULT_ALPHA) -> PointCalibration:
    """Fit on every fold but one, score that one: every run of ``runs`` (one point) gets a latency,
    or None for every run when any fold is uncalibrated (latencies from some folds only would be
    scored on part of the problems and read as the whole)."""
    point = runs[0].point if runs else "-"
    n_min = min_controls(alpha, len(event.candidates))
    fits = [fit_fold([r for r in runs if folds[r.problem_id] != fold], event, alpha, fold, n_min)
            for fold in range(n_folds_of(folds))]
    result = PointCalibration(event.name, point, alpha, len(event.candidates), fits)
    for run in runs:
        fit = fits[folds[run.problem_id]]
        key = (run.problem_id, run.condition)
        result.latencies[key] = fit.latency(event, run.curves[event.curve]) if result.calibrated else None
        result.observable[key] = observable(run, event, fit) if result.calibrated else None
    return result


#: The run's curve of KL(P_oracle || P_ignore) on its own tokens (``RunCurve.curves``, when recorded).
EXPECTED_GAIN = "kl_oracle_ignore"


def observable(run: RunCurve, event: EventSpec, fit: FoldFit) -> bool | None:
    """Could a perfect adapter fire this event on this run's tokens? None when unknown (records
    written before ``kl_oracle_ignore`` was recorded).

    A perfect adapter is P_oracle itself: its g(t) is exactly KL(P_oracle || P_ignore) at each
    token, and that is the expected value of its r(t) (the expected log-likelihood ratio). The
    event's statistic applied to that curve, with the run's own threshold and parameter, must
    exceed the threshold; for a CUSUM or cumulative sum (increments >= 0) that is: the sum over
    the horizon of KL(P_oracle || P_ignore) exceeds the threshold. Otherwise the run leaves "no
    observable difference": given its tokens, B versus A does not change the predictions enough
    for any run to show adaptation, and a censored latency there does not mean "did not adapt".
    """
    gain = run.curves.get(EXPECTED_GAIN)
    if gain is None:
        return None
    return not fit.latency(event, gain).censored


def event_rates(calibration: PointCalibration, runs: Sequence[RunCurve]) -> dict:
    """Held-out event counts: ``{"false": {kind: (k, n)}, "true": {condition: (k, n)}}``.

    A run has an event when its latency is not censored. ``false`` pools the fitted control kinds
    under ``"controls"`` and lists each kind (identical-problem runs included) on its own.
    """
    return latency_rates(calibration.latencies, runs)


def latency_rates(latencies: dict[tuple[str, str], Latency | None], runs: Sequence[RunCurve]) -> dict:
    """:func:`event_rates` of any (problem, condition) -> latency map (the lead event's too)."""
    false: dict[str, list[int]] = {}
    true: dict[str, list[int]] = {}
    for run in runs:
        latency = latencies.get((run.problem_id, run.condition))
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


def observability_counts(latencies: dict[tuple[str, str], Latency | None],
                         observable: dict[tuple[str, str], bool | None], runs: Sequence[RunCurve]) -> dict:
    """Per change condition: how many runs could show the event at all (``observable``) and how many
    of those did (``observable_events``), how many had no observable difference and how many of
    those fired anyway (``unobservable_events``: a run's r(t) exceeded its expectation), and how
    many are unknown (records without ``kl_oracle_ignore``)."""
    out: dict[str, dict[str, int]] = {}
    for run in runs:
        key = (run.problem_id, run.condition)
        latency = latencies.get(key)
        if not run.is_change or latency is None:
            continue
        entry = out.setdefault(run.condition, {"n": 0, "observable": 0, "observable_events": 0, "unobservable": 0,
                                               "unobservable_events": 0, "unknown": 0})
        entry["n"] += 1
        seen = observable.get(key)
        if seen is None:
            entry["unknown"] += 1
        elif seen:
            entry["observable"] += 1
            entry["observable_events"] += int(not latency.censored)
        else:
            entry["unobservable"] += 1
            entry["unobservable_events"] += int(not latency.censored)
    return dict(sorted(out.items()))


# ------------------------------------------------------------------------ the lead event

#: The positive control: flush recomputes B from t0 exactly, so after the change the run *is*
#: P_oracle; an event that rarely fires on it cannot say that another condition did not adapt.
POSITIVE_CONTROL = "flush"

#: The lead event, pre-registered: Page's CUSUM of r(t). Choosing the lead among all six events by
#: their flush rate on the fitting set, each at the full alpha, picked thresholds that were low by
#: chance there (the committed baseline's held-out false events rose to 6 of 90, 6.7% at alpha 5%),
#: as choosing windows without splitting alpha did; one pre-registered statistic keeps the rate at
#: alpha. The other events are still calibrated and reported beside it.
LEAD_CANDIDATES = ("cusum_latency",)


@dataclass
class LeadChoice:
    """The lead event for the runs of one fold, chosen on its fitting set (every other fold): among
    :data:`LEAD_CANDIDATES` (one, pre-registered), the calibrated event with the largest event rate
    on the fitting set's positive-control runs; ties: the larger rate on its change runs, then the
    order of :data:`EVENTS`. The rates of every calibrated event are kept for the report."""

    fold: int  # the fold whose runs this choice scores
    event: str | None
    flush_rates: dict[str, float]  # event -> event rate on the fitting set's flush runs
    change_rates: dict[str, float]  # event -> event rate on the fitting set's change runs


def choose_lead(results: dict[str, PointCalibration], runs: Sequence[RunCurve], folds: dict[str, int],
                fold: int) -> LeadChoice:
    """The lead event for the runs of ``fold`` at one point, from its fitting set's runs only (their
    controls set each event's threshold; their flush runs measure the power): the scored fold never
    influences which event it is scored with."""
    own = [run for run in runs if folds[run.problem_id] != fold and run.is_change]
    flush_rates, change_rates = {}, {}
    for event in EVENTS:
        result = results.get(event.name)
        if result is None or not result.calibrated:
            continue
        fit = result.fits[fold]
        fired = {(run.problem_id, run.condition): not fit.latency(event, run.curves[event.curve]).censored
                 for run in own}
        flush = [hit for (_, condition), hit in fired.items() if condition == POSITIVE_CONTROL]
        flush_rates[event.name] = float(np.mean(flush)) if flush else 0.0
        change_rates[event.name] = float(np.mean(list(fired.values()))) if fired else 0.0
    order = {event.name: index for index, event in enumerate(EVENTS)}
    candidates = [name for name in flush_rates if name in LEAD_CANDIDATES]
    best = max(candidates, key=lambda name: (flush_rates[name], change_rates[name], -order[name]), default=None)
    return LeadChoice(fold, best, flush_rates, change_rates)


def lead_latencies(results: dict[str, PointCalibration], choices: Sequence[LeadChoice], runs: Sequence[RunCurve],
                   folds: dict[str, int]) -> tuple[dict, dict, dict]:
    """Each run's latency and observability under the lead event its problem is scored with (the
    one chosen on its fold's fitting set), and the event's name: three maps keyed (problem, condition)."""
    latencies, observable, events = {}, {}, {}
    for run in runs:
        choice = choices[folds[run.problem_id]]
        key = (run.problem_id, run.condition)
        if choice.event is None or any(c.event is None for c in choices):
            latencies[key] = observable[key] = events[key] = None
            continue
        result = results[choice.event]
        latencies[key], observable[key], events[key] = (result.latencies.get(key), result.observable.get(key),
                                                        choice.event)
    return latencies, observable, events
