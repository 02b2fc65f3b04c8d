"""The suite's ``--measure-*`` options and their translation into run settings.

The options are :mod:`measure.settings`'s own flags with the prefix ``measure-`` (as
pytest-benchmark shares its options between its plugin and its CLI), under the settings'
``suite`` profile: the smaller workload sized for CI on two CPU cores (two problems, one of them an
identical control when the dataset has one; one early point; few tokens). So a suite run measures
exactly what ``measure run`` with the same settings measures. ``--measure-threads`` is the
plugin's own (torch threads per process).

This module is imported by every pytest run (the plugin is registered through ``pytest11``);
measure.settings imports no torch, and the engine and the model loader are imported only when
measurement tests are collected.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from measure.data import DataError, load_pairs
from measure.settings import RunSettings, SettingsError, add_flags, merge_duplicates

PREFIX = "measure-"
PROFILE = "suite"
#: The settings a suite run may change; the rest keep their defaults. Every condition is a test
#: (-k selects), and the cache-equivalence invariants need the recompute check.
OPTIONS = ("model", "dataset", "data_dir", "limit", "variation_types", "points", "max_new_tokens", "device",
           "dtype", "seed", "update_form", "semantic", "attention", "out")


def add_options(parser) -> None:
    group = parser.getgroup("measure", "adaptation-latency measurements (the suites/ experiments)")
    add_flags(group.addoption, prefix=PREFIX, names=OPTIONS, profile_name=PROFILE)
    group.addoption("--measure-threads", type=int, default=0, metavar="N",
                    help="torch threads per process (default 0: cores / xdist workers under -n, torch's default "
                         "otherwise)")


@dataclass(frozen=True)
class SuiteOptions:
    """The option values; :meth:`settings` turns them into validated RunSettings."""

    values: dict
    threads: int

    @property
    def out(self) -> str | None:
        return self.values["out"]

    @classmethod
    def from_config(cls, config) -> SuiteOptions:
        dest = PREFIX.replace("-", "_")
        return cls({name: config.getoption(dest + name) for name in OPTIONS}, config.getoption("--measure-threads"))

    def settings(self):
        """Validated :class:`measure.settings.RunSettings` (raises pytest.UsageError)."""
        return self.settings_and_notes()[0]

    def settings_and_notes(self):
        """Validated RunSettings, with repeated points or conditions merged, and a note per repeat
        (raises pytest.UsageError naming the --measure-* option)."""
        # Imported here, when measurement tests are collected, to keep the plugin's import cheap (torch).
        from measure.engine.conditions import CONDITION_NAMES
        from measure.model.load import ModelLoadError, check_device
        from measure.run.preflight import validate

        settings = RunSettings(**self.values, conditions=list(CONDITION_NAMES))  # every condition is a test
        try:
            notes = merge_duplicates(settings)
            validate(settings)
        except SettingsError as error:
            raise pytest.UsageError(f"measure: {error}".replace("--", "--" + PREFIX)) from None
        try:
            check_device(settings.device)  # before any test: a missing GPU is a usage error, not N failures
        except ModelLoadError as error:
            raise pytest.UsageError(f"measure: --measure-device {settings.device}: {error}") from None
        return settings, [note.replace("--", "--" + PREFIX) for note in notes]


def select_problems(pairs: list, limit: int | None) -> list:
    """The first ``limit`` pairs; if none of them is an identical control but the list has one,
    the last selected pair is swapped for the first control, so even a two-problem CI run
    exercises the control invariants."""
    if limit is None or limit >= len(pairs):
        return list(pairs)
    chosen = list(pairs[:limit])
    if any(pair.variation_type is None for pair in chosen):
        return chosen
    control = next((pair for pair in pairs if pair.variation_type is None), None)
    if control is not None:
        chosen[-1] = control
    return chosen


def load_problems(settings) -> list:
    """Problem pairs for the suite (raises pytest.UsageError on data errors)."""
    # The built-in set and pair files are small: load them whole so the control swap can look
    # past the limit. Generated datasets are produced up to the limit only.
    whole = settings.dataset.startswith("builtin") or settings.dataset.endswith(".jsonl") or Path(settings.dataset).is_file()
    try:
        pairs = load_pairs(settings.dataset, settings.data_dir, limit=None if whole else settings.limit,
                           variation_types=settings.variation_types, seed=settings.seed)
    except DataError as error:
        raise pytest.UsageError(f"measure: --measure-dataset {settings.dataset}: {error}") from None
    return select_problems(pairs, settings.limit)
