"""A run folder read back from Python: :func:`open_run` returns a :class:`Run`.

``measure.open_run(path)`` is the notebook's way into a run: its settings and provenance
(run.json), its findings and calibration (metrics.json), its records typed
(:class:`measure.records.record.Record`), and two pandas DataFrames: one row per run with its
metrics (:meth:`Run.runs_frame`), and one per-token curve in long format (:meth:`Run.curves_frame`),
read from the columnar files column by column, filtered by condition before it is loaded.
See docs/python-api.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from measure.records import METRICS_FILE, RUN_FILE, SAMPLES_FILE
from measure.records.columnar import SEPARATOR, array_columns, iter_samples
from measure.records.record import Record, RecordError
from measure.records.store import latest_by_key, read_store

#: Array groups with one value per generated token: what :meth:`Run.curves_frame` can return.
CURVE_GROUPS = ("logprob_run", "logprob_ref", "kl", "js", "hidden_cosine")
#: The columns of :meth:`Run.curves_frame`.
CURVE_COLUMNS = ["problem", "condition", "point", "k", "value"]
#: The identity columns of :meth:`Run.runs_frame`, before the metrics.
RUN_COLUMNS = ["key", "problem_id", "condition", "point", "t0", "variation_type", "kind", "source", "stop_reason"]


def open_run(path: str | Path) -> Run:
    """The run in folder ``path`` (one written by ``measure run`` or the pytest plugin)."""
    return Run(path)


class Run:
    """A run folder. Nothing is read until asked for; records are read one group at a time."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / SAMPLES_FILE).is_file():
            raise FileNotFoundError(f"{self.path}: no {SAMPLES_FILE}; is it a folder written by measure run?")

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    def _json(self, name: str) -> dict:
        path = self.path / name
        if not path.is_file():
            return {}
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except ValueError as error:
            raise RecordError(f"{path}: not valid JSON ({error})") from None

    @cached_property
    def provenance(self) -> dict:
        """run.json: versions, git, machine, model, executor, the settings, start and end."""
        return self._json(RUN_FILE)

    @cached_property
    def settings(self):
        """The :class:`measure.settings.RunSettings` the run was measured with (None if unknown)."""
        from measure.settings import RunSettings  # imports the engine (torch): only when asked for

        saved = self.provenance.get("settings")
        if not isinstance(saved, dict):
            return None
        return RunSettings(**{k: v for k, v in saved.items() if k in RunSettings.__dataclass_fields__})

    @cached_property
    def metrics(self) -> dict:
        """metrics.json as written by the report ({} before the report is written)."""
        return self._json(METRICS_FILE)

    @property
    def findings(self) -> dict:
        """What the run found, in sentences and numbers (metrics.json ``findings``)."""
        return self.metrics.get("findings") or {}

    @property
    def calibration(self) -> dict:
        """The calibrated latency events: thresholds, folds, false-event rates (metrics.json ``calibration``)."""
        return self.metrics.get("calibration") or {}

    def records(self) -> Iterator[Record]:
        """Every record in file order, typed and validated, its arrays attached (read group by group)."""
        yield from iter_samples(self.path / SAMPLES_FILE, [], typed=True)

    def _latest(self) -> list[Record]:
        """The last record of each key, typed, without loading arrays from the columnar files."""
        records, _ = read_store(self.path / SAMPLES_FILE, typed=True)
        return list(latest_by_key(records).values())

    def runs_frame(self) -> pd.DataFrame:
        """One row per run (the last record of each key): its identity, then its metrics as columns."""
        rows = [{**{name: getattr(r, name) for name in RUN_COLUMNS}, **r.metrics} for r in self._latest()]
        return pd.DataFrame(rows) if rows else pd.DataFrame(columns=RUN_COLUMNS)

    def curves_frame(self, metric: str, conditions: list[str] | None = None) -> pd.DataFrame:
        """One per-token curve of every run, long format: problem, condition, point, k, value.

        ``metric`` names the curve as the columnar files do: ``kl:oracle``, ``js:matched``,
        ``logprob_ref:ignore``, ``hidden_cosine:oracle``, ``logprob_run``. ``k`` counts tokens
        from the injection: 0 is the first token generated after the change, negative the shared
        prefix (the reference runs, injected nowhere, have t0 = 0). Only ``conditions`` are read.
        """
        if metric.split(SEPARATOR)[0] not in CURVE_GROUPS:
            raise ValueError(f"curves_frame: {metric!r} is no per-token curve; one of {', '.join(CURVE_GROUPS)}, "
                             "with the reference after a colon (kl:oracle)")
        wanted = None if conditions is None else set(conditions)
        by_file: dict[str, set[str]] = {}
        inline: list[Record] = []
        for record in self._latest():
            if wanted is not None and record.condition not in wanted:
                continue
            if record.arrays_file is not None:
                by_file.setdefault(record.arrays_file, set()).add(record.key)
            elif record.arrays is not None:
                inline.append(record)
        tables = [self._read_curve(name, keys, metric, wanted) for name, keys in sorted(by_file.items())]
        if inline:
            tables.append(_inline_table(inline, metric))
        tables = [table for table in tables if table is not None and table.num_rows]
        if not tables:
            return pd.DataFrame({name: pd.Series(dtype=kind) for name, kind in
                                 zip(CURVE_COLUMNS, ("str", "str", "str", "int64", "float64"))})
        return _long(pa.concat_tables(tables))

    def _read_curve(self, name: str, keys: set[str], metric: str, wanted: set[str] | None) -> pa.Table | None:
        path = self.path / name
        if metric not in pq.read_schema(path).names:
            return None
        filters = [("key", "in", sorted(keys))]  # superseded rows of a resumed run are left out
        if wanted is not None:
            filters.append(("condition", "in", sorted(wanted)))
        table = pq.read_table(path, columns=["problem_id", "condition", "point", "t0", metric], filters=filters)
        return table.rename_columns(["problem_id", "condition", "point", "t0", "curve"])


def _inline_table(records: list[Record], metric: str) -> pa.Table:
    curves = [array_columns(r.arrays.model_dump()).get(metric) for r in records]
    return pa.table({"problem_id": [r.problem_id for r in records], "condition": [r.condition for r in records],
                     "point": [r.point for r in records], "t0": pa.array([r.t0 for r in records], pa.int32()),
                     "curve": pa.array(curves, pa.list_(pa.float32()))})


def _long(table: pa.Table) -> pd.DataFrame:
    """One row per (run, token) from a table of one list column ``curve`` per run."""
    curve = table["curve"].combine_chunks()
    parents = pc.list_parent_indices(curve).to_numpy()
    offsets = curve.offsets.to_numpy()
    position = pd.RangeIndex(len(parents)).to_numpy() - (offsets[parents] - offsets[0])
    t0 = table["t0"].fill_null(0).to_numpy()[parents]
    values = pc.list_flatten(curve).to_numpy(zero_copy_only=False)
    ids = {name: table[name].to_numpy(zero_copy_only=False)[parents] for name in ("problem_id", "condition", "point")}
    frame = pd.DataFrame({"problem": ids["problem_id"], "condition": ids["condition"], "point": ids["point"],
                          "k": (position - t0).astype("int64"), "value": values.astype("float64")})
    # The same order whichever layout and files the rows came from.
    return frame.sort_values(CURVE_COLUMNS[:4], kind="stable", ignore_index=True)
