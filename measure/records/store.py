"""Append-only JSONL record store that survives crashes.

Each record is written as one line and flushed (and fsynced) before the next measurement starts,
so a run killed at any moment loses at most the record being written. On reading, a last line
cut short by a crash is detected and dropped with a warning; a bad line anywhere else is an
error naming the file and line, because that is not what a crash leaves behind.

Every line is a JSON object with a ``key``: sample records (:mod:`measure.records.samples`), the
skipped points of ``measure run``, and the pytest plugin's per-process records and events.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, overload

from measure.records.atomic import write_atomic
from measure.records.record import Record, as_dict, validate_record


class StoreError(ValueError):
    """A store file holds a line that a crash cannot explain (not the torn last line)."""


def _line(record: dict | Record) -> str:
    """One stored line: a dict as it is, a :class:`Record` as the fields it was given."""
    return json.dumps(record if isinstance(record, dict) else as_dict(record), separators=(",", ":"),
                      allow_nan=False) + "\n"


class RecordStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def append(self, record: dict | Record) -> None:
        line = _line(record)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def read(self) -> tuple[list[dict], list[str]]:
        """Records in file order, and warnings about what was dropped."""
        return read_store(self.path)

    def repair(self) -> list[str]:
        """Rewrite the file without a torn last line, so appends start on a fresh line."""
        records, warnings = self.read()
        if warnings:
            write_records(self.path, records)
        return warnings


def write_records(path: str | Path, records: list[dict] | list[Record]) -> None:
    """Write ``records`` as the whole file, atomically (a temporary file, fsynced, then renamed)."""
    write_atomic(path, lambda handle: handle.writelines(_line(record) for record in records))


def decode_record(line: bytes) -> dict:
    """One stored line as a record; ValueError (UnicodeDecodeError and JSONDecodeError are ones)
    when it is not a JSON object with a ``key``."""
    record = json.loads(line.decode("utf-8"))
    if not isinstance(record, dict) or "key" not in record:
        raise ValueError("not a record object with a 'key'")
    return record


def iter_store(path: str | Path, warnings: list[str]) -> Iterator[tuple[int, dict]]:
    """``(line number, record)`` of a store file in file order, one line in memory at a time;
    what was dropped is appended to ``warnings`` (nothing when the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, "rb") as handle:  # bytes: a crash can cut a UTF-8 character in two
        pending: tuple[int, bytes] | None = None  # held back until a later line shows it is not the last
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            if pending is not None:
                yield pending[0], _decoded(path, *pending, last=False, warnings=warnings)
            pending = (number, line)
        if pending is not None:
            record = _decoded(path, *pending, last=True, warnings=warnings)
            if record is not None:
                yield pending[0], record


def _decoded(path: Path, number: int, line: bytes, last: bool, warnings: list[str]) -> dict | None:
    try:
        return decode_record(line)
    except ValueError as error:
        if last:  # only the last line can be torn by a crash
            warnings.append(f"{path}:{number}: dropped a truncated last record (a crash mid-write): {error}")
            return None
        raise StoreError(f"{path}:{number}: corrupt record: {error}") from None


@overload
def read_store(path: str | Path, typed: Literal[False] = False) -> tuple[list[dict], list[str]]: ...
@overload
def read_store(path: str | Path, typed: Literal[True]) -> tuple[list[Record], list[str]]: ...
def read_store(path, typed=False):
    """The records of a store file in file order, and warnings about what was dropped
    (nothing when the file does not exist). ``typed``: each validated as a sample
    :class:`~measure.records.record.Record` (RecordError names file, line and field); the arrays
    of a record in layout 2 are not attached (see :func:`measure.records.columnar.read_samples`)."""
    warnings: list[str] = []
    if typed:
        records = [validate_record(record, f"{path}:{number}") for number, record in iter_store(path, warnings)]
    else:
        records = [record for _, record in iter_store(path, warnings)]
    return records, warnings


def latest_by_key(records: list[Record]) -> dict[str, Record]:
    """One record per key, the last written winning (a resumed run may rewrite one)."""
    return {record.key: record for record in records}
