"""Errors and load bookkeeping shared by every loader."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


class DataError(ValueError):
    """Bad input data. The message names the file, the line (1-based) and the field.

    Records of a JSON array are located by `item` (1-based array index) instead of `line`.
    """

    def __init__(self, problem: str, file: str | Path | None = None, line: int | None = None,
                 field_name: str | None = None, item: int | None = None):
        self.problem = problem
        self.file = str(file) if file is not None else None
        self.line = line
        self.item = item
        self.field = field_name
        where = [f"file {self.file}"] if self.file else []
        if line is not None:
            where.append(f"line {line}")
        if item is not None:
            where.append(f"item {item}")
        if field_name is not None:
            where.append(f"field {field_name!r}")
        super().__init__(f"{', '.join(where)}: {problem}" if where else problem)


@dataclass
class LoadReport:
    """What a loader kept and what it set aside, with the ids per reason.

    `rejected` records are dropped; `flagged` records are kept but carry a caveat (for example an
    answer rounded within 1% of its equation, or a GSM8K solution whose equation could not be
    rebuilt). Nothing is dropped silently: every drop is a reason with ids here.
    """

    source: str
    file: str = ""
    total: int = 0
    kept: int = 0
    rejected: dict[str, list[str]] = field(default_factory=dict)
    flagged: dict[str, list[str]] = field(default_factory=dict)

    def reject(self, reason: str, record_id: str) -> None:
        self.rejected.setdefault(reason, []).append(record_id)

    def flag(self, reason: str, record_id: str) -> None:
        self.flagged.setdefault(reason, []).append(record_id)

    @property
    def rejected_counts(self) -> Counter:
        return Counter({reason: len(ids) for reason, ids in self.rejected.items()})

    @property
    def flagged_counts(self) -> Counter:
        return Counter({reason: len(ids) for reason, ids in self.flagged.items()})

    def summary(self) -> str:
        parts = [f"{self.source}: {self.total} records, {self.kept} kept"]
        for reason, count in sorted(self.rejected_counts.items()):
            parts.append(f"rejected {reason}: {count}")
        for reason, count in sorted(self.flagged_counts.items()):
            parts.append(f"flagged {reason}: {count}")
        return "; ".join(parts)
