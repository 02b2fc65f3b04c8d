"""Findings, calibration and outcome sections built from records and metrics with known contents."""

from __future__ import annotations

import copy

import pytest
from report_synthetic import SWITCH, synthetic_records

from measure.analysis.calibrated import calibrated_records
from measure.analysis.outcomes import outcome_summary
from measure.report.findings import MIN_PROBLEMS, findings_text
from measure.report.format import fmt, fmt_pct
from measure.report.summary import build_metrics, records_frame


@pytest.fixture(scope="module")
def metrics():
    return build_metrics(synthetic_records(), n_resamples=200)


def test_calibrated_latencies_recover_the_planted_switch(metrics):
    rows = [r for r in metrics["aggregate_changed"] if r["metric"] == "adaptation_latency" and r["point"] == "t8"]
    by_condition = {r["condition"]: r for r in rows}
    for condition in ("injection", "flush", "partial"):
        assert by_condition[condition]["estimate"] == SWITCH
        assert (by_condition[condition]["n"], by_condition[condition]["n_censored"]) == (40, 0)
    assert by_condition["noise"]["n_events"] <= 3  # controls stay quiet (alpha = 0.05 of 40 runs)
    entry = metrics["calibration"]["events"]["adaptation_latency"]["points"]["t8"]
    assert entry["calibrated"] and entry["reason"] is None
    # noise, repeat, ignore of the changed problems outside each fold: 40 changed problems, 4 per fold
    assert [f["n_controls"] for f in entry["folds"]] == [36 * 3] * 10
    assert entry["event_rate"]["injection"]["estimate"] == 1.0
    assert entry["false_event_rate"]["identical"]["k"] == 0
    folds = metrics["calibration"]["folds"]
    assert sorted(set(folds.values())) == list(range(10)) and len(folds) == 48 and metrics["calibration"]["n_folds"] == 10


def test_every_sentence_cites_the_numbers_of_the_tables(metrics):
    findings = metrics["findings"]
    pooled, paired = metrics["aggregate_changed"], metrics["paired_changed"]
    sentences = {s["condition"]: s for s in findings["points"][0]["sentences"]}
    assert set(sentences) == {"injection", "flush", "partial", "repeat", "noise"}
    survival = metrics["survival"]["points"]["t8"]
    lead = metrics["calibration"]["lead"]["points"]["t8"]
    for condition, sentence in sentences.items():
        lat = next(r for r in pooled if r["metric"] == "lead_latency" and r["condition"] == condition)
        gap = next(r for r in pooled if r["metric"] == "adaptation_gap" and r["condition"] == condition)
        cites = sentence["cites"]
        assert cites["latency_median"] == lat["estimate"] and cites["latency_n_censored"] == lat["n_censored"]
        assert cites["gap_mean"] == gap["estimate"] and cites["gap_ci_low"] == gap["ci_low"]
        assert fmt(gap["estimate"]) in sentence["text"]
        if lat["estimate"] is not None:
            assert f"median {fmt(lat['estimate'])} tokens" in sentence["text"]
        summary = survival["conditions"][condition]
        assert cites["incidence"] == summary["incidence"]["16"] and cites["rmst"] == summary["rmst"]["estimate"]
        assert f"within 16 tokens in {fmt_pct(summary['incidence']['16'])} of runs" in sentence["text"]
        assert f"restricted mean time to the event {summary['rmst']['estimate']:.0f} of 32 tokens" in sentence["text"]
        rates = lead["event_rate"] if condition in ("injection", "flush", "partial") else lead["false_event_rate"]
        assert cites["event_k"] == rates[condition]["k"] and f"{rates[condition]['k']} of 40 runs" in sentence["text"]
        if condition in ("injection", "partial"):
            assert cites["share_of_flush"] == lead["share_of_flush"][condition]
            # every tenth problem has no observable difference (report_synthetic): 36 of 40 could show it
            assert "36 of 40 runs could show adaptation at all and 36 of those did; 4 had no observable difference" \
                in sentence["text"]
        for baseline in ("flush", "noise"):
            if baseline == condition:
                continue
            row = next((r for r in paired if r["metric"] == "adaptation_gap" and r["condition"] == condition
                        and r["baseline"] == baseline), None)
            if row is None:
                assert f"vs_{baseline}_mean_diff" not in cites
                continue
            assert cites[f"vs_{baseline}_mean_diff"] == row["mean_diff"]
            assert cites[f"vs_{baseline}_p_holm"] == row["wilcoxon_p_holm"]
    fer = metrics["calibration"]["events"]["adaptation_latency"]["points"]["t8"]["false_event_rate"]["controls"]
    calib = findings["calibration"][0]
    assert calib["cites"]["false_event_k"] == fer["k"] and f"{fer['k']} of {fer['n']} runs" in calib["text"]
    assert "Findings" in findings_text(findings)


