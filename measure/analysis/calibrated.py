"""Calibrated latencies of a run's records: the bridge from sample records to
:mod:`measure.analysis.calibration`.

:func:`calibrate_records` reads each record's per-token curves, fits every event of
:data:`measure.analysis.calibration.EVENTS` per injection point with cross-fitting, and returns the
latency columns to add to each record's metrics row plus the ``calibration`` section of
``metrics.json``: alpha, the fold assignment, and per event and point the fitted window and
threshold of each fold, how many control runs they rest on, the held-out false-event rate on
controls (pooled and per control kind) and the event rate on change runs (sensitivity), each
with a Wilson interval; or, when a point has too few controls, ``calibrated: false`` and why.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from measure.analysis import calibration as cal
from measure.analysis.stats import rate_ci
from measure.metrics.divergence import log_ratio
from measure.records.samples import record_key


def _array(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in (values or [])], dtype=np.float64)


def _curves(record: dict, t0: int | None) -> dict[str, np.ndarray] | None:
    """The event curves of a record after ``t0``; None when the record lacks them (a record written
    by a measurement test may carry metrics only)."""
    arrays = record.get("arrays") or {}
    logprob, kl = arrays.get("logprob_ref") or {}, arrays.get("kl") or {}
    if t0 is None or not ({"oracle", "ignore"} <= logprob.keys() and {"oracle", "ignore"} <= kl.keys()):
        return None
    return {
        "log_ratio": log_ratio(_array(logprob["oracle"]), _array(logprob["ignore"]))[t0:],
        "kl_gap": (_array(kl["ignore"]) - _array(kl["oracle"]))[t0:],
    }


def run_curves(records: list[dict]) -> dict[str, list[cal.RunCurve]]:
    """Point label -> the RunCurves of that point; each ignore run enters every point of its problem."""
    t0s: dict[tuple[str, str], int] = {}
    for record in records:
        if record.get("point") not in (None, "-") and record.get("t0") is not None:
            t0s[(record["problem_id"], record["point"])] = int(record["t0"])
    by_point: dict[str, list[cal.RunCurve]] = defaultdict(list)
    ignores = {r["problem_id"]: r for r in records if r.get("condition") == "ignore"}
    for record in records:
        point = record.get("point")
        if point in (None, "-"):
            continue
        curves = _curves(record, record.get("t0"))
        if curves is not None:
            by_point[point].append(cal.RunCurve(record["problem_id"], record["condition"], point,
                                                record.get("variation_type") is None, curves))
    for (problem_id, point), t0 in sorted(t0s.items()):
        ignore = ignores.get(problem_id)
        curves = _curves(ignore, t0) if ignore else None
        if curves is not None:
            by_point[point].append(cal.RunCurve(problem_id, "ignore", point,
                                                ignore.get("variation_type") is None, curves))
    return dict(sorted(by_point.items()))


SINCE_LAST = "_since_last"  # suffix of a strategy run's latencies measured from its last update


def last_update_t(record: dict) -> int | None:
    """Generated tokens before a strategy run's last delivered update (None for other runs)."""
    delivered = [update["t"] for update in record.get("schedule") or [] if update.get("delivered")]
    return delivered[-1] if delivered else None


def _since_last(record: dict, result: cal.PointCalibration, folds: dict[str, int], event: cal.EventSpec):
    """A strategy run's latency of ``event`` counted from its last update, with the threshold and
    window its problem is scored with at this point (fitted on the other fold's controls after
    the first update). A control's score is its largest windowed level anywhere after the point,
    so the later stretch is covered by the same false-event bound."""
    curves = _curves(record, last_update_t(record))
    if curves is None or not result.calibrated:
        return None
    fit = result.fits[1 - folds[record["problem_id"]]]
    return cal.event_latency(curves[event.curve], fit.window, fit.threshold)


def _since_last_false_events(runs, result: cal.PointCalibration, folds: dict[str, int], event: cal.EventSpec,
                             scheduled: list[dict]) -> dict:
    """The since-last rule on held-out controls: each control run's curve cut where the strategies
    at this point had their last update (every offset from t0 that occurs), scored with the fit its
    problem is scored with. Measured, not only bounded by the from-first rate: how often the
    latency counted from a last update fires where nothing about the problem changed."""
    offsets = sorted({last_update_t(record) - int(record["t0"]) for record in scheduled})
    hits = []
    for run in runs:
        if run.control_kind not in cal.CONTROL_CONDITIONS:
            continue
        fit = result.fits[1 - folds[run.problem_id]]
        for offset in offsets:
            hits.append(not cal.event_latency(run.curves[event.curve][offset:], fit.window, fit.threshold).censored)
    return {"offsets": offsets, "controls": rate_ci(hits),
            "note": ("each held-out control run counted once per offset; one run's cuts are correlated, so the "
                     "interval is narrower than for as many independent runs")}


