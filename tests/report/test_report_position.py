"""The By-position section and the notes split through the whole report: metrics.json, the
findings text, report.html and compare-models, on synthetic sweep records calibrated as a real
run's (measure.report.position)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from report_synthetic import N_GEN, SWITCH, _record

from measure.records import RUN_FILE, SAMPLES_FILE
from measure.records.record import as_records
from measure.records.store import write_records
from measure.report.compare_models import compare_models
from measure.report.compare_models_html import render_comparison
from measure.report.findings import findings_text
from measure.report.html import render_html
from measure.report.summary import build_metrics

POINTS = ("f0.1", "f0.5", "f0.9")
TEST_RESAMPLES = 200


def sweep(n_changed=24, n_identical=6, seed=0, stale_slope=4.0):
    """Per point: noise and repeat controls, injection and flush runs that favour B from SWITCH
    tokens after the change; a run is stale with a probability rising with the position and has
    its notes flag set when stale (a planted notes effect)."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n_changed + n_identical):
        pid = f"p{i:03d}"
        vt = "single_number" if i < n_changed else None
        records.append(_record(pid, "ignore", "-", 0, -np.abs(rng.normal(0, 0.3, N_GEN)), vt, "stale", 0.0))
        records.append(_record(pid, "oracle", "-", 0, np.abs(rng.normal(0, 0.3, N_GEN)), vt, "adapted", 0.0))
        for point in POINTS:
            position = float(point[1:])
            t0 = max(1, int(position * 24))
            n_after = N_GEN - t0
            for condition in ("noise", "repeat"):
                records.append(_record(pid, condition, point, t0, rng.normal(-0.1, 0.3, n_after), vt, "stale", 0.5))
            for condition in ("injection", "flush"):
                stale = bool(rng.random() < 1 / (1 + np.exp(-(-2.0 + stale_slope * position))))
                after = -np.abs(rng.normal(0, 0.3, n_after))
                if not stale:
                    after[SWITCH - 1:] = 3.0 + rng.normal(0, 0.2, n_after - SWITCH + 1)
                record = _record(pid, condition, point, t0, after, vt, "stale" if stale else "adapted", 0.1)
                record["notes_before_change"] = stale
                records.append(record)
    return as_records(records)


@pytest.fixture(scope="module")
def metrics_and_records():
    records = sweep()
    return build_metrics(records, {"run_name": "sweep-test"}, n_resamples=TEST_RESAMPLES), records


def test_metrics_carry_the_section_and_a_planted_trend(metrics_and_records):
    metrics, _ = metrics_and_records
    section = metrics["by_position"]
    assert section["available"] and section["points"] == list(POINTS)
    assert section["conditions"] == ["injection", "flush", "repeat", "noise"]
    trend = next(t for t in section["trends"] if (t["condition"], t["response"]) == ("injection", "stale"))
    assert trend["trend"]["terms"]["position"]["coef"] > 0
    json.dumps(metrics, allow_nan=False)


def test_findings_state_the_trend_and_the_notes_split(metrics_and_records):
    metrics, _ = metrics_and_records
    findings = metrics["findings"]
    sentences = {s["condition"]: s for s in findings["by_position"]["sentences"]}
    assert "trend in stale: GEE odds ratio f0.1 to f0.9" in sentences["injection"]["text"]
    assert "within-problem permutation p" in sentences["injection"]["text"]
    assert sentences["injection"]["direction"]["stale"] in ("later worse", "none detected")
    notes = [s for s in findings["notes"] if s["condition"] == "injection" and "point" in s]
    assert notes and all("0 of" in s["text"] for s in notes)  # notes set exactly when stale: none adapted
    text = findings_text(findings)
    assert "By position" in text and "Notes written before the change" in text


def test_the_report_page_shows_the_section_and_its_figure(metrics_and_records):
    metrics, records = metrics_and_records
    page = render_html(records, metrics)
    assert 'id="by-position"' in page and 'id="fig-position"' in page and 'id="notes-split"' in page
    block = page[page.index('id="by-position"'):page.index('id="cannot-say"')]
    assert "<svg" in block and "flush" in block


def test_a_run_at_one_point_has_no_section_but_keeps_the_notes_split(metrics_and_records):
    _, records = metrics_and_records
    one_point = [r for r in copy.deepcopy(records) if r.point in ("-", "f0.5")]
    metrics = build_metrics(one_point, {}, n_resamples=TEST_RESAMPLES)
    assert not metrics["by_position"]["available"]
    assert metrics["findings"]["by_position"]["sentences"] == []
    page = render_html(one_point, metrics)
    assert 'id="by-position"' not in page and 'id="notes-split"' in page


def test_records_without_the_flag_read_as_unknown(metrics_and_records):
    _, records = metrics_and_records
    old = copy.deepcopy(records)
    for record in old:
        record.notes_before_change = None
    metrics = build_metrics(old, {}, n_resamples=TEST_RESAMPLES)
    assert metrics["findings"]["notes"] == []
    assert metrics["by_position"]["notes_unknown_runs"] == sum(
        1 for r in old if r.condition not in ("ignore", "oracle") and r.variation_type is not None)
    trend = metrics["by_position"]["trends"][0]
    assert trend["with_notes"]["terms"] == {} and trend["with_notes"]["n_runs"] == 0


def _run_folder(folder, name, records):
    folder.mkdir(parents=True)
    write_records(folder / SAMPLES_FILE, records)
    (folder / RUN_FILE).write_text(json.dumps({"model": {"name": name}, "settings": {"points": list(POINTS)}}))
    return folder


def test_compare_models_puts_the_sections_side_by_side(tmp_path, metrics_and_records):
    _, records = metrics_and_records
    a = _run_folder(tmp_path / "a", "model-a", records)
    b = _run_folder(tmp_path / "b", "model-b", sweep(seed=1, stale_slope=0.0))
    result = compare_models([a, b])
    side = result["by_position"]
    assert side["models"] == ["model-a", "model-b"]
    row = next(r for r in side["rows"] if (r["condition"], r["point"]) == ("injection", "f0.9"))
    assert set(row["models"]) == {"model-a", "model-b"}
    page = render_comparison(result)
    assert 'id="by-position"' in page and page.count('class="figure"') >= 2


def test_compare_models_without_a_sweep_has_no_section(tmp_path, metrics_and_records):
    _, records = metrics_and_records
    one_point = [r for r in records if r.point in ("-", "f0.5")]
    result = compare_models([_run_folder(tmp_path / "a", "model-a", one_point),
                             _run_folder(tmp_path / "b", "model-b", one_point)])
    assert result["by_position"] is None and 'id="by-position"' not in render_comparison(result)


def test_real_records_carry_the_notes_flag(session_records):
    """problem_records (tiny model, real engine) writes the flag: None for the references, for every
    other run the flag of the text it generated before the change."""
    from measure.data import load_pairs
    from measure.metrics.notes import notes_before_change
    from measure.model.load import load_model

    tokenizer = load_model("tiny:llama").tokenizer
    pairs = {pair.id: pair for pair in load_pairs("builtin", limit=3)}
    checked = 0
    for record in session_records:
        flag = record.notes_before_change
        if record.condition in ("ignore", "oracle"):
            assert flag is None
            continue
        before = tokenizer.decode(record.tokens.generated[:record.t0], skip_special_tokens=True)
        assert flag is notes_before_change(pairs[record.problem_id], before)
        checked += 1
    assert checked > 0
