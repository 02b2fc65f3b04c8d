"""Per-token arrays in columnar files: one Parquet file per problem group, beside samples.jsonl.

A record's per-token curves (``arrays``: log-probabilities, divergences, hidden-state cosines,
attention grids) are most of its bytes. ``measure run`` writes each problem group's arrays as one
Parquet file under ``arrays/`` when the group completes, and the group's records, each naming the
file in ``arrays_file`` (layout 2, :mod:`measure.records.record`), to samples.jsonl only after it:

- the file is written to a temporary name, fsynced and renamed (:func:`write_atomic`), so a file
  under its final name is complete; a kill -9 before the rename leaves a ``.tmp`` file that
  :func:`remove_partial_writes` deletes on resume;
- its name is a hash of the keys it holds, so a group measured again after a kill between the
  rename and its records rewrites the same file, and no record ever names a missing or partial file.

Columns: ``key``, ``problem_id``, ``condition``, ``point``, ``t0``, then one per array, named
``<group>:<name>`` (``kl:oracle``, ``attention_layers_tokens:inserted``) or by its own name
(``logprob_run``, or an array a newer metric adds): a list of float32 per record (a list of lists
for the attention grids); a missing value (NaN, infinity in the measurement) is null. Then the
per-layer scalar metrics (:data:`LAYER_METRIC`: the hidden-state cosines per layer and window,
372 of a default run's 455 metrics) as float64 columns ``metrics:<name>``: in samples.jsonl they
were most of a record's line, and no report reads them; every reader of whole records puts them
back into the record's ``metrics``. pandas reads the files natively (``pandas.read_parquet``).

:func:`read_samples` (and :func:`iter_samples`, one group's arrays in memory at a time) is the one
reader of records with their arrays attached, whichever layout they were written in. Given
``columns`` (array columns by the names above), they attach only those arrays, and read only those
columns of the Parquet files: a reader that needs three curves does not load the attention grids.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from measure.records import SAMPLES_FILE
from measure.records.atomic import TEMPORARY_SUFFIX, sync_folder, write_atomic
from measure.records.record import SCHEMA_VERSION, Arrays, Record, RecordError, validate_record
from measure.records.store import iter_store

#: Folder of the columnar files, inside the run folder.
ARRAYS_DIR = "arrays"
#: Columns that say which record a row is (the rest are arrays).
ID_COLUMNS = ("key", "problem_id", "condition", "point", "t0")
#: Array groups every record of ``measure run`` has (empty when not measured).
ALWAYS = ("logprob_ref", "kl", "js", "hidden_cosine_layers", "hidden_cosine")
SEPARATOR = ":"
#: The metrics stored in the columnar files rather than in samples.jsonl: one per layer.
LAYER_METRIC = re.compile(r"^hidden_cos_[a-z]+_L\d+_")
METRICS_PREFIX = "metrics" + SEPARATOR

_CURVE = pa.list_(pa.float32())
_GRID = pa.list_(pa.list_(pa.float32()))


def array_columns(arrays: dict) -> dict[str, list]:
    """A record's arrays as ``{column: values}``: a named group's arrays as ``<group>:<name>``, an
    array of its own (``logprob_run``) under its name (see the module docstring)."""
    columns = {"logprob_run": arrays.get("logprob_run")}
    for group, value in arrays.items():
        if isinstance(value, dict):
            columns.update({f"{group}{SEPARATOR}{name}": values for name, values in value.items()})
        elif value is not None:
            columns[group] = value
    return columns


def arrays_from_columns(row: dict) -> dict:
    """The inverse of :func:`array_columns`, from one row (a null column: that array is absent;
    the ``metrics:`` columns are not arrays, :func:`layer_metrics_from_columns` reads them)."""
    arrays: dict = {"logprob_run": row.get("logprob_run")}
    arrays.update({group: {} for group in ALWAYS})
    for column, values in row.items():
        if column in ID_COLUMNS or values is None or column.startswith(METRICS_PREFIX):
            continue
        if SEPARATOR in column:
            group, name = column.split(SEPARATOR, 1)
            arrays.setdefault(group, {})[name] = values
        else:
            arrays[column] = values
    return arrays


def layer_metrics_from_columns(row: dict) -> dict:
    """The per-layer metrics of one row, by their names in the record's ``metrics``."""
    return {column.removeprefix(METRICS_PREFIX): value for column, value in row.items()
            if column.startswith(METRICS_PREFIX)}


def split_layer_metrics(metrics: dict) -> tuple[dict, dict]:
    """``(the metrics kept in samples.jsonl, the per-layer ones)``, each in the record's order."""
    kept, layers = {}, {}
    for name, value in metrics.items():
        (layers if LAYER_METRIC.match(name) else kept)[name] = value
    return kept, layers


