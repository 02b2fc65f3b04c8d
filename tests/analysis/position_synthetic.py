"""Synthetic records of a position sweep with a planted (or no) trend in "stale" and in the lead
event, the lead event already calibrated (its latency columns in the metrics row).

Imported by the position tests (pytest puts this folder on sys.path for them).
"""

from __future__ import annotations

import numpy as np

from measure.records.record import Record

POINTS = ("f0.1", "f0.3", "f0.5", "f0.7", "f0.9")
N_AFTER = 40  # tokens generated after every change


def _record(problem_id, condition, point, outcome, latency=None, censored=None, notes=None, gap=0.1,
            variation_type="single_number"):
    record = {"key": f"{problem_id}/{condition}/{point}", "problem_id": problem_id, "condition": condition,
              "point": point, "variation_type": variation_type,
              "metrics": {"outcome": outcome, "lead_latency": latency, "lead_latency_censored": censored,
                          "n_after": N_AFTER, "adaptation_gap": gap}}
    if notes is not None:
        record["notes_before_change"] = notes
    return Record.model_validate(record)


def sweep_records(n_problems=30, seed=0, stale_slope=0.0, event_slope=0.0, notes_effect=0.0,
                  conditions=("injection", "flush"), points=POINTS, problem_sd=0.5):
    """Per problem, an ignore (stale on A) and an oracle (right on B) record, and per condition and
    point a run whose log-odds of "stale" is ``-0.5 + stale_slope * position + notes_effect * notes
    + u`` (``u`` the problem's own effect, shared by its runs) and whose log-odds of an event
    within the run is ``0.5 + event_slope * position + u``. The notes flag is drawn with probability
    equal to the position (later changes find more already written), as in a real sweep."""
    rng = np.random.default_rng(seed)
    records = []
    for index in range(n_problems):
        problem_id = f"p{index:03d}"
        records.append(_record(problem_id, "ignore", "-", "stale"))
        records.append(_record(problem_id, "oracle", "-", "adapted"))
        effect = rng.normal(0, problem_sd)
        for condition in conditions:
            for point in points:
                position = float(point[1:])
                notes = bool(rng.random() < position)
                stale = rng.random() < 1 / (1 + np.exp(-(-0.5 + stale_slope * position + notes_effect * notes + effect)))
                event = rng.random() < 1 / (1 + np.exp(-(0.5 + event_slope * position - effect)))
                latency = int(rng.integers(1, 20)) if event else N_AFTER  # events within the horizon
                records.append(_record(problem_id, condition, point, "stale" if stale else "adapted", latency,
                                       not event, notes, gap=float(rng.normal(0.2, 0.05))))
    return records
