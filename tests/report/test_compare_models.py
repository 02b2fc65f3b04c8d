"""measure compare-models on fixture runs: two synthetic "models" on the same 48 problems (one
adapting faster, with a larger adaptation gap, and different depths), the paired tests, the
relative-depth attention profile, the self-contained page, and the refusals that name the field."""

from __future__ import annotations

import json

import numpy as np
import pytest
from report_synthetic import synthetic_records

from measure.cli import main
from measure.records import RUN_FILE, SAMPLES_FILE
from measure.records.store import write_records
from measure.report.compare_models import (
    HTML_FILE,
    JSON_FILE,
    PAIRING_FIELDS,
    CompareModelsError,
    compare_models,
)

SETTINGS = {"dataset": "builtin", "limit": 24, "variation_types": None, "max_new_tokens": 40, "points": ["8"],
            "conditions": ["ignore", "oracle", "injection", "flush", "partial", "noise", "repeat"],
            "temperature": 0.0, "seed": 0, "update_form": "erratum", "partial_recompute_last": 1, "alpha": 0.05,
            "batch_size": 64}


def make_run(folder, name: str, layers: int, gap_offset: float, seed: int, settings=None, drop=()):
    records = [r for r in synthetic_records(n_changed=40, n_identical=8, seed=seed) if r.problem_id not in drop]
    for record in records:
        if record.condition in ("injection", "flush", "partial"):
            record.metrics["adaptation_gap"] += gap_offset
        if record.condition in ("injection", "noise", "repeat"):
            # Mass onto the inserted text rising with depth: (layers, heads=2).
            record.arrays.attention_layers_heads = {
                "inserted": [[0.1 + 0.3 * layer / (layers - 1)] * 2 for layer in range(layers)]}
    folder.mkdir(parents=True)
    write_records(folder / SAMPLES_FILE, records)
    (folder / RUN_FILE).write_text(json.dumps({
        "model": {"name": name, "architecture": f"{name}Arch", "weights_sha256": "0" * 64},
        "prompt_style": "raw" if "base" in name else "chat",
        "settings": {**SETTINGS, **(settings or {}), "model": name}}))
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("xmodel")
    return (make_run(root / "a", "model-instruct", 4, 0.0, seed=0),
            make_run(root / "b", "model-base", 6, 0.3, seed=1, settings={"batch_size": 8}))


@pytest.fixture(scope="module")
def result(runs):
    return compare_models(list(runs))


def test_cells_per_condition_and_point_for_each_model(result):
    labels = [m["label"] for m in result["models"]]
    assert labels == ["model-instruct", "model-base"]
    assert [m["prompt_style"] for m in result["models"]] == ["chat", "raw"]
    injection = result["cells"]["injection @ t8"]["models"]
    a, b = injection["model-instruct"], injection["model-base"]
    assert a["n"] == b["n"] == 48
    # The planted offset: the second model's gap is 0.3 nats larger.
    assert b["adaptation_gap"]["estimate"] - a["adaptation_gap"]["estimate"] == pytest.approx(0.3, abs=0.03)
    assert a["adaptation_gap"]["ci_low"] < a["adaptation_gap"]["estimate"] < a["adaptation_gap"]["ci_high"]
    # Calibrated latencies: injection runs favour B from token 6 on, so the median is reached.
    latency = a["latencies"]["adaptation_latency"]
    assert latency["calibrated"] and latency["median_reached"] and 4 <= latency["estimate"] <= 12
    assert len(a["curve_kl_matched"]) == 32


def test_attention_profile_on_relative_depth(result):
    cell = result["cells"]["injection @ t8"]["models"]
    four, six = cell["model-instruct"]["attention_inserted_by_depth"], cell["model-base"]["attention_inserted_by_depth"]
    assert len(four["depth"]) == 4 and len(six["depth"]) == 6
    assert four["depth"][0] == 0.0 and four["depth"][-1] == six["depth"][-1] == 1.0
    # Same planted profile over relative depth: equal at both ends whatever the layer count.
    assert np.allclose([four["mass"][0], four["mass"][-1]], [0.1, 0.4])
    assert np.allclose([six["mass"][0], six["mass"][-1]], [0.1, 0.4])
    assert result["cells"]["flush @ t8"]["models"]["model-instruct"]["attention_inserted_by_depth"] is None