def _column_type(values: list) -> pa.DataType:
    """float32 lists, or lists of them (a grid such as layers x tokens), by the first value present."""
    first = next((value for value in values if value), None)
    inner = next((item for item in first if item is not None), None) if first else None
    return _GRID if isinstance(inner, list) else _CURVE


def group_table(records: list[dict]) -> pa.Table:
    """The records' identities and arrays as one table, a row per record."""
    rows = [array_columns(record["arrays"]) for record in records]
    names = list(dict.fromkeys(name for row in rows for name in row))
    columns = {"key": pa.array([r["key"] for r in records], pa.string()),
               "problem_id": pa.array([r["problem_id"] for r in records], pa.string()),
               "condition": pa.array([r["condition"] for r in records], pa.string()),
               "point": pa.array([r["point"] for r in records], pa.string()),
               "t0": pa.array([r.get("t0") for r in records], pa.int32())}
    for name in names:
        values = [row.get(name) for row in rows]
        columns[name] = pa.array(values, _column_type(values))
    layers = [split_layer_metrics(record.get("metrics") or {})[1] for record in records]
    for name in dict.fromkeys(name for layer in layers for name in layer):
        values = [layer.get(name) for layer in layers]
        columns[METRICS_PREFIX + name] = pa.array([float(v) if isinstance(v, (int, float)) else None for v in values],
                                                  pa.float64())
    return pa.table(columns)


def file_name(keys: list[str]) -> str:
    """The file of a group's arrays, named by the keys it holds (the same keys: the same name)."""
    digest = hashlib.sha256("\n".join(keys).encode("utf-8")).hexdigest()[:20]
    return f"{ARRAYS_DIR}/{digest}.parquet"


def write_table(path: Path, table: pa.Table) -> None:
    """``table`` as Parquet at ``path``, atomically; float32 split by byte stream, zstd."""
    floats = [name for name in table.column_names if name not in ID_COLUMNS]
    write_atomic(path, lambda handle: pq.write_table(
        table, handle, compression="zstd", use_dictionary=list(ID_COLUMNS[:4]), use_byte_stream_split=floats,
        write_statistics=list(ID_COLUMNS[:4])), binary=True)


def write_group_arrays(out: str | Path, records: list[dict]) -> list[dict]:
    """Write the arrays of ``records`` (one problem group) to their columnar file under ``out``,
    fsynced under its final name; return the records to append to samples.jsonl: without
    ``arrays``, naming the file in ``arrays_file``, in layout 2. Records without arrays are returned
    as they are."""
    with_arrays = [record for record in records if record.get("arrays") is not None]
    if not with_arrays:
        return records
    folder = Path(out) / ARRAYS_DIR
    folder.mkdir(exist_ok=True)
    name = file_name([record["key"] for record in with_arrays])
    write_table(Path(out) / name, group_table(with_arrays))
    sync_folder(folder)
    stored = []
    for record in records:
        if record.get("arrays") is not None:
            record = {**{k: v for k, v in record.items() if k != "arrays"}, "schema": SCHEMA_VERSION, "arrays_file": name}
            if isinstance(record.get("metrics"), dict):
                record["metrics"] = split_layer_metrics(record["metrics"])[0]
        stored.append(record)
    return stored


def remove_partial_writes(out: str | Path) -> list[Path]:
    """Delete the temporary files a kill left in ``out/arrays``; returns them."""
    folder = Path(out) / ARRAYS_DIR
    left = sorted(folder.glob(f".*{TEMPORARY_SUFFIX}")) if folder.is_dir() else []
    for path in left:
        path.unlink()
    return left


def read_arrays_file(path: Path, columns: frozenset[str] | None = None) -> dict[str, tuple[dict, dict]]:
    """``{key: (arrays, per-layer metrics)}`` of one columnar file; with ``columns``, only those
    array columns (the ones the file has) are read, and no per-layer metric."""
    if columns is not None:
        present = pq.read_schema(path).names
        table = pq.read_table(path, columns=["key", *(name for name in present if name in columns)])
    else:
        table = pq.read_table(path)
    return {row["key"]: (arrays_from_columns(row), layer_metrics_from_columns(row)) for row in table.to_pylist()}


def project_arrays(arrays: dict, columns: frozenset[str]) -> dict:
    """Only the arrays of ``columns`` (names as in the columnar files) of inline ``arrays``."""
    return arrays_from_columns({name: values for name, values in array_columns(arrays).items() if name in columns})


