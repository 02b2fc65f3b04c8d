"""The Strategies section (measure.report.strategies): curves aligned at each update against a hand
computation, undelivered updates counted and left out, latencies in words where there is no number,
no section without strategy records, and the ``strategies`` key of metrics.json as strict JSON."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from report_synthetic import strategy_records, synthetic_records
from scipy import stats as sps

from measure.records.record import Record
from measure.report.html import render_html
from measure.report.strategies import latency_summary, mean_interval, strategies_section, strategy_entry
from measure.report.summary import build_metrics, write_reports

TOL = 1e-12


def _record(pid, kl, oracle, ignore, ts, delivered=None, condition="multi"):
    """A strategy record small enough to align by hand (per-token arrays indexed by generated token)."""
    delivered = delivered or [True] * len(ts)
    return Record.model_validate({
        "key": f"{pid}/{condition}/t2", "problem_id": pid, "condition": condition, "point": "t2", "t0": ts[0],
        "variation_type": "single_number", "final_problem": "c",
        "arrays": {"kl": {"matched": list(kl)}, "logprob_ref": {"oracle": list(oracle), "ignore": list(ignore)}},
        "schedule": [{"index": i, "t": t, "stream_start": 3 + t + 2 * i if d else None, "n_tokens": 2,
                      "text": f"update {i}", "delivered": d} for i, (t, d) in enumerate(zip(ts, delivered))],
        "metrics": {"adaptation_gap": None},
    })


def _metrics_only(metrics: dict) -> Record:
    """A run known only by its metrics row (what latency_summary reads)."""
    return Record(key="p/multi/t8", problem_id="p", condition="multi", point="t8", metrics=metrics)


def _curve(entry, update, curve):
    data = entry["updates"][update]["curves"][curve]
    return {x: (m, n, lo) for x, m, n, lo in zip(data["x"], data["mean"], data["n"], data["ci_low"])}


def test_aligned_curves_equal_a_hand_computation():
    one = _record("p1", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [-1, -1, -0.5, -0.5, -0.2, -0.2], [-1, -1, -1, -2, -2, -2], [2, 4])
    two = _record("p2", [1, 2, 3, 4, 5], [-3, -2, -1, -1, -1], [-1, -1, -1, -1, -3], [1, 3])
    entry = strategy_entry("multi", [one, two], before=2, positions=4, n_resamples=200)
    kl0 = _curve(entry, 0, "kl_matched")
    # update 1 of p1 at t=2: x = -1..4 are indices 0..5; of p2 at t=1: x = 0..4 are indices 0..4
    expected = {-1: (0.1, 1), 0: ((0.2 + 1) / 2, 2), 1: ((0.3 + 2) / 2, 2), 2: ((0.4 + 3) / 2, 2),
                3: ((0.5 + 4) / 2, 2), 4: ((0.6 + 5) / 2, 2)}
    assert sorted(kl0) == sorted(expected)
    for x, (mean, n) in expected.items():
        assert kl0[x][0] == pytest.approx(mean, abs=TOL) and kl0[x][1] == n, x
        assert kl0[x][2] is None, "no interval below 3 runs"
    r1 = _curve(entry, 1, "log_ratio")
    # update 2 of p1 at t=4: r = [0, 0, 0.5, 1.5, 1.8, 1.8], x = -1..2 -> indices 2..5; of p2 at t=3:
    # r = [-2, -1, 0, 0, 2], x = -1..2 -> indices 1..4
    expected_r = {-1: ((0.5 - 1) / 2, 2), 0: ((1.5 + 0) / 2, 2), 1: ((1.8 + 0) / 2, 2), 2: ((1.8 + 2) / 2, 2),
                  3: (None, 0), 4: (None, 0)}
    for x, (mean, n) in expected_r.items():
        assert r1[x][1] == n, x
        assert (r1[x][0] is None) if mean is None else r1[x][0] == pytest.approx(mean, abs=TOL), x
    # gap since update 1: mean over runs of each run's mean KL over the 20 tokens after it
    gap = entry["updates"][0]["gap_since"]
    assert gap["estimate"] == pytest.approx((np.mean([0.3, 0.4, 0.5, 0.6]) + np.mean([2, 3, 4, 5])) / 2, abs=TOL)
    assert entry["updates"][1]["offset_previous"] == -2 and entry["updates"][0]["offset_next"] == 2


def test_interval_is_student_t_from_three_runs():
    grid = np.array([[1.0, 2.0], [2.0, np.nan], [4.0, 3.0]])
    out = mean_interval(grid)
    half = sps.t.ppf(0.975, 2) * np.std([1, 2, 4], ddof=1) / np.sqrt(3)
    assert out["mean"][0] == pytest.approx(7 / 3, abs=TOL) and list(out["n"]) == [3, 2]
    assert out["ci_low"][0] == pytest.approx(7 / 3 - half, abs=1e-9)
    assert out["ci_high"][0] == pytest.approx(7 / 3 + half, abs=1e-9)
    assert np.isnan(out["ci_low"][1]) and out["mean"][1] == pytest.approx(2.5, abs=TOL)


def test_undelivered_update_is_counted_and_left_out_of_its_curve():
    one = _record("p1", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0] * 6, [0] * 6, [2, 4])
    # p2 ended after 5 tokens, before its second update (planned at 5): values exist at x = -1, 0
    short = _record("p2", [1, 2, 3, 4, 5], [0] * 5, [0] * 5, [1, 5], delivered=[True, False])
    entry = strategy_entry("multi", [one, short], before=2, positions=4, n_resamples=200)
    assert (entry["n_runs"], entry["n_all_delivered"], entry["n_ended_before_an_update"]) == (2, 1, 1)
    first, second = entry["updates"]
    assert (first["n_delivered"], first["n_undelivered"]) == (2, 0)
    assert (second["n_planned"], second["n_delivered"], second["n_undelivered"]) == (2, 1, 1)
    assert (second["t_min"], second["t_max"]) == (4, 4)
    kl1 = _curve(entry, 1, "kl_matched")
    for x, value in {-1: 0.3, 0: 0.4, 1: 0.5, 2: 0.6}.items():  # p1 alone, p2's tokens before x = 1 excluded
        assert kl1[x][0] == pytest.approx(value, abs=TOL) and kl1[x][1] == 1, x
    assert second["gap_since"]["n"] == 1 and second["gap_since"]["estimate"] == pytest.approx(0.55, abs=TOL)


def test_synthetic_strategy_records_follow_the_contract():
    records = strategy_records(n_problems=3)
    assert {r.condition for r in records} == {"multi", "multi_retract", "gradual"}
    for r in records:
        schedule = r.schedule
        assert 2 <= len(schedule) <= 3 and schedule[0].t == r.t0
        n = len(r.tokens.generated)
        assert all(len(v) == n for v in [*r.arrays.kl.values(), *r.arrays.logprob_ref.values()])
        for update in schedule:
            assert update.delivered == (update.t < n)
            assert (update.stream_start is None) == (not update.delivered)
        assert r.metrics["updates_delivered"] == sum(u.delivered for u in schedule)
    short = [r for r in records if not r.schedule[-1].delivered]
    assert {r.condition for r in short} == {"multi", "multi_retract", "gradual"} and len(short) == 3
    assert synthetic_records(n_changed=2, n_identical=1)[0].key == "p000/ignore/-"  # the old function unchanged


def test_latency_in_words_when_uncalibrated_or_all_censored():
    runs = [_metrics_only({"adaptation_latency": None, "adaptation_latency_censored": None})] * 3
    calibration = {"events": {"adaptation_latency": {"points": {"t8": {"calibrated": False,
                                                                        "reason": "too few control runs (4 < 10)"}}}}}
    out = latency_summary(runs, "adaptation_latency", calibration, ["t8"])
    assert out["text"] == "not calibrated: too few control runs (4 < 10)" and out["estimate"] is None
    censored = [_metrics_only({"adaptation_latency_since_last": v, "adaptation_latency_since_last_censored": True})
                for v in (12, 32, 20)]
    out = latency_summary(censored, "adaptation_latency_since_last", None, ["t8"])
    assert out["text"] == "no run reached the event within 32 tokens (3 of 3 censored)"
    assert out["n_censored"] == 3 and out["estimate"] is None
    mixed = [_metrics_only({"detection_latency": v, "detection_latency_censored": c})
             for v, c in ((2, False), (4, False), (9, True))]
    out = latency_summary(mixed, "detection_latency", None, ["t8"])
    assert out["estimate"] == 4 and out["text"].startswith("4 tokens") and "1 of 3 censored" in out["text"]


@pytest.fixture(scope="module")
def uncalibrated_run(tmp_path_factory):
    """Strategy runs without controls: nothing to calibrate on."""
    out = tmp_path_factory.mktemp("strategies")
    metrics = write_reports(out, strategy_records(n_problems=4), {"run_name": "strategies"}, [], n_resamples=200)
    return out, metrics


def _table(html: str, table_id: str) -> list[list[str]]:
    match = re.search(rf'<table[^>]*id="{table_id}"[^>]*>(.*?)</table>', html, re.DOTALL)
    assert match, f"table {table_id} missing"
    rows = re.findall(r"<tr>(.*?)</tr>", match.group(1), re.DOTALL)
    return [[re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.DOTALL)]
            for row in rows]


def test_uncalibrated_latencies_render_as_words(uncalibrated_run):
    out, metrics = uncalibrated_run
    html = (out / "report.html").read_text(encoding="utf-8")
    assert 'id="strategies"' in html and 'href="#strategies"' in html
    for condition in ("multi", "multi_retract", "gradual"):
        assert f'id="strategy-{condition}"' in html
        assert re.search(rf'id="fig-strategy-{condition}"[^>]*>\s*<svg', html), condition
        rows = {row[0]: row[1:] for row in _table(html, f"strategy-latencies-{condition}")[1:]}
        for name in ("detection latency", "adaptation latency", "adaptation latency kl"):
            for cell in rows[name]:
                assert cell.startswith("not calibrated:") and not re.search(r"\d+ tokens", cell), (name, cell)
        updates = _table(html, f"strategy-updates-{condition}")[1:]
        assert updates[-1][2:4] == ["3/4", "1"], "the short run's last update is counted as undelivered"
    entry = metrics["strategies"]["multi"]
    assert entry["latencies"]["adaptation_latency"]["calibrated"] is False
    assert entry["latencies"]["adaptation_latency_since_last"]["text"].startswith("not calibrated:")


def test_calibrated_latencies_render_as_numbers(tmp_path):
    records = synthetic_records(n_changed=40, n_identical=0) + strategy_records(n_problems=6)
    metrics = build_metrics(records, {}, [], n_resamples=200)
    entry = metrics["strategies"]["gradual"]
    latency = entry["latencies"]["adaptation_latency"]
    assert latency["calibrated"] and latency["estimate"] == 6 and latency["n"] == 6  # r(t) rises 6 tokens in
    html = render_html(records, metrics)
    rows = {row[0]: row[1:] for row in _table(html, "strategy-latencies-gradual")[1:]}
    assert rows["adaptation latency"][0] == latency["text"] and "of 6 censored" in latency["text"]
    # The findings, read first, carry one sentence per strategy citing the same numbers.
    sentences = {s["condition"]: s for s in metrics["findings"]["strategies"]}
    assert set(sentences) == set(metrics["strategies"])
    gradual = sentences["gradual"]
    assert gradual["cites"]["latency_first"] == latency["estimate"] == 6
    assert gradual["cites"]["gap_last"] == entry["gap_last"]["estimate"]
    assert latency["text"] in gradual["text"] and entry["latencies"]["adaptation_latency_since_last"]["text"] in gradual["text"]
    # A retraction ends with A: its r(t), gap and latencies are 0 by construction, and the findings
    # say so instead of citing them, giving KL(run || P_ignore) after each update beside noise's.
    retract = sentences["multi_retract"]
    assert retract["degenerate_references"] and "say nothing" in retract["text"]
    assert "nats" not in retract["text"].split("How far")[0] and "noise, content-free text" in retract["text"]
    noise = metrics["strategies"]["multi_retract"]["noise_kl_ignore"]
    assert noise["n"] == 40 and noise["text"] in retract["text"]
    assert set(retract["cites"]) == {"kl_ignore_since_update_1", "kl_ignore_since_update_2"}
    findings = html[html.index('id="findings"'):html.index('id="calibration"')]
    assert 'class="findings strategy-findings"' in findings and "gradual (6 runs on changed problems" in findings


def test_no_section_without_strategy_records():
    records = synthetic_records(n_changed=12, n_identical=2)
    metrics = build_metrics(records, {}, [], n_resamples=200)
    assert metrics["strategies"] == {} and metrics["findings"]["strategies"] == []
    html = render_html(records, metrics)
    assert 'id="strategies"' not in html and "#strategies" not in html and "strategy" not in html
    assert strategies_section(records) == {}


def test_metrics_strategies_round_trip_through_json(uncalibrated_run, helpers):
    out, metrics = uncalibrated_run
    saved = helpers.strict_json(out / "metrics.json")
    assert saved["strategies"] == metrics["strategies"]
    assert json.loads(json.dumps(metrics["strategies"], allow_nan=False)) == metrics["strategies"]
    curve = saved["strategies"]["gradual"]["updates"][2]["curves"]["kl_matched"]
    assert len(curve["x"]) == len(curve["mean"]) == len(curve["ci_low"]) == len(curve["n"])
    assert None in curve["mean"] and all(isinstance(v, int) for v in curve["n"])  # NaN as null, counts as ints


def test_update_texts_are_escaped(helpers):
    records = strategy_records(n_problems=3, strategies=("multi",))
    for r in records:
        r.schedule[1].text = f"Correction: {helpers.XSS}\n"
    html = render_html(records, build_metrics(records, {}, [], n_resamples=50))
    assert helpers.XSS not in html and "&lt;script&gt;alert(1)&lt;/script&gt;⏎" in html
