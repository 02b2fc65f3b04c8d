"""The ``strategies`` section of ``metrics.json`` and the report: injection strategies with several
updates in one generation (``multi``, ``multi_retract``, ``gradual``, ``gradual_stream``; any
record whose ``schedule`` is non-empty), with curves aligned at each update.

Per strategy condition (changed problems only, injection points pooled; identical-problem controls
are counted and left out, as in the findings, since they cannot adapt):

- how many runs, how many got every update, and per update how many runs ended before it
  (undelivered updates are counted and left out of that update's curves and gaps);
- per update i, mean curves aligned at that update: x = tokens since update i, so x = 1 is
  generated index ``schedule[i]["t"]`` (the record's per-token arrays are indexed by generated
  token, inserted tokens are not positions), and x <= 0 are the tokens before it. Curves:
  KL(run || P_matched) and r(t) = logprob_ref.oracle - logprob_ref.ignore (both references refer
  to the final problem). Per position the mean and, where at least :data:`MIN_CI_RUNS` runs reach
  it, a Student-t interval (a per-position bootstrap would cost more than the rest of the report;
  the gaps and latencies below carry the usual bootstrap and Kaplan-Meier intervals);
- per update the gap since it (mean KL to P_matched over the 20 tokens after it, as the adaptation
  gap), and from the metrics rows the adaptation gap since the first and since the last update;
- the calibrated latencies from the first update (``detection_latency``, ``adaptation_latency``,
  ``adaptation_latency_kl``) and from the last (``*_since_last``): Kaplan-Meier median with CI and
  the censoring count, and a sentence saying why there is no number where there is none.

Everything returned is JSON-safe (:func:`measure.analysis.stats.json_safe`).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats as sps

from measure.analysis import stats
from measure.metrics.divergence import log_ratio
from measure.metrics.latency import DEFAULT_GAP_TOKENS, adaptation_gap
from measure.records.curves import as_curve
from measure.records.record import Record
from measure.report.format import fmt, point_sort_key

STRATEGY_ORDER = ("multi", "multi_retract", "gradual", "gradual_stream")
DESCRIPTIONS = {
    "multi": ("Two corrections in one generation: the erratum A → B at the injection point, then the problem's "
              "chain update B → C a fixed number of generated tokens later. The final problem is C; problems "
              "without a chain are skipped."),
    "multi_retract": ("A correction and its retraction: the erratum A → B at the injection point, then, a fixed "
                      "number of generated tokens later, a retraction (\"ignore that correction, the original "
                      "problem stands\"). The final problem is A again."),
    "gradual": ("The erratum delivered in pieces: split on word boundaries into a few pieces, one piece every "
                "fixed number of generated tokens from the injection point on. The final problem is B."),
    "gradual_stream": ("The erratum streamed one token per generated token, as if the user were still typing "
                       "while the model answers. The final problem is B."),
}
#: The per-token curves aligned at each update: name -> label.
CURVES = {"kl_matched": "KL(run ‖ P_matched)", "log_ratio": "r(t) = log P_oracle − log P_ignore",
          "kl_ignore": "KL(run ‖ P_ignore)"}
#: Latency events from the first update and from the last (``*_since_last``).
LATENCIES = ("detection_latency", "adaptation_latency", "adaptation_latency_kl")
#: Positions after an update in the aligned curves, and tokens shown before it.
POSITIONS = 40
BEFORE = 8
#: Fewest runs at a position for an interval.
MIN_CI_RUNS = 3


def is_strategy_record(record: Record) -> bool:
    return bool(record.schedule)


def strategy_sort_key(name) -> tuple:
    name = str(name)
    return (STRATEGY_ORDER.index(name) if name in STRATEGY_ORDER else len(STRATEGY_ORDER), name)


def describe(condition: str, n_updates: int) -> str:
    return DESCRIPTIONS.get(condition, f"An injection strategy with a schedule of up to {n_updates} updates.")


# ------------------------------------------------------------------------ curves




def curve_values(record: Record, curve: str) -> np.ndarray:
    """A record's per-generated-token curve: ``kl_matched``, ``log_ratio`` or ``kl_ignore``; empty
    when missing."""
    if curve not in CURVES:
        raise ValueError(f"unknown strategy curve {curve!r}; expected one of {sorted(CURVES)}")
    if record.arrays is None:
        return np.array([])
    if curve in ("kl_matched", "kl_ignore"):
        return as_curve(record.arrays.kl.get(curve.removeprefix("kl_")))
    refs = record.arrays.logprob_ref  # log_ratio
    if refs.get("oracle") is None or refs.get("ignore") is None:
        return np.array([])
    return log_ratio(as_curve(refs["oracle"]), as_curve(refs["ignore"]))


def aligned(values: np.ndarray, t: int, before: int = BEFORE, positions: int = POSITIONS) -> np.ndarray:
    """``values`` around update position ``t``: ``(before + positions,)`` for x = 1 - before .. positions,
    where x = k is generated index ``t + k - 1``; NaN outside the run."""
    out = np.full(before + positions, np.nan)
    lo, hi = max(0, t - before), min(len(values), t + positions)
    if hi > lo:
        out[lo - (t - before): hi - (t - before)] = values[lo:hi]
    return out


def mean_interval(grid: np.ndarray, confidence: float = 0.95) -> dict:
    """Per column of ``(runs, positions)``: mean, Student-t interval (NaN below MIN_CI_RUNS runs), n."""
    n = np.sum(np.isfinite(grid), axis=0)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(grid, axis=0) if grid.size else np.full(grid.shape[1], np.nan)
        sd = np.nanstd(grid, axis=0, ddof=1) if grid.size else np.full(grid.shape[1], np.nan)
    half = sps.t.ppf(0.5 + confidence / 2, np.maximum(n - 1, 1)) * sd / np.sqrt(np.maximum(n, 1))
    half = np.where(n >= MIN_CI_RUNS, half, np.nan)
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "n": n}


# ------------------------------------------------------------------------ latencies


def _reason(calibration: dict | None, event: str, points: list[str]) -> str:
    entries = [((calibration or {}).get("events", {}).get(event) or {}).get("points", {}).get(p) for p in points]
    reasons = sorted({str(e.get("reason")) for e in entries if e and not e.get("calibrated") and e.get("reason")})
    if reasons:
        return "; ".join(reasons)
    if any(e and e.get("calibrated") for e in entries):
        return "the records carry no calibrated value for this latency"
    return "no calibration for these runs' injection points"


def latency_summary(runs: list[Record], name: str, calibration: dict | None, points: list[str]) -> dict:
    """Kaplan-Meier median of one latency over ``runs`` with its censoring count, and ``text``: the
    number to print, or a sentence saying why there is none."""
    values = [r.metrics.get(name) for r in runs]
    censored = [r.metrics.get(f"{name}_censored") for r in runs]
    pairs = [(v, c) for v, c in zip(values, censored)
             if isinstance(v, (int, float)) and math.isfinite(v) and c is not None]
    base = name.removesuffix("_since_last")
    if not pairs:
        return {"metric": name, "calibrated": False, "n": 0, "n_censored": 0, "estimate": None,
                "text": f"not calibrated: {_reason(calibration, base, points)}"}
    km = stats.km_median([v for v, _ in pairs], [bool(c) for _, c in pairs])
    out = {"metric": name, "calibrated": True, **km}
    cens = f"{km['n_censored']} of {km['n']} censored"
    if km["n_events"] == 0:
        horizon = max(v for v, _ in pairs)
        out["text"] = f"no run reached the event within {fmt(horizon)} tokens ({cens})"
    elif not km["median_reached"]:
        out["text"] = f"median not reached ({cens})"
    else:
        low, high = km.get("ci_low"), km.get("ci_high")
        ci = "" if low is None and high is None else f" [{fmt(low)}, {'open' if high is None else fmt(high)}]"
        unit = "token" if km["estimate"] == 1 else "tokens"
        out["text"] = f"{fmt(km['estimate'])} {unit}{ci} ({cens})"
    return out


def gap_summary(values, **kw) -> dict:
    """Mean gap with a bootstrap CI (:func:`measure.analysis.stats.mean_ci`) and a display text."""
    ci = stats.mean_ci([v for v in values if v is not None], **kw)
    if ci["estimate"] is None:
        text = "no tokens after the update in any run"
    elif ci["ci_low"] is None:
        text = f"{fmt(ci['estimate'])} nats (n={ci['n']})"
    else:
        text = f"{fmt(ci['estimate'])} nats [{fmt(ci['ci_low'])}, {fmt(ci['ci_high'])}] (n={ci['n']})"
    return {**ci, "text": text}


# ------------------------------------------------------------------------ section


def _update_entry(runs: list[Record], i: int, before: int, positions: int, confidence: float, kw: dict) -> dict:
    planned = [r for r in runs if len(r.schedule) > i]
    delivered = [r for r in planned if r.schedule[i].delivered]
    ts = [r.schedule[i].t for r in delivered]
    curves = {}
    for curve in CURVES:
        rows = [aligned(curve_values(r, curve), t, before, positions) for r, t in zip(delivered, ts)]
        grid = np.array(rows) if rows else np.empty((0, before + positions))
        curves[curve] = {"x": list(range(1 - before, positions + 1)), **mean_interval(grid, confidence)}
    gaps = [adaptation_gap(curve_values(r, "kl_matched"), t, DEFAULT_GAP_TOKENS) for r, t in zip(delivered, ts)]
    # The same window mean of KL(run || P_ignore): how far the update moves the run from the
    # unchanged problem (the one informative curve of a retraction, whose other references are A).
    departures = [adaptation_gap(curve_values(r, "kl_ignore"), t, DEFAULT_GAP_TOKENS) for r, t in zip(delivered, ts)]
    texts = sorted({r.schedule[i].text for r in delivered})
    offsets = {}  # median generated tokens from this update to the one before and after, where both arrived
    for name, j in (("previous", i - 1), ("next", i + 1)):
        both = [r.schedule[j].t - r.schedule[i].t for r in delivered
                if 0 <= j < len(r.schedule) and r.schedule[j].delivered]
        offsets[name] = float(np.median(both)) if both else None
    return {
        "index": i, "n_planned": len(planned), "n_delivered": len(delivered),
        "n_undelivered": len(planned) - len(delivered),
        "t_min": min(ts) if ts else None, "t_max": max(ts) if ts else None,
        "texts": texts[:3], "n_texts": len(texts), "offset_previous": offsets["previous"],
        "offset_next": offsets["next"],
        "gap_since": (gap_summary(gaps, confidence=confidence, **kw) if delivered
                      else {**stats.mean_ci([]), "text": "no run got this update"}),
        "kl_ignore_since": (gap_summary(departures, confidence=confidence, **kw) if delivered
                            else {**stats.mean_ci([]), "text": "no run got this update"}),
        "curves": curves,
    }


def strategy_entry(condition: str, runs: list[Record], calibration: dict | None = None, *, n_identical: int = 0,
                   before: int = BEFORE, positions: int = POSITIONS, confidence: float = 0.95,
                   n_resamples: int = stats.DEFAULT_RESAMPLES, seed: int = 0) -> dict:
    """The section entry of one strategy condition over its (changed-problem) runs, JSON-safe."""
    kw = {"n_resamples": n_resamples, "seed": seed}
    n_updates = max((len(r.schedule) for r in runs), default=0)
    points = sorted({r.point for r in runs}, key=point_sort_key)
    complete = sum(all(u.delivered for u in r.schedule) for r in runs)
    metric = [r.metrics for r in runs]
    return stats.json_safe({
        "condition": condition, "description": describe(condition, n_updates), "points": points,
        "n_runs": len(runs), "n_identical_left_out": n_identical, "n_updates": n_updates,
        "n_all_delivered": complete, "n_ended_before_an_update": len(runs) - complete,
        "final_problems": sorted({r.final_problem for r in runs if r.final_problem}),
        "updates": [_update_entry(runs, i, before, positions, confidence, kw) for i in range(n_updates)],
        "gap_first": gap_summary([m.get("adaptation_gap") for m in metric], confidence=confidence, **kw),
        "gap_last": gap_summary([m.get("adaptation_gap_since_last") for m in metric], confidence=confidence, **kw),
        "latencies": {name: latency_summary(runs, name, calibration, points)
                      for base in LATENCIES for name in (base, f"{base}_since_last")},
        "curve_interval": f"Student-t {confidence:.0%} where at least {MIN_CI_RUNS} runs reach the position",
    })


def strategies_section(records: list[Record], calibration: dict | None = None, **options) -> dict:
    """``{condition: entry}`` for every strategy condition among ``records`` (empty without any);
    ``options`` go to :func:`strategy_entry` (``confidence``, ``n_resamples``, ``seed``, ...)."""
    groups: dict[str, list[Record]] = {}
    identical: dict[str, int] = {}
    for record in records:
        if not is_strategy_record(record):
            continue
        condition = record.condition
        groups.setdefault(condition, [])
        if record.variation_type is None:
            identical[condition] = identical.get(condition, 0) + 1
        else:
            groups[condition].append(record)
    for runs in groups.values():  # a fixed order: records arrive in completion order
        runs.sort(key=lambda r: (r.problem_id, point_sort_key(r.point)))
    section = {
        condition: strategy_entry(condition, groups[condition], calibration, n_identical=identical.get(condition, 0),
                                  **options)
        for condition in sorted(groups, key=strategy_sort_key)
    }
    for entry in section.values():
        entry["noise_kl_ignore"] = noise_departure(records, set(entry["points"]), options)
    return section


def noise_departure(records: list[Record], points: set[str], options: dict) -> dict:
    """What any inserted text does: mean KL(run || P_ignore) over the 20 tokens after the change of
    the noise control (content-free text of the update's length) on changed problems at ``points``,
    the yardstick for how far an update moves a run from problem A."""
    values = [adaptation_gap(curve_values(r, "kl_ignore"), r.t0, DEFAULT_GAP_TOKENS) for r in records
              if r.condition == "noise" and r.variation_type is not None and r.point in points]
    kw = {k: options[k] for k in ("confidence", "n_resamples", "seed") if k in options}
    return stats.json_safe(gap_summary(values, **kw) if values else {**stats.mean_ci([]), "text": "no noise runs"})
