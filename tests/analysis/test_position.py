"""The position sweep's analysis on synthetic records (measure.analysis.position)."""

import numpy as np
from position_synthetic import POINTS, _record, sweep_records
from scipy import stats

from measure.analysis.position import (
    event_by,
    gee_logistic,
    mantel_haenszel,
    notes_split,
    permutation_trend,
    point_position,
    position_frame,
    position_section,
    restricted_mean,
)


def _trend(section, condition, response):
    return next(t for t in section["trends"] if t["condition"] == condition and t["response"] == response)


def test_point_labels_order_by_position():
    assert point_position("f0.3") == ("f", 0.3)
    assert point_position("t16") == ("t", 16.0)
    assert point_position("-") is None and point_position("after:quantity") is None


def test_a_planted_trend_is_found_in_stale_and_in_the_event():
    section = position_section(sweep_records(n_problems=40, stale_slope=3.0, event_slope=-3.0), n_resamples=200)
    assert section["available"] and section["points"] == list(POINTS)
    stale = _trend(section, "injection", "stale")["trend"]["terms"]["position"]
    event = _trend(section, "injection", "event")["trend"]["terms"]["position"]
    assert stale["coef"] > 0 and stale["p"] < 0.01
    assert event["coef"] < 0 and event["p"] < 0.01
    for response in ("stale", "event"):
        test = _trend(section, "injection", response)["permutation"]
        assert test["p"] < 0.01 and test["p_holm"] >= test["p"]
    assert _trend(section, "injection", "stale")["permutation"]["statistic"] > 0
    assert _trend(section, "injection", "event")["permutation"]["statistic"] < 0


def test_no_trend_fires_at_about_alpha_over_seeds():
    """200 null data sets (problem effects, no position effect): the share with p < 0.05 lies in
    a 99% binomial interval around 0.05, and the interval of the observed rate holds 0.05."""
    fired = []
    for seed in range(200):
        frame = position_frame(sweep_records(n_problems=30, seed=seed, conditions=("injection",)))
        frame["stale"] = (frame["outcome"] == "stale").astype(float)
        fired.append(gee_logistic(frame, "stale")["terms"]["position"]["p"] < 0.05)
    _assert_about_alpha(fired)


def test_the_permutation_test_fires_at_about_alpha_over_seeds():
    fired = []
    for seed in range(200):
        frame = position_frame(sweep_records(n_problems=30, seed=seed, conditions=("injection",)))
        frame["stale"] = (frame["outcome"] == "stale").astype(float)
        fired.append(permutation_trend(frame, "stale", seed=seed, n_permutations=999)["p"] < 0.05)
    _assert_about_alpha(fired)


def _assert_about_alpha(fired):
    k = int(np.sum(fired))
    assert stats.binomtest(k, len(fired), 0.05).pvalue > 0.01, f"fired {k} of {len(fired)}"
    interval = stats.binomtest(k, len(fired)).proportion_ci(0.99)
    assert interval.low <= 0.05 <= interval.high


def test_the_notes_covariate_separates_notes_from_position():
    """Notes raise stale and rise with position; position itself does nothing: with the flag as a
    covariate the position slope is near zero and the flag's is found."""
    section = position_section(sweep_records(n_problems=60, notes_effect=2.5, seed=3), n_resamples=200)
    entry = _trend(section, "injection", "stale")
    assert entry["with_notes"]["terms"]["notes_known"]["p"] < 0.01
    assert entry["with_notes"]["terms"]["notes_known"]["coef"] > 0
    assert abs(entry["with_notes"]["terms"]["position"]["coef"]) < abs(entry["trend"]["terms"]["position"]["coef"])


def test_a_problem_measured_at_only_some_points_is_kept_and_listed():
    records = [r for r in sweep_records(n_problems=12) if not (r.problem_id == "p003" and r.point == "f0.9")]
    skipped = [{"problem_id": "p003", "point": "f0.9", "reason": "the ignore run stopped after 9 tokens"}]
    section = position_section(records, skipped, n_resamples=200)
    assert section["partial_problems"] == [{"problem_id": "p003", "missing_points": ["f0.9"],
                                           "reasons": {"f0.9": "the ignore run stopped after 9 tokens"}}]
    row = next(r for r in section["rows"] if r["condition"] == "injection" and r["point"] == "f0.1")
    assert row["n_changed"] == 12
    row = next(r for r in section["rows"] if r["condition"] == "injection" and r["point"] == "f0.9")
    assert row["n_changed"] == 11


def test_fewer_than_three_points_give_no_section():
    records = [r for r in sweep_records(n_problems=5) if r.point in ("-", "f0.1", "f0.3")]
    section = position_section(records)
    assert not section["available"] and "2 numeric" in section["reason"]


