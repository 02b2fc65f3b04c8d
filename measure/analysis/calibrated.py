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
from measure.records.curves import as_curve
from measure.records.record import Record, as_records, with_metrics
from measure.records.samples import record_key


def _curves(record: Record, t0: int | None) -> dict[str, np.ndarray] | None:
    """The event curves of a record after ``t0``; None when the record lacks them (a record written
    by a measurement test may carry metrics only)."""
    arrays = record.arrays
    if arrays is None or t0 is None:
        return None
    logprob, kl = arrays.logprob_ref, arrays.kl
    if not ({"oracle", "ignore"} <= logprob.keys() and {"oracle", "ignore"} <= kl.keys()):
        return None
    curves = {
        "log_ratio": log_ratio(as_curve(logprob["oracle"]), as_curve(logprob["ignore"]))[t0:],
        "kl_gap": (as_curve(kl["ignore"]) - as_curve(kl["oracle"]))[t0:],
    }
    if arrays.kl_oracle_ignore is not None:  # the EXPECTED_GAIN curve; records written before it lack it
        curves[cal.EXPECTED_GAIN] = as_curve(arrays.kl_oracle_ignore)[t0:]
    return curves


def run_curves(records: list[Record]) -> dict[str, list[cal.RunCurve]]:
    """Point label -> the RunCurves of that point; each ignore run enters every point of its problem."""
    t0s: dict[tuple[str, str], int] = {}
    for record in records:
        if record.point != "-" and record.t0 is not None:
            t0s[(record.problem_id, record.point)] = record.t0
    by_point: dict[str, list[cal.RunCurve]] = defaultdict(list)
    ignores = {r.problem_id: r for r in records if r.condition == "ignore"}
    for record in records:
        if record.point == "-":
            continue
        curves = _curves(record, record.t0)
        if curves is not None:
            by_point[record.point].append(cal.RunCurve(record.problem_id, record.condition, record.point,
                                                       record.variation_type is None, curves))
    for (problem_id, point), t0 in sorted(t0s.items()):
        ignore = ignores.get(problem_id)
        curves = _curves(ignore, t0) if ignore else None
        if curves is not None:
            by_point[point].append(cal.RunCurve(problem_id, "ignore", point, ignore.variation_type is None, curves))
    return dict(sorted(by_point.items()))


SINCE_LAST = "_since_last"  # suffix of a strategy run's latencies measured from its last update


def last_update_t(record: Record) -> int | None:
    """Generated tokens before a strategy run's last delivered update (None for other runs)."""
    delivered = [update.t for update in record.schedule or [] if update.delivered]
    return delivered[-1] if delivered else None


def _since_last(record: Record, result: cal.PointCalibration, folds: dict[str, int], event: cal.EventSpec):
    """A strategy run's latency of ``event`` counted from its last update, with the threshold and
    window its problem is scored with at this point (fitted on the other folds' controls after
    the first update). A control's score is its largest windowed level anywhere after the point,
    so the later stretch is covered by the same false-event bound."""
    curves = _curves(record, last_update_t(record))
    if curves is None or not result.calibrated:
        return None
    fit = result.fits[folds[record.problem_id]]
    return fit.latency(event, curves[event.curve])


def _since_last_false_events(runs, result: cal.PointCalibration, folds: dict[str, int], event: cal.EventSpec,
                             scheduled: list[Record]) -> dict:
    """The since-last rule on held-out controls: each control run's curve cut where the strategies
    at this point had their last update (every offset from t0 that occurs), scored with the fit its
    problem is scored with. Measured, not only bounded by the from-first rate: how often the
    latency counted from a last update fires where nothing about the problem changed."""
    offsets = sorted({last_update_t(record) - record.t0 for record in scheduled})
    hits = []
    for run in runs:
        if run.control_kind not in cal.CONTROL_CONDITIONS:
            continue
        fit = result.fits[folds[run.problem_id]]
        for offset in offsets:
            hits.append(not fit.latency(event, run.curves[event.curve][offset:]).censored)
    return {"offsets": offsets, "controls": rate_ci(hits),
            "note": ("each held-out control run counted once per offset; one run's cuts are correlated, so the "
                     "interval is narrower than for as many independent runs")}


def _rates(counts: dict[str, tuple[int, int]]) -> dict[str, dict]:
    return {name: rate_ci([True] * k + [False] * (n - k)) for name, (k, n) in sorted(counts.items())}


