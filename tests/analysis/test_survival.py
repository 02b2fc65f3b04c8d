"""Survival summaries against lifelines on hand-built tables, and the exact McNemar test by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter
from lifelines.utils import restricted_mean_survival_time

from measure.analysis.lead import lead_survival, paired_event_tests
from measure.analysis.stats import mcnemar_exact
from measure.analysis.survival import km_rmst, survival_summary

# 10 runs over a horizon of 20 tokens: events at 2, 3, 3, 7, 12; censored at 5, 20, 20, 20, 9 (a run that ended early)
DURATIONS = [2, 3, 3, 7, 12, 5, 20, 20, 20, 9]
EVENTS = [True, True, True, True, True, False, False, False, False, False]
HORIZON = 20


def test_incidence_and_restricted_mean_equal_lifelines_on_a_hand_built_table():
    summary = survival_summary(DURATIONS, EVENTS, HORIZON, n_resamples=200)
    fitter = KaplanMeierFitter().fit(DURATIONS, EVENTS)
    expected_rmst = restricted_mean_survival_time(fitter, t=HORIZON)
    assert summary["rmst"]["estimate"] == pytest.approx(expected_rmst, abs=1e-12)
    # by hand: S = 1 on [0,2), 0.9 on [2,3), 0.7 on [3,7), 0.7 * 5/6 on [7,12) (6 at risk at 7), then * 3/4
    assert expected_rmst == pytest.approx(2 + 0.9 + 4 * 0.7 + 5 * 0.7 * 5 / 6 + 8 * 0.7 * 5 / 6 * 3 / 4, abs=1e-12)
    for k in (4, 8, 16):
        assert summary["incidence"][str(k)] == pytest.approx(float(fitter.cumulative_density_at_times([k]).iloc[0]),
                                                             abs=1e-12)
    assert summary["incidence"]["4"] == pytest.approx(0.3, abs=1e-12)  # 3 events among 10 at risk by token 4
    assert summary["incidence"]["32"] is None  # beyond the horizon: the runs were not followed that far
    assert summary["median"]["estimate"] == 12 and summary["n_events"] == 5  # S falls to 0.4375 at 12
    assert summary["rmst"]["ci_low"] <= summary["rmst"]["estimate"] <= summary["rmst"]["ci_high"]


def test_the_numpy_restricted_mean_used_by_the_bootstrap_equals_lifelines():
    rng = np.random.default_rng(0)
    for _ in range(20):
        d = rng.integers(1, 30, 25).astype(float)
        e = rng.random(25) < 0.5
        fitter = KaplanMeierFitter().fit(d, e)
        for horizon in (10.0, 29.0):
            assert km_rmst(d, e, horizon) == pytest.approx(restricted_mean_survival_time(fitter, t=horizon), abs=1e-9)
    assert km_rmst(np.array([5.0, 6.0]), np.array([False, False]), 8.0) == 8.0  # nobody adapted: the whole horizon


def test_the_bootstrap_draws_problems_not_rows():
    """Two rows per problem that always agree: resampling problems keeps them together, so the CI
    equals the one of the same table with one row per problem, weighted twice."""
    once = survival_summary(DURATIONS, EVENTS, HORIZON, [f"p{i}" for i in range(10)], n_resamples=300, seed=1)
    twice = survival_summary(DURATIONS * 2, EVENTS * 2, HORIZON, [f"p{i}" for i in range(10)] * 2,
                             n_resamples=300, seed=1)
    assert twice["rmst"]["estimate"] == pytest.approx(once["rmst"]["estimate"], abs=1e-9)
    assert (twice["rmst"]["ci_low"], twice["rmst"]["ci_high"]) == pytest.approx(
        (once["rmst"]["ci_low"], once["rmst"]["ci_high"]), abs=1e-9)


def test_exact_mcnemar_by_hand():
    # 6 pairs only the condition fired, 1 only the baseline, 3 both, 10 neither
    x = [True] * 6 + [False] + [True] * 3 + [False] * 10
    y = [False] * 6 + [True] + [True] * 3 + [False] * 10
    result = mcnemar_exact(x, y)
    assert (result["only_condition"], result["only_baseline"], result["both"], result["neither"]) == (6, 1, 3, 10)
    assert result["p_exact"] == pytest.approx(2 * (1 + 7) / 2**7, abs=1e-12)  # two-sided binomial, 7 discordant
    assert result["rate_condition"] == 9 / 20 and result["rate_baseline"] == 4 / 20
    assert mcnemar_exact([True, False], [True, False])["p_exact"] == 1.0  # no discordant pair
    assert mcnemar_exact([True, None], [False, True])["n"] == 1


def test_lead_tables_pair_runs_by_problem_and_adjust_over_rows():
    rows = []
    for i in range(12):
        for condition, fired in (("injection", i < 8), ("noise", i < 1), ("flush", i < 9)):
            rows.append({"problem_id": f"p{i}", "condition": condition, "point": "t8", "lead_fired": fired,
                         "lead_latency": 3 if fired else 20, "lead_latency_censored": not fired})
    df = pd.DataFrame(rows)
    tests = paired_event_tests(df)
    assert [(t["condition"], t["baseline"]) for t in tests] == [("injection", "noise"), ("injection", "flush")]
    vs_noise = tests[0]
    assert (vs_noise["only_condition"], vs_noise["only_baseline"]) == (7, 0)
    assert vs_noise["p_exact"] == pytest.approx(2 / 2**7) and vs_noise["p_holm"] == pytest.approx(2 * 2 / 2**7)
    survival = lead_survival(df, n_resamples=100)
    point = survival["points"]["t8"]
    assert point["horizon"] == 20
    assert point["conditions"]["injection"]["incidence"]["4"] == pytest.approx(8 / 12)
    assert point["conditions"]["flush"]["rmst"]["estimate"] == pytest.approx(9 / 12 * 3 + 3 / 12 * 20)
