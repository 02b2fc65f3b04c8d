"""What each fold's fit is made of (found by mutation testing, docs/testing.md): the thresholds that
score a run come from the other fold's controls, computed here by hand; the number of controls
needed; windows chosen by event rate, ties to the smaller; the labels the report reads."""

from __future__ import annotations

import math

import numpy as np

from measure.analysis import calibration as cal

N_AFTER = 20


def _run(pid, condition, curve, identical=False, point="t8"):
    curve = np.asarray(curve, dtype=float)
    return cal.RunCurve(pid, condition, point, identical, {"log_ratio": curve, "kl_gap": curve})


def _noise_runs(n_problems, seed=3, change=None):
    rng = np.random.default_rng(seed)
    runs = []
    for i in range(n_problems):
        for condition in cal.CONTROL_CONDITIONS:
            runs.append(_run(f"p{i:03d}", condition, rng.normal(0.0, 0.3, N_AFTER)))
        if change is not None:
            runs.append(_run(f"p{i:03d}", "injection", change(rng)))
    return runs


def _folds(runs):
    return cal.assign_folds([(r.problem_id, r.identical) for r in runs])


def test_each_run_is_scored_with_the_threshold_of_the_other_folds_controls():
    runs = _noise_runs(40)
    folds = _folds(runs)
    event = cal.EVENTS[0]
    result = cal.calibrate_point(runs, event, folds)
    assert len(result.fits) == cal.N_FOLDS == 10
    thresholds = set()
    for fold in range(cal.N_FOLDS):
        scores = [cal.run_score(r.curves["log_ratio"], 1) for r in runs if folds[r.problem_id] != fold]
        by_hand = max(cal.conformal_threshold(scores, cal.window_alpha(event, 0.05)), 0.0)
        assert result.fits[fold].threshold == by_hand and result.fits[fold].fold == fold
        assert result.fits[fold].n_controls == len(scores) == 108  # 36 of the 40 problems, 3 controls each
        thresholds.add(by_hand)
    assert len(thresholds) > 1  # the folds' fitting sets differ, and so do some thresholds
    for run in runs:
        own = folds[run.problem_id]
        assert result.latencies[(run.problem_id, run.condition)] == cal.event_latency(
            run.curves["log_ratio"], 1, result.fits[own].threshold)
    assert result.point == "t8" and result.event == event.name and result.n_windows == 1


def test_exactly_the_needed_number_of_controls_calibrates():
    event = cal.EVENTS[1]  # two windows: each fitted at alpha / 2, 39 controls per fitting set needed
    assert cal.min_controls(0.05, 2) == 39
    runs = [_run(f"p{i:03d}", "noise", np.random.default_rng(i).normal(0, 0.3, N_AFTER)) for i in range(78)]
    folds = {f"p{i:03d}": i % 2 for i in range(78)}  # two folds: each fitting set is the other fold
    result = cal.calibrate_point(runs, event, folds)
    assert [fit.n_controls for fit in result.fits] == [39, 39] and result.calibrated
    fewer = cal.calibrate_point(runs[:-2], event, folds)  # 38 in fold 0 and 38 in fold 1
    assert not fewer.calibrated
    assert fewer.fits[0].reason == "38 control runs outside fold 0"
    assert fewer.fits[1].reason == "38 control runs outside fold 1"
    assert "38 in each fold's fitting set, at least 39" in fewer.reason and "over 2 candidates" in fewer.reason


def test_controls_too_short_for_any_window_give_no_finite_threshold():
    runs = [_run(f"p{i:03d}", "noise", [0.1]) for i in range(80)]  # one token: no window of 2 or 4
    folds = {f"p{i:03d}": i % 2 for i in range(80)}
    result = cal.calibrate_point(runs, cal.EVENTS[1], folds)
    assert not result.calibrated
    assert result.fits[0].reason == "no finite threshold from the 40 control runs outside fold 0"
    assert result.reason.startswith("no finite threshold from the 40 control runs outside fold 0; ")


def test_the_window_with_more_events_on_the_fitting_fold_is_chosen_ties_the_smaller():
    def alternating(rng):  # high on every other token: a run of 2 never, single tokens often
        curve = np.zeros(N_AFTER)
        curve[::2] = 5.0
        return curve

    def sustained(rng):
        return np.r_[np.zeros(4), np.full(N_AFTER - 4, 5.0)]

    runs = _noise_runs(80, change=sustained)
    result = cal.calibrate_point(runs, cal.EVENTS[1], _folds(runs))
    assert {fit.window for fit in result.fits} == {2}  # both windows catch every run: the smaller
    assert all(fit.fit_event_rate == 1.0 for fit in result.fits)
    runs = _noise_runs(80, change=alternating)
    detection = cal.calibrate_point(runs, cal.EVENTS[0], _folds(runs))
    adaptation = cal.calibrate_point(runs, cal.EVENTS[1], _folds(runs))
    assert all(fit.fit_event_rate == 1.0 for fit in detection.fits)
    assert all(fit.fit_event_rate == 0.0 for fit in adaptation.fits)


def test_window_chosen_by_rate_when_the_larger_one_fires_more():
    """Controls with short spikes: a window of 2 needs a high margin, one of 4 a low one, so a
    change run sustained at a moderate level fires only at w = 4."""
    rng = np.random.default_rng(5)
    runs = []
    for i in range(80):
        for condition in cal.CONTROL_CONDITIONS:
            curve = rng.normal(0.0, 0.05, N_AFTER)
            start = rng.integers(0, N_AFTER - 3)
            curve[start:start + 3] += 3.0  # three tokens high: windows of 2 see it, windows of 4 do not
            runs.append(_run(f"p{i:03d}", condition, curve))
        runs.append(_run(f"p{i:03d}", "injection", np.r_[np.zeros(3), np.full(N_AFTER - 3, 1.0)]))
    result = cal.calibrate_point(runs, cal.EVENTS[1], _folds(runs))
    assert {fit.window for fit in result.fits} == {4}
    assert all(fit.fit_event_rate == 1.0 for fit in result.fits)


def test_window_edges():
    assert cal.run_score([1.0, 2.0], 2) == 1.0  # a curve exactly one window long has one window
    assert cal.run_score([math.nan, 5.0], 1) == 5.0  # NaN never supports an event, the rest still counts
    assert cal.conformal_threshold([3.0], 0.5) == 3.0  # one score suffices at alpha = 0.5
    assert cal.conformal_threshold([], 0.5) is None


def test_the_point_label_of_one_run_and_of_none():
    one = cal.calibrate_point([_run("p000", "noise", np.zeros(N_AFTER), point="t3")], cal.EVENTS[0], {"p000": 0})
    assert one.point == "t3" and not one.calibrated
    assert cal.calibrate_point([], cal.EVENTS[0], {}).point == "-"
