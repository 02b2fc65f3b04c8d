"""Control-calibrated events on synthetic per-token curves with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from measure.analysis import calibration as cal

N_AFTER = 40


def _run(pid, condition, curve, identical=False, point="t8"):
    curve = np.asarray(curve, dtype=float)
    return cal.RunCurve(pid, condition, point, identical, {"log_ratio": curve, "kl_gap": curve})


def _null(rng, n=N_AFTER):
    return rng.normal(0.0, 0.3, n)


def _planted_runs(rng, n_problems, switch, jump=3.0):
    """Controls are pure noise; change runs jump by ``jump`` from 1-based token ``switch`` on."""
    runs = []
    for i in range(n_problems):
        pid = f"p{i:03d}"
        for condition in cal.CONTROL_CONDITIONS:
            runs.append(_run(pid, condition, _null(rng)))
        planted = _null(rng)
        planted[switch - 1:] += jump
        planted[: switch - 1] = np.minimum(planted[: switch - 1], 0.0)  # nothing favours B before the switch
        runs.append(_run(pid, "injection", planted))
    return runs


def test_windowed_minima_and_event_latency_are_one_based():
    curve = [0.0, 2.0, 2.0, 0.5, 2.0, 2.0, 2.0]
    assert list(cal.windowed_minima(curve, 2)) == [0.0, 2.0, 0.5, 0.5, 2.0, 2.0]
    assert cal.event_latency(curve, 1, 1.0) == (2, False)
    assert cal.event_latency(curve, 3, 1.0) == (5, False)
    assert cal.event_latency(curve, 4, 1.0) == (7, True)  # never 4 in a row: censored at n
    assert cal.event_latency([np.nan, 5.0, 5.0], 2, 1.0) == (2, False)  # NaN never supports an event
    assert cal.run_score([1.0], 2) == -math.inf


def test_conformal_threshold_needs_enough_scores():
    scores = list(range(1, 20))  # 19 scores: rank ceil(20 * 0.95) = 19 exists
    assert cal.conformal_threshold(scores, 0.05) == 19
    assert cal.conformal_threshold(scores[:18], 0.05) is None
    assert cal.min_controls(0.05) == 19
    assert cal.min_controls(0.2) == 10
    assert cal.min_controls(0.05, 2) == 39  # two candidate windows: each fitted at alpha / 2


def test_planted_adaptation_is_recovered_at_its_token():
    rng = np.random.default_rng(1)
    switch = 12
    runs = _planted_runs(rng, 40, switch)
    folds = cal.assign_folds([(r.problem_id, r.identical) for r in runs], seed=0)
    for event in cal.EVENTS:
        result = cal.calibrate_point(runs, event, folds, alpha=0.05)
        assert result.calibrated, result.reason
        planted = [lat for (pid, cond), lat in result.latencies.items() if cond == "injection"]
        assert len(planted) == 40
        if event.sequential:  # a sum crosses once enough evidence has come: at the switch or within 2 tokens of it
            assert all(switch <= lat.value <= switch + 2 and not lat.censored for lat in planted), (event.name, planted)
        else:
            assert all(lat == (switch, False) for lat in planted), planted
        for fit in result.fits:
            assert fit.parameter in event.candidates
            assert fit.threshold < (3.0 if not event.sequential else 3.0 * 3)


def test_planted_nulls_fire_at_about_alpha_on_held_out_controls():
    """Many control-like runs: the held-out false-event rate lies in the binomial interval of alpha."""
    rng = np.random.default_rng(7)
    alpha = 0.05
    runs = [_run(f"p{i:04d}", condition, _null(rng)) for i in range(600) for condition in cal.CONTROL_CONDITIONS]
    folds = cal.assign_folds([(r.problem_id, False) for r in runs], seed=3)
    event = cal.EVENTS[0]
    result = cal.calibrate_point(runs, event, folds, alpha)
    k, n = cal.event_rates(result, runs)["false"]["controls"]
    assert n == 1800
    low, high = stats.binom.ppf([0.0005, 0.9995], n, alpha)  # 99.9% interval of Binomial(n, alpha)
    assert low <= k <= high, (k, n)
    # conformal guarantee holds from above: the rate is not far above alpha
    assert k / n <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / n)


def test_cross_fitting_never_scores_a_run_with_its_own_fold():
    rng = np.random.default_rng(2)
    runs = _planted_runs(rng, 30, 10)
    runs += [_run(f"c{i}", cond, np.zeros(N_AFTER), identical=True) for i in range(6) for cond in ("injection", "noise")]
    folds = cal.assign_folds([(r.problem_id, r.identical) for r in runs], seed=5)
    result = cal.calibrate_point(runs, cal.EVENTS[1], folds)
    controls = [r for r in runs if r.control_kind in cal.CONTROL_CONDITIONS]
    for fold, fit in enumerate(result.fits):
        # each fit rests on exactly the controls of the other folds
        assert fit.fold == fold and fit.n_controls == sum(folds[r.problem_id] != fold for r in controls)
    # a planted control run's curve raised sky-high moves the thresholds of the other folds only
    target = next(r for r in controls if r.problem_id == "p000")
    raised = [cal.RunCurve(r.problem_id, r.condition, r.point, r.identical, {"log_ratio": r.curves["log_ratio"] + 50,
                                                                            "kl_gap": r.curves["kl_gap"]})
              if r is target else r for r in runs]
    again = cal.calibrate_point(raised, cal.EVENTS[1], folds)
    assert again.fits[folds["p000"]].threshold == result.fits[folds["p000"]].threshold
    assert any(again.fits[f].threshold > result.fits[f].threshold for f in range(len(folds)) if f != folds["p000"])
    # changed and identical problems are each dealt round the ten folds
    changed = [folds[f"p{i:03d}"] for i in range(30)]
    identical = [folds[f"c{i}"] for i in range(6)]
    assert all(changed.count(fold) == 3 for fold in range(10))
    assert sorted(identical) == [0, 1, 2, 3, 4, 5]


def test_fold_assignment_ignores_record_order_and_depends_on_seed():
    problems = [(f"p{i}", i % 5 == 0) for i in range(20)]
    assert cal.assign_folds(problems, 0) == cal.assign_folds(list(reversed(problems)), 0)
    assert cal.assign_folds(problems, 0) != cal.assign_folds(problems, 1)


def test_too_few_controls_is_uncalibrated_with_a_reason():
    rng = np.random.default_rng(0)
    runs = _planted_runs(rng, 6, 5)  # 6 problems, 6 folds: 5 x 3 = 15 controls in each fitting set < 19
    folds = cal.assign_folds([(r.problem_id, False) for r in runs])
    result = cal.calibrate_point(runs, cal.EVENTS[0], folds)
    assert not result.calibrated and len(result.fits) == 6
    assert "15 in each fold's fitting set, at least 19 are needed" in result.reason
    assert all(lat is None for lat in result.latencies.values())


def test_content_free_insertions_do_not_fire_where_a_fixed_threshold_would():
    """The degenerate old definition (r > 0 for 3 tokens) fires on most noise runs; calibrated does not."""
    rng = np.random.default_rng(11)
    runs = [_run(f"p{i:03d}", c, np.abs(_null(rng)) * 0.2 + 0.01) for i in range(60) for c in cal.CONTROL_CONDITIONS]
    folds = cal.assign_folds([(r.problem_id, False) for r in runs])
    result = cal.calibrate_point(runs, cal.EVENTS[1], folds, 0.05)
    fixed = np.mean([cal.event_latency(r.curves["log_ratio"], 3, 0.0).censored is False for r in runs])
    k, n = cal.event_rates(result, runs)["false"]["controls"]
    assert fixed == 1.0
    assert k / n < 0.12


@pytest.mark.parametrize("identical", [True, False])
def test_identical_problem_runs_are_scored_but_not_fitted(identical):
    rng = np.random.default_rng(4)
    runs = _planted_runs(rng, 30, 6)
    runs += [_run(f"c{i}", "injection", np.zeros(N_AFTER), identical=identical) for i in range(10)]
    folds = cal.assign_folds([(r.problem_id, r.identical) for r in runs])
    result = cal.calibrate_point(runs, cal.EVENTS[0], folds)
    # only noise, repeat and ignore runs of changed problems are fitted on: 3 of each changed problem
    # outside the fold (30 changed problems, 3 per fold: 27 x 3)
    changed = {r.problem_id for r in runs if not r.identical and r.problem_id.startswith("p")}
    for fit in result.fits:
        assert fit.n_controls == 3 * sum(folds[p] != fit.fold for p in changed)
    if identical:
        assert all(fit.n_controls == 81 for fit in result.fits)  # changed problems dealt evenly
    rates = cal.event_rates(result, runs)
    if identical:
        assert rates["false"]["identical"] == (0, 10)
        assert rates["true"]["injection"][1] == 30
    else:
        assert rates["true"]["injection"][1] == 40


def test_thresholds_never_fall_below_zero():
    """Controls that all favour A would give a negative margin; identical problems (r = 0) must stay quiet."""
    rng = np.random.default_rng(9)
    runs = [_run(f"p{i:03d}", c, -np.abs(_null(rng)) - 0.5) for i in range(40) for c in cal.CONTROL_CONDITIONS]
    runs += [_run(f"c{i}", "injection", np.zeros(N_AFTER), identical=True) for i in range(10)]
    folds = cal.assign_folds([(r.problem_id, r.identical) for r in runs])
    result = cal.calibrate_point(runs, cal.EVENTS[1], folds)
    assert all(fit.threshold == 0.0 for fit in result.fits)
    assert cal.event_rates(result, runs)["false"]["identical"] == (0, 10)


def test_choosing_among_windows_keeps_the_false_event_rate_at_alpha():
    """The window is picked by events on the fitting fold; each window's threshold is fitted at
    alpha / windows, so the held-out rate stays within alpha whichever is picked."""
    rng = np.random.default_rng(21)
    alpha = 0.05
    runs = []
    for i in range(400):
        for condition in cal.CONTROL_CONDITIONS:
            runs.append(_run(f"p{i:04d}", condition, _null(rng)))
        planted = _null(rng)
        planted[10:] += 0.6  # a weak change: sensitivity differs between windows
        runs.append(_run(f"p{i:04d}", "injection", planted))
    folds = cal.assign_folds([(r.problem_id, False) for r in runs], seed=1)
    event = cal.EVENTS[1]
    assert cal.window_alpha(event, alpha) == alpha / len(event.windows)
    result = cal.calibrate_point(runs, event, folds, alpha)
    k, n = cal.event_rates(result, runs)["false"]["controls"]
    assert n == 1200
    assert k / n <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / n), (k, n)
