"""Files of pairs: read (every pair checked by its constraints as it loads) and written atomically.

`read_pairs` checks every pair with `check_pair` as it loads; the first violation is a DataError
naming file and line (or, for a JSON array, "item N", 1-based). It lives apart from
:mod:`measure.data.pairs` because the constraints read the pair's own definitions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from measure.data.constraints import check_pair
from measure.data.errors import DataError
from measure.data.items import read_items
from measure.data.pairs import ProblemPair
from measure.records.atomic import write_atomic


def read_pairs(path: str | Path) -> list[ProblemPair]:
    """Read a JSON array or JSONL file of pairs (either naming); every pair must pass check_pair.

    DataError names the file, the line (or the JSON array's item) and, where one field is at fault,
    the field.
    """
    pairs, seen = [], set()
    for where, obj in read_items(path):
        [(unit, number)] = where.items()
        form = "jsonl" if unit == "line" else "json"
        pair = ProblemPair.from_dict(obj, default_id=f"{form}_{number}", default_source=form, file=path, **where)
        if pair.id in seen:
            raise DataError(f"duplicate id {pair.id!r}", file=path, field_name="id", **where)
        if violations := check_pair(pair):
            raise DataError(f"pair {pair.id} breaks its constraints: {'; '.join(violations)}",
                            file=path, **where)
        seen.add(pair.id)
        pairs.append(pair)
    return pairs


def write_pairs(pairs: Iterable[ProblemPair], path: str | Path, legacy_names: bool = True) -> int:
    """Write pairs as JSONL, atomically (an existing file is replaced only once the new one is
    complete; a failure leaves it as it was); returns how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0

    def write(handle) -> None:
        nonlocal count
        for pair in pairs:
            handle.write(json.dumps(pair.to_dict(legacy_names), ensure_ascii=False) + "\n")
            count += 1

    write_atomic(path, write)
    return count
