"""The project's own problem pairs: original math word problems and story-question pairs.

They live in `measure/data/builtin/` (one JSONL line per ProblemPair), package data shipped in the
wheel, so `load_pairs("builtin")` works with no dataset folder at all, installed or not. Every
pair's `metadata.tier` is "easy" (math problems written for the embedded SmolLM2-135M-Instruct to
solve uninterrupted) or "standard"; `load_builtin(tier="easy")` selects a tier.
`data/builtin/build.py` (not shipped) writes the files.
"""

from __future__ import annotations

from pathlib import Path

from measure.data.errors import DataError
from measure.data.pair_files import read_pairs
from measure.data.pairs import ProblemPair

BUILTIN_FILES = ("math_pairs.jsonl", "context_pairs.jsonl")
TIERS = ("easy", "standard")
BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"


def builtin_dir() -> Path:
    """measure/data/builtin, next to this module in a checkout and in an installed wheel alike."""
    if not (BUILTIN_DIR / BUILTIN_FILES[0]).is_file():
        raise DataError(f"built-in problems not found in {BUILTIN_DIR}")
    return BUILTIN_DIR


def tier_of(pair: ProblemPair) -> str:
    return pair.metadata.get("tier", "standard")


def load_builtin(kind: str | None = None, tier: str | None = None) -> list[ProblemPair]:
    """All built-in pairs (math first, then story questions), optionally only one kind or tier."""
    if tier is not None and tier not in TIERS:
        raise DataError(f"unknown built-in tier {tier!r}; expected one of {', '.join(TIERS)}")
    directory = builtin_dir()
    pairs = [pair for name in BUILTIN_FILES for pair in read_pairs(directory / name)]
    return [pair for pair in pairs if (kind is None or pair.kind == kind) and (tier is None or tier_of(pair) == tier)]
