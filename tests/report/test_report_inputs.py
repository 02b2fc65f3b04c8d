"""The report's compact reader: the same metrics.json as from the records in full, with the arrays
it never reads left on disk."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from measure.records import columnar
from measure.records.columnar import read_samples, write_group_arrays
from measure.records.record import Record, as_dict
from measure.records.store import RecordStore, read_store
from measure.report.html import render_html
from measure.report.inputs import REPORT_COLUMNS, compact_record, read_report_records
from measure.report.summary import build_metrics
from tests.report.conftest import add_attention

BASELINE = Path(__file__).resolve().parents[2] / "reports" / "baselines" / "smollm2"
LAYERS = 4


def _with_everything(records: list[Record]) -> list[Record]:
    """The baseline's records (24 tokens, no attention, no hidden states) with what a default run
    adds: attention grids over four spans, per-layer hidden-state cosines as curves and metrics."""
    records = add_attention(records, layers=LAYERS)
    rng = np.random.default_rng(1)
    for record in records:
        n = len(record.tokens.generated)
        record.arrays.hidden_cosine_layers = {"oracle": rng.uniform(0.5, 1, LAYERS + 1).tolist()}
        record.arrays.attention_layers_heads = {"inserted": rng.uniform(0, 1, (LAYERS, 3)).tolist()}
        record.arrays.js = {"oracle": rng.uniform(0, 1, n).tolist()}
        for layer in range(LAYERS + 1):
            record.metrics[f"hidden_cos_oracle_L{layer}_all"] = float(rng.uniform(0.5, 1))
    return records


def _write(folder: Path, records: list[Record], layout: int) -> Path:
    folder.mkdir()
    store = RecordStore(folder / "samples.jsonl")
    for start in range(0, len(records), 21):
        group = [as_dict(r) for r in records[start:start + 21]]  # as stored lines, which the writer takes
        for record in (write_group_arrays(folder, group) if layout == 2 else group):
            store.append(record)
    return folder / "samples.jsonl"


@pytest.fixture(scope="module")
def baseline_records() -> list[Record]:
    records, _ = read_store(BASELINE / "samples.jsonl", typed=True)
    return _with_everything(records)


@pytest.mark.parametrize("layout", [1, 2])
def test_compact_records_give_the_same_metrics_as_full_ones(tmp_path, baseline_records, layout):
    samples = _write(tmp_path / "run", baseline_records, layout)
    full, _ = read_samples(samples, typed=True)
    compact, warnings = read_report_records(samples)
    assert warnings == [] and len(compact) == len(full) == 280
    # what the report reads is there, and only that
    first = next(r for r in compact if r.condition == "injection")
    assert set(first.arrays.kl) == {"oracle", "ignore", "matched"}
    assert set(first.arrays.logprob_ref) == {"oracle", "ignore"}
    assert set(first.arrays.attention_layers_tokens) == {"inserted"}
    assert first.arrays.attention_layers_tokens["inserted"].dtype == np.float32
    assert not first.arrays.js and not first.arrays.hidden_cosine_layers
    assert first.arrays.attention_layers_heads is None and first.arrays.logprob_run is None
    assert not any(name.startswith("hidden_cos_oracle_L") for name in first.metrics)
    n_resamples = 200
    assert (json.dumps(build_metrics(compact, n_resamples=n_resamples), sort_keys=True)
            == json.dumps(build_metrics(full, n_resamples=n_resamples), sort_keys=True))
    # the page renders from the compact records, attention heatmap included
    page = render_html(compact, build_metrics(compact, n_resamples=n_resamples))
    assert "attention" in page.lower() and "<svg" in page


def test_only_the_report_columns_are_read_from_the_columnar_files(tmp_path, baseline_records, monkeypatch):
    samples = _write(tmp_path / "run", baseline_records, 2)
    asked: list = []
    read_table = columnar.pq.read_table

    def spy(path, *args, columns=None, **kwargs):
        asked.append(columns)
        return read_table(path, *args, columns=columns, **kwargs)

    monkeypatch.setattr(columnar.pq, "read_table", spy)
    read_report_records(samples)
    assert len(asked) == 280 // 21 + 1  # one read per group file
    for columns in asked:
        assert columns is not None and set(columns) <= {"key"} | REPORT_COLUMNS
        assert "attention_layers_tokens:inserted" in columns and "attention_layers_heads:inserted" not in columns


def test_compact_record_shares_metric_names_and_drops_the_prompt_tokens(baseline_records):
    a, b = (compact_record(json.loads(json.dumps(as_dict(r)))) for r in baseline_records[:2])
    assert list(a.metrics) == list(b.metrics)  # the same metrics, in the same order
    assert all(name_a is name_b for name_a, name_b in zip(a.metrics, b.metrics))  # one copy of each name
    assert not hasattr(a.tokens, "prompt") and not hasattr(a.tokens, "inserted")  # never read: not kept
    assert a.tokens.generated.tolist() == baseline_records[0].tokens.generated
    assert isinstance(a.arrays.kl["oracle"], np.ndarray)


def test_the_page_from_compact_records_equals_the_page_from_full_ones(tmp_path, baseline_records):
    samples = _write(tmp_path / "run", baseline_records, 2)
    full, _ = read_samples(samples, typed=True)
    compact, _ = read_report_records(samples)
    metrics = build_metrics(full, n_resamples=100)
    # token strips, curves, attention heatmap (float32 as stored, so the same means)
    assert _stable(render_html(compact, metrics)) == _stable(render_html(full, metrics))


def _stable(page: str) -> str:
    """The page without what differs between two renderings of the same data: the time it was
    rendered and matplotlib's random ids of SVG elements (numbered in order of appearance)."""
    page = re.sub(r"Rendered [0-9-]+ [0-9:]+ UTC", "Rendered", page)
    page = re.sub(r"<dc:date>[^<]*</dc:date>", "", page)
    ids: dict[str, str] = {}
    page = re.sub(r"\bimage[0-9a-f]+\b", "image", page)
    return re.sub(r"\b(m|p|c)[0-9a-f]{8,}\b", lambda m: ids.setdefault(m.group(0), f"id{len(ids)}"), page)