def _share_of_flush(event_rate: dict[str, dict]) -> dict[str, float | None]:
    """Each change condition's event rate as a share of the positive control's."""
    flush = (event_rate.get(cal.POSITIVE_CONTROL) or {}).get("estimate")
    return {condition: (None if not flush or entry.get("estimate") is None else entry["estimate"] / flush)
            for condition, entry in event_rate.items()}


def _point_entry(latencies: dict, observable: dict, runs) -> dict:
    """Held-out false-event rates (pooled and per control kind), event rates of the change
    conditions with their share of flush's, and the observability counts."""
    rates = cal.latency_rates(latencies, runs)
    event_rate = _rates(rates["true"])
    return {"false_event_rate": _rates(rates["false"]), "event_rate": event_rate,
            "share_of_flush": _share_of_flush(event_rate),
            "observability": cal.observability_counts(latencies, observable, runs)}


#: The record columns of the lead event (:func:`lead_latencies` returns them per record).
LEAD = "lead_latency"
LEAD_COLUMNS = (LEAD, f"{LEAD}_censored", "lead_fired", "lead_observable", "lead_event")
OBSERVABILITY = "observability"  # per record: sum over the horizon of KL(P_oracle || P_ignore), nats

LEAD_RULE = ("per injection point and fold, the calibrated candidate event with the largest event rate on the "
             "flush runs of the fold's fitting set (every other fold; flush is the positive control; ties: the "
             "larger rate on its injection, flush and partial runs, then the order of the events), applied to the "
             "fold's runs: chosen on the fitting set only, so the held-out false-event rate measures the choice too")


def _observability(record: Record) -> float | None:
    """Sum over the tokens after the change of KL(P_oracle || P_ignore) (the EXPECTED_GAIN curve)
    on the run's own tokens."""
    values = None if record.arrays is None else record.arrays.kl_oracle_ignore
    if values is None or record.t0 is None:
        return None
    return float(np.nansum(as_curve(values)[record.t0:]))


def _lead_columns(latency, observable, event, identical: bool) -> dict:
    if latency is None:
        return {name: None for name in LEAD_COLUMNS}
    return {**latency.as_dict(LEAD), "lead_fired": None if identical else not latency.censored,
            "lead_observable": None if identical else observable, "lead_event": event}


