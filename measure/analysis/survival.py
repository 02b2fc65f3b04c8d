"""Survival summaries of right-censored latencies: numbers that exist when fewer than half adapt.

A Kaplan-Meier median is "not reached" whenever most runs are censored, which on the embedded
model is the usual case; these summaries give "how many tokens" anyway:

- the cumulative incidence of the event by k tokens after the change, 1 - S(k), for k in
  :data:`INCIDENCE_TOKENS` (None beyond the horizon: the runs were not followed that far);
- the restricted mean time to the event up to the horizon tau (the token budget after the
  change), the area under S(t) on [0, tau]: a run that never adapts contributes tau, one that
  adapts at k contributes k; with a percentile bootstrap CI resampled by problem;
- the Kaplan-Meier median where it is reached (:func:`measure.analysis.stats.km_median`).

Point estimates come from lifelines (``KaplanMeierFitter``, ``restricted_mean_survival_time``).
The bootstrap refits the Kaplan-Meier curve thousands of times per condition, which lifelines
does at several milliseconds a fit; :func:`km_rmst` is the same estimator in a few numpy lines
(a test holds it equal to lifelines').
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from lifelines import KaplanMeierFitter
from lifelines.utils import restricted_mean_survival_time

from measure.analysis.stats import DEFAULT_RESAMPLES, json_safe, km_median

INCIDENCE_TOKENS = (4, 8, 16, 32)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def km_rmst(durations: np.ndarray, events: np.ndarray, horizon: float) -> float:
    """Area under the Kaplan-Meier survival curve on [0, horizon] (``durations`` > 0; ``events``
    True where the event was seen, False where censored)."""
    times = np.unique(durations[events & (durations <= horizon)])
    if times.size == 0:
        return float(horizon)
    at_risk = (durations[None, :] >= times[:, None]).sum(axis=1)
    deaths = ((durations[None, :] == times[:, None]) & events[None, :]).sum(axis=1)
    surv = np.cumprod(1.0 - deaths / at_risk)
    edges = np.concatenate([[0.0], times, [horizon]])
    return float(np.sum(np.concatenate([[1.0], surv]) * np.diff(edges)))


def survival_summary(durations, events, horizon: float, problems=None, *, confidence: float = 0.95,
                     n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict:
    """Cumulative incidence by :data:`INCIDENCE_TOKENS`, restricted mean time to the event up to
    ``horizon`` with a bootstrap CI, and the Kaplan-Meier median, of one group's latencies.

    ``durations``: latencies (censoring times where the event was not seen); ``events``: True where
    it was seen; rows where either is missing are dropped. ``problems``: each row's problem id;
    the bootstrap draws problems with replacement and takes all of a drawn problem's rows (one
    row per problem in a condition x point group: then it draws rows).
    """
    events = list(events)
    d = np.asarray([np.nan if _missing(v) else v for v in durations], dtype=np.float64)
    keep = np.isfinite(d) & ~np.array([_missing(v) for v in events], dtype=bool)
    e = np.array([bool(v) for v, kept in zip(events, keep) if kept], dtype=bool)
    d = d[keep]
    ids = np.asarray(list(problems), dtype=object)[keep] if problems is not None else np.arange(d.size)
    out = {"n": int(d.size), "n_events": int(e.sum()), "horizon": float(horizon),
           "incidence": {str(k): None for k in INCIDENCE_TOKENS},
           "rmst": {"estimate": None, "ci_low": None, "ci_high": None, "n_resamples": n_resamples},
           "median": km_median(d, ~e, confidence)}
    if d.size == 0:
        return json_safe(out)
    fitter = KaplanMeierFitter().fit(d, e)
    within = [k for k in INCIDENCE_TOKENS if k <= horizon]
    if within:
        incidence = fitter.cumulative_density_at_times(within).to_numpy()
        out["incidence"].update({str(k): float(value) for k, value in zip(within, incidence)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out["rmst"]["estimate"] = float(restricted_mean_survival_time(fitter, t=horizon))
    if d.size >= 2:
        unique = np.unique(ids)
        rows_of = {pid: np.flatnonzero(ids == pid) for pid in unique}
        one_row_each = unique.size == d.size  # then row j is problem unique[j]'s only row
        if one_row_each:
            order = np.argsort(ids, kind="stable")
            d, e = d[order], e[order]
        rng = np.random.default_rng(seed)
        draws = np.empty(n_resamples)
        for i in range(n_resamples):
            drawn = rng.integers(0, unique.size, unique.size)
            picked = drawn if one_row_each else np.concatenate([rows_of[unique[j]] for j in drawn])
            draws[i] = km_rmst(d[picked], e[picked], horizon)
        tail = (1 - confidence) / 2
        out["rmst"]["ci_low"], out["rmst"]["ci_high"] = (float(v) for v in np.quantile(draws, [tail, 1 - tail]))
    return json_safe(out)
