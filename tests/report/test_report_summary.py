"""metrics.json: sections, counts, dedup, checks maxima, NaN safety, re-rendering from a directory."""

from __future__ import annotations

import json
import math

import pytest

from measure.records.store import RecordStore
from measure.report.summary import build_metrics, render_from_dir, write_reports


def test_write_reports_writes_both_files_and_returns_metrics(report_dir, session_records, helpers):
    metrics = helpers.strict_json(report_dir / "metrics.json")
    assert (report_dir / "report.html").stat().st_size > 10_000
    assert metrics["provenance"] == helpers.PROVENANCE
    assert metrics["counts"]["records"] == len(session_records) == 36
    assert metrics["counts"]["problems"] == 3
    assert metrics["counts"]["per_condition_point"]["injection/t4"] == 3
    assert metrics["counts"]["skipped_points"] == 1 and metrics["skipped"][0]["point"] == "f0.9"
    assert metrics["settings"]["n_resamples"] == helpers.RESAMPLES


def test_aggregate_tables_cover_condition_variation_point(report_dir, session_records, helpers):
    metrics = helpers.strict_json(report_dir / "metrics.json")
    groups = {(r["condition"], r["variation_type"], r["point"]) for r in metrics["aggregate"]}
    expected = {(r.condition, r.variation_type, r.point) for r in session_records}
    assert groups == expected
    lat = [r for r in metrics["aggregate"] if r["metric"] == "adaptation_latency"]
    assert lat and all(r["aggregation"] == "km_median" and "share_censored" in r for r in lat)
    pooled = {(r["condition"], r["point"]) for r in metrics["aggregate_pooled"]}
    assert pooled == {(r.condition, r.point) for r in session_records}
    outcome = [r for r in metrics["aggregate_pooled"] if r["metric"] == "outcome_adapted"]
    assert outcome and all(r["aggregation"] == "rate" and r["n"] == 3 for r in outcome)


def test_paired_comparisons_are_the_declared_pairs(report_dir, helpers):
    from measure.report.summary import PAIRED_COMPARISONS

    metrics = helpers.strict_json(report_dir / "metrics.json")
    pairs = {(r["condition"], r["baseline"]) for r in metrics["paired_pooled"] if r["metric"] == "adaptation_gap"}
    assert pairs == set(PAIRED_COMPARISONS)
    assert not any(r["condition"] in ("ignore", "oracle", r["baseline"]) for r in metrics["paired"])
    # uncalibrated latencies (3 problems) have no complete pair: no rows rather than empty tests
    assert not any(r["metric"] == "adaptation_latency" for r in metrics["paired_pooled"])
    row = next(r for r in metrics["paired_pooled"]
               if (r["baseline"], r["condition"], r["metric"], r["point"]) == ("noise", "injection", "kl_matched_short", "t4"))
    assert row["n"] == 3 and "wilcoxon_p_holm" in row


def test_check_maxima_name_the_worst_record(report_dir, session_records, helpers):
    checks = helpers.strict_json(report_dir / "metrics.json")["checks"]
    names = {name for r in session_records for name in r.checks}
    assert set(checks) == names
    for name, entry in checks.items():
        values = [(r.checks[name], r.key) for r in session_records if r.checks.get(name) is not None]
        assert entry["max"] == max(v for v, _ in values)
        assert entry["key"] == max(values)[1] or any(v == entry["max"] and k == entry["key"] for v, k in values)
        assert entry["n"] == len(values)


def test_last_record_per_key_wins(fresh_records, helpers):
    again = fresh_records[5].model_copy(deep=True)
    again.metrics["kl_oracle_short"] = 123.0
    metrics = build_metrics([*fresh_records, again], n_resamples=helpers.RESAMPLES)
    assert metrics["counts"]["duplicates_replaced"] == 1
    assert metrics["counts"]["records"] == len(fresh_records)
    row = next(r for r in metrics["aggregate"] if r["metric"] == "kl_oracle_short"
               and (r["condition"], r["variation_type"], r["point"])
               == (again.condition, again.variation_type, again.point))
    assert row["estimate"] == 123.0


def test_no_nan_or_infinity_in_metrics_json(fresh_records, tmp_path, helpers):
    fresh_records[0].metrics["kl_oracle_short"] = math.nan
    fresh_records[1].metrics["kl_oracle_short"] = math.inf
    fresh_records[2].checks["decode_vs_recompute_max_abs_logprob"] = None
    skipped = [("t8", "too short"), ("p1", "f0.9", "ignore run ended")]
    metrics = write_reports(tmp_path, fresh_records, {"x": math.nan}, skipped, n_resamples=helpers.RESAMPLES)
    text = (tmp_path / "metrics.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    helpers.strict_json(tmp_path / "metrics.json")
    assert metrics["provenance"] == {"x": None}
    assert metrics["skipped"] == [{"point": "t8", "reason": "too short"},
                                  {"problem_id": "p1", "point": "f0.9", "reason": "ignore run ended"}]
    assert metrics["checks"]["decode_vs_recompute_max_abs_logprob"]["n_missing"] == 1


def test_empty_run_still_writes_reports(tmp_path):
    metrics = write_reports(tmp_path, [], {"model": "m"}, [])
    assert metrics["counts"]["records"] == 0 and metrics["aggregate"] == []
    assert "No records" in (tmp_path / "report.html").read_text()


def test_render_from_dir_uses_saved_provenance(report_dir, tmp_path, helpers):
    run = helpers.copy_run(report_dir, tmp_path / "run")
    (run / "report.html").unlink()
    before = helpers.strict_json(run / "metrics.json")
    metrics = render_from_dir(run, n_resamples=helpers.RESAMPLES)
    assert (run / "report.html").exists()
    assert metrics["provenance"] == helpers.PROVENANCE
    assert metrics["skipped"] == before["skipped"]
    assert metrics["aggregate"] == before["aggregate"]  # seeded bootstrap: same numbers
    assert "report-test" in (run / "report.html").read_text()


def test_render_from_dir_prefers_run_json_and_reports_torn_line(report_dir, tmp_path, helpers):
    run = helpers.copy_run(report_dir, tmp_path / "run")
    (run / "run.json").write_text(json.dumps({"provenance": {"model": "from-run-json"}, "skipped": []}))
    with open(run / "samples.jsonl", "a") as handle:
        handle.write('{"key": "torn')
    metrics = render_from_dir(run, n_resamples=helpers.RESAMPLES)
    assert metrics["provenance"] == {"model": "from-run-json"}
    assert any("truncated" in w for w in metrics["warnings"])
    assert "truncated" in (run / "report.html").read_text()


def test_render_from_dir_without_provenance_says_so(session_records, tmp_path, helpers):
    store = RecordStore(tmp_path / "samples.jsonl")
    for r in session_records[:6]:
        store.append(r)
    metrics = render_from_dir(tmp_path, n_resamples=helpers.RESAMPLES)
    assert metrics["provenance"] == {}
    assert any("provenance unknown" in w for w in metrics["warnings"])


def test_records_carry_kl_oracle_ignore_and_their_observability(session_records):
    """Every record of a real (tiny) model carries KL(P_oracle || P_ignore) per generated token; a
    run's observability is its sum after the change; identical-problem runs have none to observe."""
    from measure.analysis.calibrated import calibrated_records

    unique, _ = calibrated_records(session_records)
    for record in unique:
        values = record.arrays.kl_oracle_ignore
        assert len(values) == len(record.tokens.generated)
        assert all(v is not None and v >= -1e-6 for v in values)
        if record.point != "-":
            assert record.metrics["observability"] == pytest.approx(sum(values[record.t0:]), abs=1e-9)