def calibrate_records(records: list[Record], alpha: float = cal.DEFAULT_ALPHA, seed: int = 0
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
            scheduled[record.point].append(record)
    results: dict[str, dict[str, cal.PointCalibration]] = defaultdict(dict)  # point -> event -> calibration
    for event in cal.EVENTS:
        per_point = {}
        for point, runs in by_point.items():
            result = cal.calibrate_point(runs, event, folds, alpha)
            results[point][event.name] = result
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
                columns[record.key].update({name: None, f"{name}_censored": None} if since is None
                                              else since.as_dict(name))
            per_point[point] = {
                "calibrated": result.calibrated,
                "reason": result.reason,
                "folds": [{"scores_fold": fit.fold, "n_controls": fit.n_controls,
                           "window": fit.window, "drift": fit.drift, "threshold": fit.threshold,
                           "fit_event_rate": fit.fit_event_rate} for fit in result.fits],
                **_point_entry(result.latencies, result.observable, runs),
            }
            if scheduled.get(point) and result.calibrated:
                per_point[point]["false_event_rate_since_last"] = _since_last_false_events(
                    runs, result, folds, event, scheduled[point])
        events[event.name] = {"curve": event.curve, "statistic": event.statistic, "windows": list(event.windows),
                              "drifts": list(event.drifts) if event.statistic == cal.CUSUM else [],
                              "sequential": event.sequential,
                              "window_alpha": cal.window_alpha(event, alpha),
                              "min_controls": cal.min_controls(alpha, len(event.candidates)),
                              "description": event.description, "points": per_point}
    lead_points = {}
    for point, runs in by_point.items():
        choices = [cal.choose_lead(results[point], runs, folds, fold) for fold in range(cal.n_folds_of(folds))]
        latencies, observable, chosen = cal.lead_latencies(results[point], choices, runs, folds)
        identical = {run.problem_id: run.identical for run in runs}
        for (problem_id, condition), latency in latencies.items():
            if condition != "ignore":
                columns[record_key(problem_id, condition, point)].update(_lead_columns(
                    latency, observable[(problem_id, condition)], chosen[(problem_id, condition)],
                    identical[problem_id]))
        calibrated = all(choice.event is not None for choice in choices)
        lead_events = sorted({choice.event for choice in choices if choice.event})
        lead_points[point] = {
            "calibrated": calibrated,
            "reason": None if calibrated else "no event is calibrated on every fold at this point",
            "events": lead_events,
            "folds": [{"scores_fold": c.fold, "event": c.event,
                       "flush_event_rate": c.flush_rates, "change_event_rate": c.change_rates} for c in choices],
            **_point_entry(latencies, observable, runs),
        }
    section = {
        "alpha": alpha,
        "seed": seed,
        "min_controls": max(cal.min_controls(alpha, len(event.candidates)) for event in cal.EVENTS),
        "control_conditions": list(cal.CONTROL_CONDITIONS),
        "change_conditions": list(cal.CHANGE_CONDITIONS),
        "positive_control": cal.POSITIVE_CONTROL,
        "method": ("per injection point, the conformal (1 - alpha / candidates) quantile of the control runs' "
                   "scores (the largest w-token-in-a-row level of the event curve, or the largest value of its "
                   "CUSUM or cumulative sum), never below 0; cross-fitted over folds of problems: each fold's runs are "
                   "scored with parameters fitted on every other fold's runs"),
        "n_folds": cal.n_folds_of(folds),
        "folds": dict(sorted(folds.items())),
        "events": events,
        "lead": {"name": LEAD, "columns": list(LEAD_COLUMNS), "candidates": list(cal.EVENT_NAMES), "rule": LEAD_RULE,
                 "observability": ("a run has no observable difference for an event when the event's statistic on "
                                   "its per-token KL(P_oracle || P_ignore) (a perfect adapter's g(t), the expected "
                                   "value of its r(t)) stays at or below the threshold it is scored with; for a CUSUM "
                                   "or cumulative sum: when the sum of KL(P_oracle || P_ignore) over the horizon does"),
                 "points": lead_points},
    }
    return dict(columns), section


def lead_latencies(records: list[Record] | list[dict], alpha: float = cal.DEFAULT_ALPHA, seed: int = 0) -> dict[str, dict]:
    """For each record of an injection point (by record key): the lead event's ``latency`` (tokens
    after the change, 1-based), ``censored`` (the event never came within the run's tokens),
    ``event`` (the calibrated event its problem is scored with, chosen on its fold's fitting set) and
    ``observable`` (a perfect adapter could fire it on the run's tokens; None when unknown); all
    None where the lead is uncalibrated. Calibrated as ``measure report`` does at ``alpha`` and
    ``seed``; this signature is stable (other analyses build on it)."""
    columns, _ = calibrate_records(as_records(records), alpha, seed)
    return {key: {"latency": row.get(LEAD), "censored": row.get(f"{LEAD}_censored"), "event": row.get("lead_event"),
                  "observable": row.get("lead_observable")}
            for key, row in columns.items() if LEAD in row}


def calibrated_records(records: list[Record], alpha: float = cal.DEFAULT_ALPHA, seed: int = 0
                       ) -> tuple[list[Record], dict]:
    """Copies of ``records`` whose metrics carry the calibrated latencies (replacing any a record
    brought itself: records written before calibration existed carried fixed-threshold ones), the
    lead event's columns and the run's observability, and the calibration section."""
    columns, section = calibrate_records(records, alpha, seed)
    blank = {name: None for event in cal.EVENT_NAMES for name in (event, f"{event}_censored")}
    blank.update({name: None for name in (*LEAD_COLUMNS, OBSERVABILITY)})
    blank_since = {name: None for event in cal.EVENT_NAMES
                   for name in (event + SINCE_LAST, f"{event}{SINCE_LAST}_censored")}
    out = []
    for record in records:
        metrics = {k: v for k, v in record.metrics.items() if k not in blank and k not in blank_since}
        if record.point != "-":
            metrics.update(blank)
            metrics[OBSERVABILITY] = _observability(record)
            if last_update_t(record) is not None:
                metrics.update(blank_since)
            metrics.update(columns.get(record.key, {}))
        out.append(with_metrics(record, metrics))
    return out, section
