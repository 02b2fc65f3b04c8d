"""Problem pairs for the measurement suite: loaders, built-in problems, augmentation, updates.

`load_pairs` is the entry point: it returns ProblemPairs for a named dataset or a file of pairs
(a JSON array or JSONL, in this project's layout or the original research code's; see pairs.py).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from measure.data.augment import DEFAULT_MIX, MATH_VARIATION_TYPES, generate_pairs
from measure.data.builtin import load_builtin
from measure.data.constraints import check_pair
from measure.data.errors import DataError, LoadReport
from measure.data.items import SourceItem
from measure.data.loaders import MATH_FILES, MATH_LOADERS
from measure.data.pair_files import read_pairs, write_pairs
from measure.data.pairs import ProblemPair
from measure.data.qa import QA_FILES, load_fairytaleqa, load_nq_open, qa_pairs

#: "builtin": the project's own pairs; "builtin-easy": those the embedded model solves uninterrupted
#: (the easy math tier and the easy stories), the default run's problems. The rest are downloads.
BUILTIN_SETS = ("builtin", "builtin-easy")
DATASETS = (*BUILTIN_SETS, "mawps", "svamp", "gsm8k", "fairytaleqa", "nq_open")
DATA_DIR_ENV = "MEASURE_DATA_DIR"
CACHE_DIR_ENV = "MEASURE_CACHE_DIR"
_CONTROL_NAMES = {"control", "null", "none", "None", None}


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "measure")


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """The explicit folder, else $MEASURE_DATA_DIR, else the download cache if it exists."""
    if data_dir is not None:
        if not Path(data_dir).is_dir():
            raise DataError(f"data folder {data_dir} (--data-dir) does not exist or is not a folder")
        return Path(data_dir)
    if os.environ.get(DATA_DIR_ENV):
        folder = Path(os.environ[DATA_DIR_ENV])
        if not folder.is_dir():
            raise DataError(f"${DATA_DIR_ENV} names {folder}, which does not exist or is not a folder")
        return folder
    if cache_dir().is_dir():
        return cache_dir()
    raise DataError(f"no data folder: pass data_dir, set ${DATA_DIR_ENV}, or run `measure data download`")


def dataset_files(dataset: str) -> tuple[str, ...]:
    if dataset in MATH_FILES:
        return (MATH_FILES[dataset],)
    if dataset in QA_FILES:
        return QA_FILES[dataset]
    raise DataError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)} or a .json/.jsonl path")


def load_records(dataset: str, data_dir: str | Path | None = None) -> tuple[list[SourceItem], LoadReport]:
    """The dataset's source records and the report of what was set aside."""
    root = resolve_data_dir(data_dir)
    files = [root / name for name in dataset_files(dataset)]
    if dataset in MATH_LOADERS:
        return MATH_LOADERS[dataset](files[0])
    if dataset == "fairytaleqa":
        return load_fairytaleqa(files)
    return load_nq_open(files[0])


def _normalise_types(variation_types: Sequence[str | None] | None) -> set[str | None] | None:
    if variation_types is None:
        return None
    return {None if name in _CONTROL_NAMES else name for name in variation_types}


def load_pairs(dataset: str, data_dir: str | Path | None = None, limit: int | None = None,
               variation_types: Sequence[str] | None = None, seed: int = 0) -> list[ProblemPair]:
    """Problem pairs for a dataset name (see DATASETS) or a path to a .json or .jsonl file of pairs.

    Math datasets go through the augmentation generator (deterministic by seed, default mix
    25/25/25/25, restricted to `variation_types` when given); FairytaleQA pairs two questions
    about one story section, NQ-open two unrelated questions; a file's pairs each pass check_pair
    (read_pairs). "control" or None in variation_types selects the identical controls.
    """
    wanted = _normalise_types(variation_types)
    if dataset in MATH_LOADERS:
        records, _ = load_records(dataset, data_dir)
        mix = DEFAULT_MIX if wanted is None else {t: 1.0 / len(wanted) for t in wanted if t in MATH_VARIATION_TYPES}
        if not mix:
            return []
        pairs, _ = generate_pairs(records, limit if limit is not None else len(records), seed=seed, mix=mix)
        return pairs
    if dataset in BUILTIN_SETS:
        pairs = load_builtin(tier="easy" if dataset == "builtin-easy" else None)
    elif dataset in QA_FILES:
        records, _ = load_records(dataset, data_dir)
        pairs = qa_pairs(records, dataset, seed=seed)
    elif dataset.endswith((".json", ".jsonl")) or Path(dataset).is_file():
        pairs = read_pairs(dataset)
    else:
        dataset_files(dataset)  # raises the "unknown dataset" DataError
        pairs = []
    if wanted is not None:
        pairs = [pair for pair in pairs if pair.variation_type in wanted]
    return pairs if limit is None else pairs[:limit]


__all__ = [
    "DATASETS", "DataError", "LoadReport", "ProblemPair", "SourceItem", "cache_dir", "check_pair",
    "BUILTIN_SETS", "generate_pairs", "load_builtin", "load_pairs", "load_records", "read_pairs", "resolve_data_dir",
    "write_pairs",
]