def test_paired_wilcoxon_holm(result):
    rows = {(r["condition"], r["metric"]): r for r in result["paired"]}
    gap = rows[("injection", "adaptation_gap")]
    assert gap["n_shared_problems"] == 48 and gap["n"] == 48
    assert gap["mean_diff"] == pytest.approx(-0.3, abs=0.03)
    assert gap["wilcoxon_p_holm"] < 0.01 and gap["wilcoxon_p_holm"] >= gap["wilcoxon_p"]
    noise = rows[("noise", "adaptation_gap")]
    assert noise["mean_diff"] == pytest.approx(0.0, abs=1e-12)  # no offset planted on controls
    assert ("flush", "attention_inserted_all") not in rows


@pytest.fixture(scope="module")
def written(runs, tmp_path_factory):
    """The command line run once (rendering the figures takes seconds): its output and folder."""
    out = tmp_path_factory.mktemp("cli") / "out"
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(["compare-models", str(runs[0]), str(runs[1]), "--out", str(out)]) == 0
    return buffer.getvalue(), out


def test_cli_prints_headline_and_paths(written):
    printed, out = written
    assert "injection @ t8: model-instruct: gap" in printed and str(out / HTML_FILE) in printed


def test_writes_self_contained_html_and_json(written):
    _, out = written
    data = json.loads((out / JSON_FILE).read_text())
    assert set(data) >= {"models", "settings", "cells", "paired", "method"}
    html = (out / HTML_FILE).read_text()
    assert html.count("<svg") == 3
    # Nothing fetched: no scripts, stylesheets, images or fonts from elsewhere (the SVG metadata
    # names its namespaces by URL, which browsers never fetch).
    for pattern in ("<script", 'src="http', "<link rel=\"stylesheet", "url(http", "@import"):
        assert pattern not in html, pattern
    assert "model-instruct" in html and "model-base" in html and "Holm" in html


@pytest.mark.parametrize("field", ["max_new_tokens", "points", "dataset", "update_form"])
def test_refuses_settings_that_break_pairing(runs, tmp_path, field):
    assert field in PAIRING_FIELDS
    changed = {"max_new_tokens": 64, "points": ["16"], "dataset": "svamp", "update_form": "restatement"}[field]
    other = make_run(tmp_path / field, "model-other", 4, 0.0, seed=2, settings={field: changed})
    with pytest.raises(CompareModelsError, match=f"setting '{field}' differs"):
        compare_models([runs[0], other])


def test_refuses_different_problem_sets_and_problems(runs, tmp_path, capsys):
    fewer = make_run(tmp_path / "fewer", "model-fewer", 4, 0.0, seed=0, drop=("p003",))
    with pytest.raises(CompareModelsError, match="problem_id sets differ: 1 only in .*p003"):
        compare_models([runs[0], fewer])
    other = make_run(tmp_path / "other", "model-other", 4, 0.0, seed=0)
    lines = (other / SAMPLES_FILE).read_text().splitlines()
    edited = [json.loads(line) for line in lines]
    for record in edited:
        if record["problem_id"] == "p005":
            record["answer_b"] = "99"
    write_records(other / SAMPLES_FILE, edited)
    with pytest.raises(CompareModelsError, match="problem p005: field 'answer_b'"):
        compare_models([runs[0], other])
    assert main(["compare-models", str(runs[0]), str(fewer), "--out", str(tmp_path / "no")]) == 2
    assert "problem_id sets differ" in capsys.readouterr().err


def test_needs_run_folders(runs, tmp_path):
    with pytest.raises(CompareModelsError, match="at least two"):
        compare_models([runs[0]])
    with pytest.raises(CompareModelsError, match="not a run folder"):
        compare_models([runs[0], tmp_path])
    records_only = tmp_path / "records-only"
    records_only.mkdir()
    (records_only / SAMPLES_FILE).write_text((runs[0] / SAMPLES_FILE).read_text())
    with pytest.raises(CompareModelsError, match="no run.json"):
        compare_models([runs[0], records_only])
