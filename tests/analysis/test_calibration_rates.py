"""event_rates: which held-out runs count toward which rate.

The headline false-event rate is the ``"controls"`` entry: the fitted control kinds (noise, repeat,
ignore on changed problems) only. Identical-problem runs are never fitted on and sit at r = 0, so
pooling them in would dilute the rate; they have their own ``"identical"`` entry.
"""

from __future__ import annotations

import numpy as np

from measure.analysis import calibration as cal

N_AFTER = 30


def _run(pid, condition, curve, identical=False):
    curve = np.asarray(curve, dtype=float)
    return cal.RunCurve(pid, condition, "t8", identical, {"log_ratio": curve, "kl_gap": curve})


def _runs():
    rng = np.random.default_rng(7)
    runs = []
    for i in range(40):
        for condition in cal.CONTROL_CONDITIONS:
            runs.append(_run(f"p{i:03d}", condition, rng.normal(0.0, 0.3, N_AFTER)))
        runs.append(_run(f"p{i:03d}", "injection", np.r_[np.zeros(5), np.full(N_AFTER - 5, 4.0)]))
    for i in range(12):  # identical problems: every condition at exactly 0
        for condition in (*cal.CONTROL_CONDITIONS, "injection", "flush"):
            runs.append(_run(f"c{i:03d}", condition, np.zeros(N_AFTER), identical=True))
    return runs


def _counted_by_hand(result, runs):
    """Held-out events per kind, counted from the latencies without event_rates."""
    counts = {}
    for run in runs:
        latency = result.latencies[(run.problem_id, run.condition)]
        kind = "identical" if run.identical else run.condition
        k, n = counts.get(kind, (0, 0))
        counts[kind] = (k + int(not latency.censored), n + 1)
    return counts


def test_the_pooled_control_rate_counts_only_the_fitted_control_kinds():
    runs = _runs()
    folds = cal.assign_folds([(r.problem_id, r.identical) for r in runs])
    result = cal.calibrate_point(runs, cal.EVENTS[0], folds)
    assert result.calibrated
    rates = cal.event_rates(result, runs)
    by_hand = _counted_by_hand(result, runs)
    pooled = tuple(map(sum, zip(*(by_hand[kind] for kind in cal.CONTROL_CONDITIONS))))
    assert rates["false"]["controls"] == pooled
    assert rates["false"]["controls"][1] == 40 * 3  # not 40 * 3 + the 12 * 5 identical runs
    assert rates["false"]["identical"] == by_hand["identical"] == (0, 12 * 5)
    for kind in cal.CONTROL_CONDITIONS:
        assert rates["false"][kind] == by_hand[kind]
    # Changed problems' change runs give the sensitivity; identical ones never enter it.
    assert rates["true"] == {"injection": by_hand["injection"]} and by_hand["injection"] == (40, 40)


def test_some_controls_fire_so_pooling_in_zeros_would_change_the_rate():
    """The check above can fail: the fitted controls do fire at about alpha, so adding the 60
    identical runs (which never fire) would lower the pooled rate, not just its denominator."""
    runs = _runs()
    folds = cal.assign_folds([(r.problem_id, r.identical) for r in runs])
    k, n = cal.event_rates(cal.calibrate_point(runs, cal.EVENTS[0], folds), runs)["false"]["controls"]
    assert k > 0 and k / n != k / (n + 60)