def test_shares_and_rates_count_the_runs():
    section = position_section(sweep_records(n_problems=20, seed=1), n_resamples=200)
    records = sweep_records(n_problems=20, seed=1)
    runs = [r for r in records if r.condition == "flush" and r.point == "f0.5"]
    row = next(r for r in section["rows"] if r["condition"] == "flush" and r["point"] == "f0.5")
    assert row["outcomes"]["stale"]["k"] == sum(r.metrics["outcome"] == "stale" for r in runs)
    assert row["outcomes"]["stale"]["n"] == 20
    assert section["tau"] == 20
    events = sum(not r.metrics["lead_latency_censored"] for r in runs)
    assert row["event"]["k"] == events and row["event"]["n"] == 20


def test_event_by_tau_leaves_only_runs_cut_short_unknown():
    assert event_by(3, False, 10) is True
    assert event_by(12, False, 10) is False
    assert event_by(10, True, 10) is False
    assert event_by(6, True, 10) is None  # cut by the token limit after 6 tokens
    assert event_by(6, True, 10, ended=True) is False  # ended by itself: never adapts
    assert event_by(None, None, 10) is None


def test_restricted_mean_is_the_mean_of_min_latency_tau_without_censoring():
    latencies = [2, 4, 6, 30]
    out = restricted_mean(latencies, [False] * 4, tau=10)
    assert abs(out["estimate"] - np.mean(np.minimum(latencies, 10))) < 1e-9
    assert out["ci_low"] <= out["estimate"] <= out["ci_high"]


def test_a_run_that_ended_without_an_event_counts_as_never_adapting():
    """Stopped by itself after 3 tokens with no event: min(latency, tau) is tau, not unknown."""
    out = restricted_mean([2, 3, 5], [False, True, False], tau=10, ended=[False, True, False])
    assert abs(out["estimate"] - (2 + 10 + 5) / 3) < 1e-9
    # Cut by the token limit instead: censored at 3, the Kaplan-Meier curve falls to 0 at 5.
    cut = restricted_mean([2, 3, 5], [False, True, False], tau=10, ended=[False, False, False])
    assert abs(cut["estimate"] - (2 + 3 * 2 / 3)) < 1e-9


def test_notes_split_counts_and_tests_by_flag():
    records = [_record(f"p{i}", c, "-", o) for i in range(8) for c, o in (("ignore", "stale"), ("oracle", "adapted"))]
    records += [_record(f"p{i}", "flush", "t8", "stale" if i < 4 else "adapted", 5, False, notes=i < 4)
                for i in range(8)]
    records.append(_record("p9", "flush", "t8", "adapted"))  # no flag: unknown
    split = notes_split(records)
    row = split["rows"][0]
    assert (row["n_runs"], row["n_notes"], row["n_unknown"]) == (9, 4, 1)
    assert row["stale"]["with_notes"]["k"] == 4 and row["stale"]["without_notes"]["k"] == 0
    assert abs(row["stale"]["p"] - stats.fisher_exact([[4, 0], [0, 4]]).pvalue) < 1e-12
    assert row["outcome_counts"]["True"] == {"stale": 4}


def test_separation_gives_no_estimate_not_a_huge_one():
    """Every run with notes is stale and every run without is adapted: no finite odds ratio."""
    records = sweep_records(n_problems=20, seed=2)
    for record in records:
        if record.notes_before_change is not None:
            record.metrics["outcome"] = "stale" if record.notes_before_change else "adapted"
    section = position_section(records, n_resamples=200)
    entry = next(t for t in section["trends"] if (t["condition"], t["response"]) == ("injection", "stale"))
    assert entry["with_notes"]["terms"] == {} and "separation" in entry["with_notes"]["reason"]


def _split_row(point, with_stale, with_n, without_stale, without_n):
    def side(k, n):
        return {"k": k, "n": n}
    return {"condition": "flush", "point": point,
            "stale": {"with_notes": side(with_stale, with_n), "without_notes": side(without_stale, without_n)}}


def test_the_pooled_notes_split_is_stratified_by_point():
    """Within each point the flag does nothing (same share stale on both sides); the flag is
    common where stale is common, so a pooled table would show an effect: Mantel-Haenszel does not."""
    rows = [_split_row("f0.1", 1, 5, 4, 20), _split_row("f0.9", 16, 20, 4, 5)]
    pooled = mantel_haenszel(rows, "stale")
    assert abs(pooled["odds_ratio"] - 1.0) < 1e-9 and pooled["p"] > 0.5
    assert pooled["with_notes"]["k"] == 17 and pooled["with_notes"]["n"] == 25
    crude = stats.fisher_exact([[17, 8], [8, 17]])
    assert crude.pvalue < 0.05  # what an unstratified table would have claimed
    assert mantel_haenszel([_split_row("f0.1", 0, 0, 4, 20)], "stale")["odds_ratio"] is None