def test_injection_is_compared_with_the_oracle_flush_partial_and_noise(metrics):
    pairs = {(r["condition"], r["baseline"]) for r in metrics["paired_changed"] if r["metric"] == "adaptation_gap"}
    assert {("injection", "oracle"), ("injection", "flush"), ("injection", "partial"), ("injection", "noise"),
            ("flush", "noise"), ("partial", "noise"), ("repeat", "noise")} <= pairs
    rows = [r for r in metrics["paired_changed"] if r["metric"] == "adaptation_gap" and r["wilcoxon_p"] is not None]
    # Holm over the whole family of one metric: the smallest raw p is multiplied by the family's size
    smallest = min(rows, key=lambda r: r["wilcoxon_p"])
    assert len(rows) == 6  # repeat vs noise: every difference is 0 in these records, so no test
    assert smallest["wilcoxon_p_holm"] == pytest.approx(min(1.0, smallest["wilcoxon_p"] * len(rows)))
    assert all(r["wilcoxon_p_holm"] >= r["wilcoxon_p"] for r in rows)


def _codes(findings):
    return {item["code"] for item in findings["cannot_say"]}


def test_a_well_powered_run_flags_nothing(metrics):
    assert _codes(metrics["findings"]) == set()


def test_too_few_problems_and_uncalibrated_appear_exactly_then():
    # 5 changed problems, 5 folds: 4 x 3 = 12 controls in each fitting set, fewer than the 19 needed
    small = build_metrics(synthetic_records(n_changed=5, n_identical=2), n_resamples=100)
    codes = _codes(small["findings"])
    assert {"too_few_problems", "latencies_uncalibrated", "outcomes_uninformative"} <= codes
    sentence = small["findings"]["points"][0]["sentences"][0]
    assert "uncalibrated" in sentence["text"] and sentence["cites"]["latency_calibrated"] is False
    lat = [r for r in small["aggregate_changed"] if r["metric"] == "adaptation_latency" and r["point"] == "t8"]
    assert all(r["n"] == 0 for r in lat)  # no number is printed as a result
    # one problem short of MIN_PROBLEMS: the lead is calibrated (8 x 3 = 24 controls per fitting set) and the
    # run still says it has too few problems
    short = build_metrics(synthetic_records(n_changed=MIN_PROBLEMS - 1, n_identical=2), n_resamples=100)
    assert "too_few_problems" in _codes(short["findings"]) and "latencies_uncalibrated" not in _codes(short["findings"])
    mid = build_metrics(synthetic_records(n_changed=MIN_PROBLEMS + 4, n_identical=2), n_resamples=100)
    assert "too_few_problems" not in _codes(mid["findings"])


def test_censored_share_high_appears_exactly_when_most_runs_never_adapt():
    records = synthetic_records()
    for r in records:
        if r.condition == "partial":  # partial never favours B, token or distribution
            lp, kl = r.arrays.logprob_ref, r.arrays.kl
            lp["oracle"] = [v - 1.0 for v in lp["ignore"]]
            kl["oracle"], kl["ignore"] = [1.0] * len(kl["oracle"]), [0.0] * len(kl["ignore"])
    findings = build_metrics(records, n_resamples=100)["findings"]
    flagged = [i for i in findings["cannot_say"] if i["code"] == "censored_share_high"]
    assert [i["condition"] for i in flagged] == ["partial"]