def _rates(counts: dict[str, tuple[int, int]]) -> dict[str, dict]:
    return {name: rate_ci([True] * k + [False] * (n - k)) for name, (k, n) in sorted(counts.items())}


def calibrate_records(records: list[dict], alpha: float = cal.DEFAULT_ALPHA, seed: int = 0
                      ) -> tuple[dict[str, dict], dict]:
    """``({record key: latency columns}, calibration section)`` for the records of one run."""
    by_point = run_curves(records)
    problems = [(run.problem_id, run.identical) for runs in by_point.values() for run in runs]
    folds = cal.assign_folds(problems, seed)
    columns: dict[str, dict] = defaultdict(dict)
    events: dict[str, dict] = {}
    scheduled = defaultdict(list)
    for record in records:
        if last_update_t(record) is not None:
            scheduled[record["point"]].append(record)
    for event in cal.EVENTS:
        per_point = {}
        for point, runs in by_point.items():
            result = cal.calibrate_point(runs, event, folds, alpha)
            for (problem_id, condition), latency in result.latencies.items():
                if condition == "ignore":
                    continue  # the ignore record (point "-") is a control here, not a row of this point
                key = record_key(problem_id, condition, point)
                if latency is None:
                    columns[key].update({event.name: None, f"{event.name}_censored": None})
                else:
                    columns[key].update(latency.as_dict(event.name))
            for record in scheduled.get(point, []):
                since = _since_last(record, result, folds, event)
                name = event.name + SINCE_LAST
                columns[record["key"]].update({name: None, f"{name}_censored": None} if since is None
                                              else since.as_dict(name))
            rates = cal.event_rates(result, runs)
            per_point[point] = {
                "calibrated": result.calibrated,
                "reason": result.reason,
                "folds": [{"fit_fold": fit.fit_fold, "scores_fold": 1 - fit.fit_fold, "n_controls": fit.n_controls,
                           "window": fit.window, "threshold": fit.threshold,
                           "fit_event_rate": fit.fit_event_rate} for fit in result.fits],
                "false_event_rate": _rates(rates["false"]),
                "event_rate": _rates(rates["true"]),
            }
            if scheduled.get(point) and result.calibrated:
                per_point[point]["false_event_rate_since_last"] = _since_last_false_events(
                    runs, result, folds, event, scheduled[point])
        events[event.name] = {"curve": event.curve, "windows": list(event.windows),
                              "window_alpha": cal.window_alpha(event, alpha),
                              "min_controls": cal.min_controls(alpha, len(event.windows)),
                              "description": event.description, "points": per_point}
    section = {
        "alpha": alpha,
        "seed": seed,
        "min_controls": max(cal.min_controls(alpha, len(event.windows)) for event in cal.EVENTS),
        "control_conditions": list(cal.CONTROL_CONDITIONS),
        "change_conditions": list(cal.CHANGE_CONDITIONS),
        "method": ("per injection point, the conformal (1 - alpha / windows) quantile of the control runs' "
                   "largest w-token-in-a-row level of the event curve, never below 0; cross-fitted over two "
                   "folds of problems"),
        "folds": dict(sorted(folds.items())),
        "events": events,
    }
    return dict(columns), section


def calibrated_records(records: list[dict], alpha: float = cal.DEFAULT_ALPHA, seed: int = 0
                       ) -> tuple[list[dict], dict]:
    """Copies of ``records`` whose metrics carry the calibrated latencies (replacing any a record
    brought itself: records written before calibration existed carried fixed-threshold ones), and
    the calibration section."""
    columns, section = calibrate_records(records, alpha, seed)
    blank = {name: None for event in cal.EVENT_NAMES for name in (event, f"{event}_censored")}
    blank_since = {name: None for event in cal.EVENT_NAMES
                   for name in (event + SINCE_LAST, f"{event}{SINCE_LAST}_censored")}
    out = []
    for record in records:
        metrics = {k: v for k, v in (record.get("metrics") or {}).items() if k not in blank and k not in blank_since}
        if record.get("point") not in (None, "-"):
            metrics.update(blank)
            if last_update_t(record) is not None:
                metrics.update(blank_since)
            metrics.update(columns.get(record.get("key"), {}))
        out.append({**record, "metrics": metrics})
    return out, section
