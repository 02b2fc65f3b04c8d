"""``measure upgrade RUN``: a run folder in layout 1 (arrays inline) converted to layout 2.

Every reader opens both layouts (:func:`measure.records.columnar.read_samples`); upgrading makes
the folder about a third of its size (docs/records.md) and lets :mod:`measure.api` read curves column by column.
The arrays of each problem group (``group_size`` problems, as the run measured them) go to one
columnar file, written and fsynced first; samples.jsonl is then replaced atomically by the same
lines without their arrays. A kill at any moment leaves the old samples.jsonl, which still
opens, and ``measure upgrade`` can be run again. Values are kept to float32 precision.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from measure.records import SAMPLES_FILE
from measure.records.columnar import remove_partial_writes, write_group_arrays
from measure.records.record import validate_record
from measure.records.run_folder import RunFolderError, locked, saved_settings
from measure.records.store import _line, iter_store, write_atomic
from measure.settings import RunSettings

USAGE = "measure upgrade RUN: store the per-token arrays of a run in layout 1 (schema 1) in columnar files"


def _group_size(folder: Path) -> int:
    try:
        return int(saved_settings(folder).get("group_size") or RunSettings.group_size)
    except RunFolderError:  # a folder of the pytest plugin or without run.json: the default groups
        return RunSettings.group_size


def _chunks(records: Iterator[dict], group_size: int) -> Iterator[list[dict]]:
    """Consecutive records of ``group_size`` problems at most, no key twice in one chunk."""
    chunk: list[dict] = []
    problems: set[str] = set()
    keys: set[str] = set()
    for record in records:
        new_problem = record["problem_id"] not in problems
        if chunk and (record["key"] in keys or (new_problem and len(problems) >= group_size)):
            yield chunk
            chunk, problems, keys = [], set(), set()
        chunk.append(record)
        problems.add(record["problem_id"])
        keys.add(record["key"])
    if chunk:
        yield chunk


def upgrade_run(folder: str | Path) -> dict:
    """Convert ``folder`` to layout 2 in place; returns counts and the sizes before and after."""
    folder = Path(folder)
    samples = folder / SAMPLES_FILE
    if not samples.is_file():
        raise RunFolderError(f"{folder}: no {SAMPLES_FILE}, so nothing to upgrade")
    with locked(folder):
        remove_partial_writes(folder)
        warnings: list[str] = []
        inline = 0
        for number, record in iter_store(samples, warnings):  # validate all before writing anything
            validate_record(record, f"{samples}:{number}")
            inline += record.get("arrays") is not None
        before = samples.stat().st_size
        if not inline:
            return {"records_converted": 0, "bytes_before": before, "bytes_after": before, "warnings": warnings}
        group_size = _group_size(folder)

        def write(handle) -> None:
            records = (record for _, record in iter_store(samples, []))
            for chunk in _chunks(records, group_size):
                handle.writelines(_line(record) for record in write_group_arrays(folder, chunk))

        write_atomic(samples, write)
    after = samples.stat().st_size + sum(path.stat().st_size for path in (folder / "arrays").glob("*.parquet"))
    return {"records_converted": inline, "bytes_before": before, "bytes_after": after, "warnings": warnings}


def register(subparsers) -> None:
    parser = subparsers.add_parser("upgrade", help=USAGE, description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="the run folder (holding samples.jsonl)")
    parser.set_defaults(func=_command)


def _command(args) -> int:
    done = upgrade_run(args.run)
    for warning in done["warnings"]:
        print(f"measure upgrade: {warning}")
    if not done["records_converted"]:
        print(f"{args.run}: already in layout 2 (no record carries its arrays inline); nothing to do")
        return 0
    print(f"{args.run}: {done['records_converted']} records upgraded to layout 2; "
          f"{done['bytes_before'] / 1e6:.1f} MB -> {done['bytes_after'] / 1e6:.1f} MB")
    return 0
