"""Calibrated latencies of a strategy run counted from its last update (measure.analysis.calibrated):
the same fold threshold as from the first update, so the same false-event bound."""

from __future__ import annotations

import numpy as np
from report_synthetic import synthetic_records

from measure.analysis.calibrated import calibrate_records
from measure.records.record import Update


def test_latency_since_the_last_update_uses_the_fold_threshold_from_the_first():
    records = synthetic_records(n_changed=40, n_identical=0)
    base = next(r for r in records if r.condition == "injection" and r.problem_id == "p000")
    t0 = base.t0
    n = len(base.arrays.logprob_ref["ignore"])
    last = t0 + 10
    ignore_lp = np.full(n, -1.0)
    oracle_lp = ignore_lp.copy()
    oracle_lp[last + 2:] += 5.0  # favours B strongly from the 3rd token after the last update on
    schedule = [Update(index=i, t=t, n_tokens=2, text="U", delivered=delivered)
                for i, (t, delivered) in enumerate(((t0, True), (last, True), (n + 3, False)))]
    arrays = base.arrays.model_copy(update={
        "logprob_ref": {"ignore": ignore_lp.tolist(), "oracle": oracle_lp.tolist(), "matched": oracle_lp.tolist()},
        "kl": {"ignore": [0.0] * n, "oracle": [0.0] * n, "matched": [0.0] * n}})
    strategy = base.model_copy(update={"key": f"p000/gradual/{base.point}", "condition": "gradual",
                                       "schedule": schedule, "arrays": arrays})
    columns, section = calibrate_records([*records, strategy])
    row = columns[strategy.key]
    assert section["events"]["detection_latency"]["points"][base.point]["calibrated"]
    assert row["detection_latency_since_last"] == 3 and row["detection_latency_since_last_censored"] is False
    assert row["detection_latency"] == last - t0 + 3  # the same event counted from the first update
    assert "detection_latency_since_last" not in columns[base.key]  # single-update runs have no such column
    # The since-last rule measured on held-out controls, cut at the strategies' last-update offset.
    since = section["events"]["detection_latency"]["points"][base.point]["false_event_rate_since_last"]
    controls = sum(1 for r in records if r.condition in ("noise", "repeat") and r.point == base.point) + 40
    assert since["offsets"] == [last - t0] and since["controls"]["n"] == controls
    first = section["events"]["detection_latency"]["points"][base.point]["false_event_rate"]["controls"]
    assert since["controls"]["k"] <= first["k"]  # a later stretch of the same curves fires no more often