class _LastFile:
    """The arrays of the columnar file read last: the records of one group follow each other in
    samples.jsonl, so each file is read once and only one group's arrays are held."""

    def __init__(self, folder: Path, columns: frozenset[str] | None = None):
        self.folder, self.columns, self.name, self.arrays = folder, columns, None, {}

    def get(self, name: str, key: str, where: str) -> tuple[dict, dict]:
        """The arrays and the per-layer metrics of record ``key`` in file ``name``."""
        if name != self.name:
            path = self.folder / name
            try:
                self.name, self.arrays = name, read_arrays_file(path, self.columns)
            except (OSError, pa.ArrowException) as error:
                raise RecordError(f"{where}: field arrays_file: {path} cannot be read ({error})") from None
        if key not in self.arrays:
            raise RecordError(f"{where}: field arrays_file: {self.folder / name} holds no arrays for {key}")
        return self.arrays[key]


def attach_arrays(folder: str | Path, records: list[dict], where: str = "",
                  columns: frozenset[str] | None = None) -> list[dict]:
    """``records`` (dicts as stored) with their arrays attached from their columnar files under
    ``folder`` (each file read once); records with inline arrays or none are returned as they are.
    For a reader that tails samples.jsonl itself (``measure serve``): a record line is written only
    after its file is complete, so every file a visible line names can be read. With ``columns``,
    only those arrays (see :func:`iter_samples`)."""
    files = _LastFile(Path(folder), columns)
    ordered = sorted(range(len(records)), key=lambda i: str(records[i].get("arrays_file") or ""))
    attached = list(records)
    for i in ordered:
        name = records[i].get("arrays_file")
        if name is not None and records[i].get("arrays") is None:
            attached[i] = _attached(records[i], *files.get(name, records[i]["key"], where or str(folder)))
        elif columns is not None and records[i].get("arrays") is not None:
            attached[i] = {**records[i], "arrays": project_arrays(records[i]["arrays"], columns)}
    return attached


def _attached(record: dict, arrays: dict, layers: dict) -> dict:
    """``record`` with its arrays, and its per-layer metrics back in ``metrics``."""
    attached = {**record, "arrays": arrays}
    if layers:
        attached["metrics"] = {**(record.get("metrics") or {}), **layers}
    return attached


def iter_samples(path: str | Path, warnings: list[str], typed: bool = False,
                 columns: frozenset[str] | None = None) -> Iterator:
    """The records of a samples.jsonl in file order, each validated (:class:`Record`; RecordError
    names file, line and field) and with its arrays attached: from its columnar file in layout 2,
    inline otherwise; only the array ``columns`` when given. Dicts as stored (``arrays`` filled in),
    or :class:`Record` when ``typed``. What was dropped (a torn last line) is appended to
    ``warnings``."""
    path = Path(path)
    files = _LastFile(path.parent, columns)
    for number, record in iter_store(path, warnings):
        where = f"{path}:{number}"
        typed_record = validate_record(record, where)
        if typed_record.arrays_file is not None:
            arrays, layers = files.get(typed_record.arrays_file, typed_record.key, where)
            record = _attached(record, arrays, layers)
            if typed:
                typed_record.arrays = Arrays.model_validate(arrays)
                typed_record.metrics.update(layers)
        elif columns is not None and record.get("arrays") is not None:
            record = {**record, "arrays": project_arrays(record["arrays"], columns)}
        yield typed_record if typed else record


def read_samples(path: str | Path, typed: bool = False,
                 columns: frozenset[str] | None = None) -> tuple[list, list[str]]:
    """Every record of a samples.jsonl with its arrays attached (see :func:`iter_samples`), and
    warnings about what was dropped: what :func:`measure.records.store.read_store` returns, for
    records in either layout."""
    warnings: list[str] = []
    records = list(iter_samples(path, warnings, typed, columns))
    return records, warnings


def records_in_layout_1(records: list[Record | dict]) -> int:
    """How many records carry their arrays inline in layout 1 (``measure upgrade`` converts them)."""
    return sum(1 for r in records
               if (r.get("schema", 1) if isinstance(r, dict) else r.schema_) == 1
               and (r.get("arrays") if isinstance(r, dict) else r.arrays) is not None)


def layout_note(folder: str | Path) -> str | None:
    """A line for the user when ``folder``'s first record is in layout 1 (arrays inline), else None."""
    warnings: list[str] = []
    first = next((record for _, record in iter_store(Path(folder) / SAMPLES_FILE, warnings)), None)
    if first is None or first.get("schema", 1) != 1 or first.get("arrays") is None:
        return None
    return (f"note: {folder} is in layout 1 (schema 1: per-token arrays inline in {SAMPLES_FILE}); "
            f"`measure upgrade {folder}` stores them in columnar files, about a third of the size")