def _close(a, b, path: str = "") -> list[str]:
    """Where two metrics.json trees differ: floats beyond 1e-9 (relative or absolute), anything else unequal."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _close(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _close(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float):
        return [] if abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b)) else [f"{path}: {a} != {b}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def test_the_committed_baseline_renders_to_its_committed_metrics(tmp_path):
    """`measure report` through the compact reader gives the baseline's committed metrics.json field by field
    (within 1e-9), provenance and warnings aside. A change of the analysis that moves a number fails here
    until the baseline is re-rendered, on purpose."""
    from measure.report.summary import render_from_dir

    folder = tmp_path / "baseline"
    folder.mkdir()
    for name in ("samples.jsonl", "run.json"):
        (folder / name).write_bytes((BASELINE / name).read_bytes())
    rendered = render_from_dir(folder)
    committed = json.loads((BASELINE / "metrics.json").read_text())
    for metrics in (rendered, committed):
        metrics.pop("provenance"), metrics.pop("warnings")
    assert _close(json.loads(json.dumps(rendered)), committed) == []


def test_only_the_shown_strips_keep_their_tokens_and_the_latest_record_of_a_key_wins(tmp_path, baseline_records):
    from measure.report.inputs import MAX_STRIPS, strip_order

    records = [r.model_copy(deep=True) for r in baseline_records]
    first = min((r for r in records if r.condition not in ("ignore", "oracle")), key=strip_order)
    again = first.model_copy(deep=True)  # the same key measured again later (a resumed run)
    again.texts.generated_pieces = ["again"] * len(again.texts.generated_pieces)
    samples = _write(tmp_path / "run", [*records, again], 1)
    compact, _ = read_report_records(samples)
    with_tokens = [r for r in compact if r.tokens is not None]
    runs = sorted({r.key: r for r in records if r.condition not in ("ignore", "oracle")}.values(), key=strip_order)
    assert [r.key for r in sorted(with_tokens, key=strip_order)] == [r.key for r in runs[:MAX_STRIPS]]
    kept = next(r for r in with_tokens if r.key == first.key)
    assert kept.texts.generated_pieces[0] == "again"  # the latest of the two
    assert all(r.texts.generated_pieces is None for r in compact if r.tokens is None)
    assert sum(r.tokens is None for r in compact) == len(compact) - MAX_STRIPS


def test_one_group_file_of_arrays_is_alive_at_a_time(tmp_path, baseline_records, monkeypatch):
    """The lists a columnar file is read into (every array of its records) are dropped before the
    next file is read: what stays is each record's compact arrays, not the group's."""
    import gc
    import weakref

    samples = _write(tmp_path / "run", baseline_records, 2)
    read_file = columnar.read_arrays_file
    alive: list[weakref.ref] = []
    most = 0

    class Tracked(dict):  # a dict that weakref can follow
        pass

    def tracked(path, columns=None):
        nonlocal most
        gc.collect()
        most = max(most, sum(ref() is not None for ref in alive))
        arrays = {key: (Tracked(values), layers) for key, (values, layers) in read_file(path, columns).items()}
        alive.extend(weakref.ref(values) for values, _ in arrays.values())
        return arrays

    monkeypatch.setattr(columnar, "read_arrays_file", tracked)
    records, _ = read_report_records(samples)
    assert len(records) == 280 and len(alive) == 280
    assert most <= 21  # at most one group's records (21 per file here) when the next file is read
