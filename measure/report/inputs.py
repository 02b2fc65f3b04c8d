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
- each record as a :class:`measure.records.record.Record`, its arrays numpy arrays;
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
from measure.records.record import Arrays, Record, Texts, Tokens, Update
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


#: One set of given field names per model and shape of stored line, shared by the records of that
#: shape: pydantic keeps a set per instance (2 KB for a record's two dozen fields), which at 37,000
#: records was 0.15 GB of the report's peak (benchmarks/report_scale.py, 100x).
_FIELDS_SETS: dict[tuple[type, frozenset], set] = {}


def _construct(model, values: dict):
    """``model`` from already validated ``values``, its set of given fields shared (above)."""
    shape = (model, frozenset(values))
    fields_set = _FIELDS_SETS.setdefault(shape, set(values))
    return model.model_construct(_fields_set=fields_set, **values)


def compact_record(record: dict) -> Record:
    """``record`` (a stored line, validated, its arrays attached) as a :class:`Record` holding only
    what the report reads (see the module docstring). Built without validating again: the reader
    validated the line; the arrays it keeps are numpy arrays, not the lists of the stored form."""
    fields = dict(record)
    arrays = record.get("arrays")
    if arrays is not None:
        fields["arrays"] = _construct(Arrays, _compact_arrays(arrays))
    metrics = record.get("metrics")
    fields["metrics"] = {sys.intern(name): value for name, value in (metrics or {}).items()
                         if not LAYER_METRIC.match(name)}
    tokens = record.get("tokens")
    if tokens is not None:  # the prompt's and the inserted ids are not read: left out
        generated = tokens.get("generated")
        fields["tokens"] = _construct(Tokens, {
            "generated": None if generated is None else np.asarray(generated, dtype=np.int64)})
    if record.get("texts") is not None:
        fields["texts"] = _construct(Texts, record["texts"])
    if record.get("schedule") is not None:
        fields["schedule"] = [_construct(Update, update) for update in record["schedule"]]
    return _construct(Record, fields)


def strip_order(record: Record) -> tuple:
    """The order of the runs shown as token strips: problem by problem, then point, then condition."""
    return (str(record.problem_id), point_sort_key(record.point), condition_sort_key(record.condition))


def _without_strip(record: Record) -> None:
    """Drop what only a token strip reads: the generated token ids and text pieces."""
    if record.tokens is not None:
        record.tokens = None
    if record.texts is not None:
        record.texts = _construct(Texts, {**dict(record.texts), "generated_pieces": None})


def read_report_records(samples: str | Path, columns: frozenset[str] = REPORT_COLUMNS) -> tuple[list[Record], list[str]]:
    """The records of ``samples`` (a samples.jsonl, either layout) as the report reads them (the
    arrays of ``columns``), and the reader's warnings (a torn last line dropped)."""
    warnings: list[str] = []
    records: list[Record] = []
    shown: dict[str, Record] = {}  # key -> record: the first MAX_STRIPS runs by strip_order so far, the latest of a key
    for record in iter_samples(samples, warnings, columns=columns):
        compact = compact_record(record)
        records.append(compact)
        if compact.condition in REFERENCE_RUNS:
            _without_strip(compact)
            continue
        key = compact.key
        if key in shown:
            _without_strip(shown[key])
        shown[key] = compact
        if len(shown) > MAX_STRIPS:
            _without_strip(shown.pop(max(shown, key=lambda k: strip_order(shown[k]))))
    return records, warnings
