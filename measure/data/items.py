"""The one source-record form every loader returns, and the JSONL reader they share."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from measure.data.errors import DataError


@dataclass(frozen=True)
class SourceItem:
    """One problem or question as a dataset gives it, before any pairing.

    Math records carry `answer` as canonical number text and, where the dataset has one, an
    infix `equation` (a bare expression, no 'x='). QA records carry every acceptable answer in
    `answers` and, for FairytaleQA, the section text as `context`.
    """

    id: str
    source: str
    question: str
    answer: str
    equation: str | None = None
    answers: tuple[str, ...] = ()
    context: str | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def all_answers(self) -> tuple[str, ...]:
        return self.answers or (self.answer,)


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank line; DataError on a missing file or bad JSON."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found" if not path.is_dir() else "a folder, not a file", file=path)
    with path.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            line = _decoded(raw, path, line_number)
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"invalid JSON: {error.msg} (column {error.colno})", file=path,
                                line=line_number) from None
            if not isinstance(obj, dict):
                raise DataError(f"expected a JSON object, got {type(obj).__name__}", file=path,
                                line=line_number)
            yield line_number, obj


def read_items(path: str | Path) -> Iterator[tuple[dict[str, int], dict]]:
    """Yield (location, object) for each record of a JSON array file or a JSONL file.

    A file whose first non-blank character is '[' is read as one JSON array (whatever its
    extension), each record located as {"item": n}, n its 1-based index; any other file is JSONL,
    each record located as {"line": n}. The location goes to DataError as keyword arguments.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found" if not path.is_dir() else "a folder, not a file", file=path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise DataError(f"not UTF-8 text: byte 0x{data[error.start]:02x} cannot be decoded", file=path,
                        line=line) from None
    if not text.lstrip().startswith("["):
        for line_number, obj in read_jsonl(path):
            yield {"line": line_number}, obj
        return
    try:
        items = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"invalid JSON: {error.msg} (column {error.colno})", file=path,
                        line=error.lineno) from None
    for index, obj in enumerate(items, start=1):
        if not isinstance(obj, dict):
            raise DataError(f"expected a JSON object, got {type(obj).__name__}", file=path, item=index)
        yield {"item": index}, obj


def _decoded(raw: bytes, path: Path, line: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"not UTF-8 text: byte 0x{raw[error.start]:02x} at column {error.start + 1} cannot be "
                        "decoded (save the file as UTF-8)", file=path, line=line) from None


def require(obj: dict, name: str, kind: type | tuple[type, ...], path: Path | str, line: int) -> Any:
    """Return obj[name], or raise DataError naming file, line and field when absent or mistyped."""
    if name not in obj:
        raise DataError("missing field", file=path, line=line, field_name=name)
    value = obj[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataError(f"expected {expected}, got {type(value).__name__}", file=path, line=line,
                        field_name=name)
    return value
