"""Append-only JSONL record store that survives crashes.

Each record is written as one line and flushed (and fsynced) before the next measurement starts,
so a run killed at any moment loses at most the record being written. On reading, a last line
cut short by a crash is detected and dropped with a warning; a bad line anywhere else is an
error naming the file and line, because that is not what a crash leaves behind.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


class StoreError(ValueError):
    pass


class RecordStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def append(self, record: dict) -> None:
        line = json.dumps(record, separators=(",", ":"), allow_nan=False)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def read(self) -> tuple[list[dict], list[str]]:
        """Records in file order, and warnings about what was dropped."""
        return read_records(self.path)

    def repair(self) -> list[str]:
        """Rewrite the file without a torn last line, so appends start on a fresh line."""
        records, warnings = self.read()
        if warnings:
            tmp = self.path.with_suffix(".jsonl.tmp")
            with open(tmp, "w", encoding="utf-8") as handle:
                for record in records:
                    handle.write(json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            tmp.replace(self.path)
        return warnings


def read_records(path: str | Path) -> tuple[list[dict], list[str]]:
    path = Path(path)
    if not path.exists():
        return [], []
    lines = path.read_text(encoding="utf-8").split("\n")
    records, warnings = [], []
    last_content = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or "key" not in record:
                raise ValueError("not a record object with a 'key'")
        except ValueError as error:
            if number - 1 == last_content:  # only the last line can be torn by a crash
                warnings.append(f"{path}:{number}: dropped a truncated last record (a crash mid-write): {error}")
                continue
            raise StoreError(f"{path}:{number}: corrupt record: {error}") from None
        records.append(record)
    return records, warnings


def latest_by_key(records: list[dict]) -> dict[str, dict]:
    """One record per key, the last written winning (a resumed run may rewrite one)."""
    return {record["key"]: record for record in records}
