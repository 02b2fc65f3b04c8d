"""What the report reads of a run's records: read group by group, held compactly.

A record as stored holds every per-token array the engine measured (attention grids over four
spans, hidden-state cosines per layer) and several hundred scalar metrics, most of them per layer.
The report reads a few of them. Reading every record in full made the report's memory grow by
about 0.13 GB per 378 records (the default run): a study of tens of thousands of records did not
fit a 24 GB machine. This reader keeps what the report reads, nothing else:

- the arrays of :data:`REPORT_COLUMNS` only, read from the columnar files column by column (the
  other columns are never loaded), one problem group's file at a time; curves as float64 numpy
  arrays, the attention grid onto the inserted span as float32 (the precision it is stored in);
- the scalar metrics without the per-layer hidden-state cosines (``hidden_cos_<ref>_L<n>_*``),
  which no table of the report aggregates (``measure.analysis.stats.metric_columns``), with metric
  names shared between records instead of one copy per record;
- the generated token ids (as an integer array) and text pieces only of the records the page shows
  as token strips (:func:`strip_order`, the first :data:`MAX_STRIPS`), kept while reading;
  the prompt's token ids of none.

``measure report`` on the full and on the compact records writes the same ``metrics.json``
(tests/report/test_report_inputs.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from measure.engine.results import REFERENCE_RUNS
from measure.records.columnar import LAYER_METRIC, iter_samples
from measure.records.curves import as_curve, as_grid
from measure.report.format import condition_sort_key, point_sort_key

#: The array columns (names as in the columnar files) the report, its figures and its
#: calibration read: r(t) and the token strips from the references' log-probabilities, the KL
#: curves, the observability curve, the attention heatmap.
REPORT_COLUMNS = frozenset({
    "logprob_ref:oracle", "logprob_ref:ignore", "kl:oracle", "kl:ignore", "kl:matched", "kl_oracle_ignore",
    "attention_layers_tokens:inserted",
})
MAX_STRIPS = 24  # runs shown token by token on the page

#: What ``measure compare-models`` reads besides: the attention onto the inserted span per layer and head.
COMPARE_MODELS_COLUMNS = REPORT_COLUMNS | {"attention_layers_heads:inserted"}
_GRIDS = ("attention_layers_tokens", "attention_layers_heads")


def _compact_arrays(arrays: dict) -> dict:
    out: dict = {}
    for group, value in arrays.items():
        if isinstance(value, dict):
            as_array = (lambda v: as_grid(v, np.float32)) if group in _GRIDS else as_curve
            out[group] = {name: None if values is None else as_array(values) for name, values in value.items()}
        else:
            out[group] = None if value is None else as_curve(value)
    return out


def compact_record(record: dict) -> dict:
    """``record`` with only what the report reads (see the module docstring)."""
    compact = dict(record)
    if record.get("arrays") is not None:
        compact["arrays"] = _compact_arrays(record["arrays"])
    metrics = record.get("metrics")
    if isinstance(metrics, dict):
        compact["metrics"] = {sys.intern(name): value for name, value in metrics.items()
                              if not LAYER_METRIC.match(name)}
    tokens = record.get("tokens")
    if isinstance(tokens, dict):
        generated = tokens.get("generated")
        compact["tokens"] = {"generated": None if generated is None else np.asarray(generated, dtype=np.int64)}
    return compact


def strip_order(record: dict) -> tuple:
    """The order of the runs shown as token strips: problem by problem, then point, then condition."""
    return (str(record.get("problem_id")), point_sort_key(record.get("point")), condition_sort_key(record.get("condition")))


def _without_strip(record: dict) -> None:
    """Drop what only a token strip reads: the generated token ids and text pieces."""
    if isinstance(record.get("tokens"), dict):
        record["tokens"] = {"generated": None}
    if isinstance(record.get("texts"), dict):
        record["texts"] = {name: text for name, text in record["texts"].items() if name != "generated_pieces"}


def read_report_records(samples: str | Path, columns: frozenset[str] = REPORT_COLUMNS) -> tuple[list[dict], list[str]]:
    """The records of ``samples`` (a samples.jsonl, either layout) as the report reads them (the
    arrays of ``columns``), and the reader's warnings (a torn last line dropped)."""
    warnings: list[str] = []
    records: list[dict] = []
    shown: dict[str, dict] = {}  # key -> record: the first MAX_STRIPS runs by strip_order so far, the latest of a key
    for record in iter_samples(samples, warnings, columns=columns):
        compact = compact_record(record)
        records.append(compact)
        if compact.get("condition") in REFERENCE_RUNS:
            _without_strip(compact)
            continue
        key = str(compact.get("key"))
        if key in shown:
            _without_strip(shown[key])
        shown[key] = compact
        if len(shown) > MAX_STRIPS:
            _without_strip(shown.pop(max(shown, key=lambda k: strip_order(shown[k]))))
    return records, warnings