def test_outcomes_are_uninformative_when_the_oracle_cannot_solve_b():
    records = synthetic_records(adapted_answers=False)
    metrics = build_metrics(records, n_resamples=100)
    assert not metrics["outcomes"]["informative"] and metrics["outcomes"]["rates"] == []
    assert "outcomes_uninformative" in _codes(metrics["findings"])
    assert "0 of 40" in metrics["outcomes"]["reasons"][0]


def test_outcome_rates_are_conditional_on_solved_problems():
    records = synthetic_records()
    for r in records:  # problem p000: the ignore run gets A wrong, so p000 is not "solved"
        if r.problem_id == "p000" and r.condition == "ignore":
            r.metrics["outcome"] = "other"
        if r.problem_id == "p000" and r.condition == "injection":
            r.metrics["outcome"] = "stale"
    unique, _ = calibrated_records(records)
    summary = outcome_summary(records_frame(unique))
    assert summary["informative"] and summary["n_solved"] == 39
    injection = next(r for r in summary["rates"] if r["condition"] == "injection")
    assert injection["n"] == 39 and injection["adapted"]["estimate"] == 1.0  # p000's stale run is left out


def test_records_written_before_calibration_lose_their_fixed_threshold_latencies():
    records = copy.deepcopy(synthetic_records(n_changed=4, n_identical=0))
    for r in records:
        r.metrics["adaptation_latency"], r.metrics["adaptation_latency_censored"] = 1, False
    unique, section = calibrated_records(records)
    assert all(r.metrics.get("adaptation_latency") is None for r in unique)
    assert section["events"]["adaptation_latency"]["points"]["t8"]["calibrated"] is False


def test_power_of_the_main_comparison_is_stated(metrics):
    from measure.analysis.stats import detectable_effect

    power = metrics["findings"]["points"][0]["power"]
    row = next(r for r in metrics["paired_changed"] if r["metric"] == "adaptation_gap"
               and (r["condition"], r["baseline"]) == ("injection", "noise"))
    assert power["n"] == row["n"] == 40 and power["observed_dz"] == row["cohen_dz"]
    # 40 pairs: (1.960 + 0.842) / sqrt(40 * 3 / pi) = 0.4534 (hand-computed)
    assert power["detectable_dz"] == pytest.approx(0.4534, abs=1e-3) == detectable_effect(40)
    assert detectable_effect(1) is None and detectable_effect(160) == pytest.approx(0.4534 / 2, abs=1e-3)


def test_lead_latencies_give_each_records_lead_event_and_observability():
    from measure.analysis.calibrated import lead_latencies

    records = synthetic_records()
    lead = lead_latencies(records)
    unique, section = calibrated_records(records)
    by_key = {r.key: r for r in unique}
    point_keys = {r.key for r in records if r.point != "-"}
    assert set(lead) == point_keys
    chosen = {fold["scores_fold"]: fold["event"] for fold in section["lead"]["points"]["t8"]["folds"]}
    folds = section["folds"]
    for key, entry in lead.items():
        metrics = by_key[key].metrics
        assert (entry["latency"], entry["censored"]) == (metrics["lead_latency"], metrics["lead_latency_censored"])
        problem = by_key[key].problem_id
        assert entry["event"] == chosen[folds[problem]]  # the choice made on its fold's fitting set
        # report_synthetic: KL(P_oracle || P_ignore) is 3 nats a token, 0 on every tenth and identical problem
        no_difference = int(problem[1:]) % 10 == 9 or by_key[key].variation_type is None
        assert metrics["observability"] == (0.0 if no_difference else 3.0 * 32)
        if by_key[key].variation_type is not None:
            assert entry["observable"] is (not no_difference)
    assert section["positive_control"] == "flush" and section["lead"]["name"] == "lead_latency"
