"""The project's own problem pairs: original math word problems and story-question pairs.

They live in `data/builtin/` at the repository root (one JSONL line per ProblemPair), so
`load_pairs("builtin")` works with no dataset folder at all.
"""

from __future__ import annotations

from pathlib import Path

from measure.data.errors import DataError
from measure.data.pairs import ProblemPair, read_pairs

BUILTIN_FILES = ("math_pairs.jsonl", "context_pairs.jsonl")


def builtin_dir() -> Path:
    """data/builtin in a source checkout; measure/data/builtin when installed as package data."""
    candidates = (Path(__file__).resolve().parents[2] / "data" / "builtin",
                  Path(__file__).resolve().parent / "builtin")
    for candidate in candidates:
        if (candidate / BUILTIN_FILES[0]).is_file():
            return candidate
    raise DataError(f"built-in problems not found in {' or '.join(map(str, candidates))}")


def load_builtin(kind: str | None = None) -> list[ProblemPair]:
    """All built-in pairs (math first, then story questions), optionally only one kind."""
    directory = builtin_dir()
    pairs = [pair for name in BUILTIN_FILES for pair in read_pairs(directory / name)]
    return [pair for pair in pairs if kind is None or pair.kind == kind]
