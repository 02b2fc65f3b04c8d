"""Evidence-accumulating events, observability and the lead event on synthetic curves with known answers."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from measure.analysis import calibration as cal

N_AFTER = 40
CUSUM = cal.EVENTS_BY_NAME["cusum_latency"]
WINDOW = cal.EVENTS_BY_NAME["adaptation_latency"]


def _run(pid, condition, curve, gain=None, identical=False):
    curve = np.asarray(curve, dtype=float)
    curves = {"log_ratio": curve, "kl_gap": curve}
    if gain is not None:
        curves[cal.EXPECTED_GAIN] = np.asarray(gain, dtype=float)
    return cal.RunCurve(pid, condition, "t8", identical, curves)


def _folds(runs, seed=0):
    return cal.assign_folds([(r.problem_id, r.identical) for r in runs], seed)


def test_page_cusum_is_the_reset_recursion_and_the_cumulative_sum_does_not_reset():
    x = np.array([1.0, -3.0, 0.5, 0.5, np.nan, 2.0])
    assert cal.statistic_path(CUSUM, x, 0.0).tolist() == [1.0, 0.0, 0.5, 1.0, 1.0, 3.0]  # NaN adds nothing
    assert cal.statistic_path(CUSUM, x, 0.5).tolist() == [0.5, 0.0, 0.0, 0.0, 0.0, 1.5]  # drift 0.5 per token
    cumulative = cal.EVENTS_BY_NAME["cumulative_llr_latency"]
    assert cal.statistic_path(cumulative, x, None).tolist() == [1.0, -2.0, -1.5, -1.0, -1.0, 1.0]
    assert cal.event_latency_of(CUSUM, x, 0.0, 2.5) == (6, False)  # first token whose C_k exceeds 2.5
    assert cal.event_latency_of(CUSUM, x, 0.0, 3.0) == (6, True)  # never above: censored at n
    assert cal.event_score(CUSUM, x, 0.0) == 3.0


def _scattered_runs(rng, n_problems, start, every=3, step=0.6, sd=0.1):
    """Controls are noise; change runs get +``step`` nats on every ``every``-th token from 1-based
    token ``start`` on, and no other token favours B (as on a math problem, where only the changed
    numbers carry evidence): never two such tokens in a row."""
    runs = []
    for i in range(n_problems):
        pid = f"p{i:03d}"
        for condition in cal.CONTROL_CONDITIONS:
            runs.append(_run(pid, condition, rng.normal(0.0, sd, N_AFTER)))
        planted = -np.abs(rng.normal(0.0, sd, N_AFTER))
        planted[start - 1::every] += step
        runs.append(_run(pid, "flush", planted))
    return runs


def test_evidence_on_every_third_token_is_found_by_the_cusum_and_missed_by_the_window_event():
    rng = np.random.default_rng(3)
    start = 10
    runs = _scattered_runs(rng, 60, start)
    folds = _folds(runs)
    sequential = cal.calibrate_point(runs, CUSUM, folds)
    window = cal.calibrate_point(runs, WINDOW, folds)
    planted = [key for key in sequential.latencies if key[1] == "flush"]
    found = [sequential.latencies[key] for key in planted]
    # every run found, within the planted range: from its first planted token, after at most 6 of them
    assert all(not lat.censored and start <= lat.value <= start + 3 * 5 for lat in found), found
    missed = [window.latencies[key] for key in planted]
    assert all(lat.censored for lat in missed), missed  # 2 or 4 tokens in a row: never


def test_null_curves_fire_within_the_binomial_interval_of_alpha_over_many_seeds():
    """Pure-noise controls, many seeds: each sequential event's held-out false-event rate lies in
    the 99.9% binomial interval of alpha (the conformal rank makes it at most alpha in expectation)."""
    alpha = 0.05
    for event in (e for e in cal.EVENTS if e.sequential):
        k = n = 0
        for seed in range(20):
            rng = np.random.default_rng(100 + seed)
            runs = [_run(f"p{i:03d}", condition, rng.normal(0.0, 0.3, N_AFTER))
                    for i in range(50) for condition in cal.CONTROL_CONDITIONS]
            result = cal.calibrate_point(runs, event, _folds(runs, seed), alpha)
            hits, total = cal.event_rates(result, runs)["false"]["controls"]
            k, n = k + hits, n + total
        assert n == 20 * 150
        low, high = stats.binom.ppf([0.0005, 0.9995], n, alpha)
        assert low <= k <= high, (event.name, k, n)
        assert k / n <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / n)


def test_a_run_with_no_observable_difference_is_classified_as_such():
    """Observable: the sum over the horizon of KL(P_oracle || P_ignore) exceeds the CUSUM's threshold.
    A run whose tokens leave B and A nearly the same is counted apart, even when its r(t) fired."""
    rng = np.random.default_rng(5)
    runs = []
    for i in range(40):
        pid = f"p{i:03d}"
        for condition in cal.CONTROL_CONDITIONS:
            runs.append(_run(pid, condition, rng.normal(0.0, 0.3, N_AFTER), gain=np.full(N_AFTER, 0.2)))
        curve = rng.normal(0.0, 0.3, N_AFTER) + 0.5
        # p000..p009: B vs A matters 0.001 nats per token on their tokens: 0.04 in all, below any threshold
        gain = np.full(N_AFTER, 0.001 if i < 10 else 0.5)
        runs.append(_run(pid, "flush", curve, gain=gain))
        runs.append(_run(pid, "injection", np.zeros(N_AFTER), gain=gain))
    runs.append(_run("old", "flush", np.zeros(N_AFTER)))  # a record from before kl_oracle_ignore: unknown
    result = cal.calibrate_point(runs, CUSUM, _folds(runs))
    assert all(fit.threshold > 0.04 for fit in result.fits)
    for i in range(40):
        assert result.observable[(f"p{i:03d}", "flush")] is (i >= 10)
    assert result.observable[("old", "flush")] is None
    counts = cal.observability_counts(result.latencies, result.observable, runs)
    assert counts["flush"] == {"n": 41, "observable": 30, "observable_events": 30, "unobservable": 10,
                               "unobservable_events": 10, "unknown": 1}
    assert counts["injection"]["observable"] == 30 and counts["injection"]["observable_events"] == 0


def test_the_lead_event_is_chosen_on_the_fitting_fold_only():
    """Scattered evidence: single tokens and sums find it, windows of 2 or 4 do not. A fold's choice
    is the event with the most events on its fitting set's flush runs (the other folds'), and
    changing the runs of the fold it scores does not change it."""
    rng = np.random.default_rng(8)
    scattered = _scattered_runs(rng, 60, 10)
    folds = _folds(scattered)
    results = {event.name: cal.calibrate_point(scattered, event, folds) for event in cal.EVENTS}
    choice = cal.choose_lead(results, scattered, folds, 0)
    assert choice.flush_rates[choice.event] == max(choice.flush_rates.values()) >= 0.9
    assert choice.flush_rates["cusum_latency"] >= 0.9
    assert choice.flush_rates["adaptation_latency"] <= 0.2
    # the scored fold (0) changed beyond recognition: its flush runs favour A throughout
    altered = [run if folds[run.problem_id] != 0 or run.condition != "flush"
               else _run(run.problem_id, "flush", -np.ones(N_AFTER)) for run in scattered]
    altered_results = {event.name: cal.calibrate_point(altered, event, folds) for event in cal.EVENTS}
    again = cal.choose_lead(altered_results, altered, folds, 0)
    assert (again.event, again.flush_rates) == (choice.event, choice.flush_rates)
    choices = [cal.choose_lead(results, scattered, folds, fold) for fold in range(cal.n_folds_of(folds))]
    latencies, observable, events = cal.lead_latencies(results, choices, scattered, folds)
    for (problem_id, condition), latency in latencies.items():
        chosen = choices[folds[problem_id]].event
        assert events[(problem_id, condition)] == chosen
        assert latency == results[chosen].latencies[(problem_id, condition)]
