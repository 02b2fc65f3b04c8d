"""Command-line options of the measurement suite and their translation into run settings.

The suite's defaults are sized for CI on two CPU cores: two problems (one of them an identical
control when the dataset has one), one injection point (6 tokens), 24 new tokens. Everything
else comes from :class:`measure.settings.RunSettings`, so a suite run measures exactly what
``measure run`` with the same settings measures.

This module is imported by every pytest run (the plugin is registered through ``pytest11``);
it must not import torch: the settings are built lazily, when measurement tests are collected.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_LIMIT = 2
DEFAULT_POINTS = "6"
DEFAULT_MAX_NEW_TOKENS = 24


def _csv(text: str | None) -> list[str] | None:
    if text is None:
        return None
    items = [item.strip() for item in text.split(",") if item.strip()]
    return items or None


def add_options(parser) -> None:
    group = parser.getgroup("measure", "adaptation-latency measurements (the suites/ experiments)")
    add = group.addoption
    add("--measure-model", default=None, metavar="NAME",
        help="model under test: embedded:smollm2-135m-instruct (default), a HF id or folder, a .gguf "
             "file, or tiny:<family> for fast checks")
    add("--measure-dataset", default="builtin", metavar="NAME",
        help="builtin (default), builtin-easy, mawps, svamp, gsm8k, fairytaleqa, nq_open, or a .jsonl file of pairs")
    add("--measure-data-dir", default=None, metavar="DIR", help="dataset folder (default $MEASURE_DATA_DIR)")
    add("--measure-limit", default=str(DEFAULT_LIMIT), metavar="N",
        help=f"problems to measure (default {DEFAULT_LIMIT}; 'all' for every problem). The first N in "
             "dataset order, the last swapped for the first identical control if none was among them")
    add("--measure-variation-types", default=None, metavar="LIST",
        help="comma list of single_number,multi_number,added_step,question_switch,control (default: all)")
    add("--measure-points", default=DEFAULT_POINTS, metavar="LIST",
        help=f"injection points, token counts (16) or fractions (0.3), comma list (default {DEFAULT_POINTS})")
    add("--measure-max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS, metavar="N",
        help=f"tokens generated per run (default {DEFAULT_MAX_NEW_TOKENS})")
    add("--measure-device", default="cpu", metavar="DEVICE", help="cpu (default) | cuda | mps")
    add("--measure-dtype", default="float32", metavar="DTYPE",
        help="float32 (default) | bfloat16 | float16; the stated tolerances are for float32")
    add("--measure-seed", type=int, default=0, metavar="N", help="sampling seed (greedy decoding ignores it)")
    add("--measure-update-form", default="erratum", metavar="FORM", help="erratum (default) | restatement")
    add("--measure-semantic", action="store_true", default=False,
        help="also compute the sentence-embedding similarity metrics (slower; off by default)")
    add("--measure-no-attention", action="store_true", default=False,
        help="skip the attention-mass capture")
    add("--measure-threads", type=int, default=0, metavar="N",
        help="torch threads per process (default 0: cores / xdist workers under -n, torch's default otherwise)")
    add("--measure-out", default=None, metavar="DIR",
        help="report folder: samples.jsonl, metrics.json, report.html (default reports/pytest-<time>)")


@dataclass(frozen=True)
class SuiteOptions:
    """The raw option values; :meth:`settings` turns them into validated RunSettings."""

    model: str | None
    dataset: str
    data_dir: str | None
    limit: int | None
    variation_types: tuple[str, ...] | None
    points: tuple[str, ...]
    max_new_tokens: int
    device: str
    dtype: str
    seed: int
    update_form: str
    semantic: bool
    attention: bool
    threads: int
    out: str | None

    @classmethod
    def from_config(cls, config) -> SuiteOptions:
        import pytest

        option = config.getoption
        raw_limit = str(option("--measure-limit")).strip().lower()
        if raw_limit in ("all", "none", "0"):
            limit = None
        else:
            try:
                limit = int(raw_limit)
            except ValueError:
                raise pytest.UsageError(f"--measure-limit {raw_limit!r}: a whole number or 'all'") from None
        types = _csv(option("--measure-variation-types"))
        return cls(
            model=option("--measure-model"),
            dataset=option("--measure-dataset"),
            data_dir=option("--measure-data-dir"),
            limit=limit,
            variation_types=tuple(types) if types else None,
            points=tuple(_csv(option("--measure-points")) or ()),
            max_new_tokens=option("--measure-max-new-tokens"),
            device=option("--measure-device"),
            dtype=option("--measure-dtype"),
            seed=option("--measure-seed"),
            update_form=option("--measure-update-form"),
            semantic=option("--measure-semantic"),
            attention=not option("--measure-no-attention"),
            threads=option("--measure-threads"),
            out=option("--measure-out"),
        )

    def settings(self):
        """Validated :class:`measure.settings.RunSettings` (raises pytest.UsageError)."""
        return self.settings_and_notes()[0]

    def settings_and_notes(self):
        """Validated RunSettings, with repeated points or conditions merged, and a note per repeat
        (raises pytest.UsageError naming the --measure-* option)."""
        import pytest

        from measure.engine.conditions import CONDITION_NAMES
        from measure.model.load import EMBEDDED_MODEL, ModelLoadError, check_device
        from measure.settings import RunSettings, SettingsError, merge_duplicates, validate

        settings = RunSettings(
            model=self.model or EMBEDDED_MODEL, dataset=self.dataset, data_dir=self.data_dir, limit=self.limit,
            variation_types=list(self.variation_types) if self.variation_types else None,
            points=list(self.points), max_new_tokens=self.max_new_tokens, seed=self.seed, device=self.device,
            dtype=self.dtype, out=self.out, update_form=self.update_form, semantic=self.semantic,
            attention=self.attention, verify_recompute=True,  # the cache-equivalence invariants need it
            conditions=list(CONDITION_NAMES),  # every condition and strategy is a test; -k selects
        )
        try:
            notes = merge_duplicates(settings)
            validate(settings)
        except SettingsError as error:
            raise pytest.UsageError(f"measure: {error}".replace("--", "--measure-")) from None
        try:
            check_device(settings.device)  # before any test: a missing GPU is a usage error, not N failures
        except ModelLoadError as error:
            raise pytest.UsageError(f"measure: --measure-device {settings.device}: {error}") from None
        return settings, [note.replace("--", "--measure-") for note in notes]


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
    from pathlib import Path

    import pytest

    from measure.data import DataError, load_pairs

    # The built-in set and pair files are small: load them whole so the control swap can look
    # past the limit. Generated datasets are produced up to the limit only.
    whole = settings.dataset.startswith("builtin") or settings.dataset.endswith(".jsonl") or Path(settings.dataset).is_file()
    try:
        pairs = load_pairs(settings.dataset, settings.data_dir, limit=None if whole else settings.limit,
                           variation_types=settings.variation_types, seed=settings.seed)
    except DataError as error:
        raise pytest.UsageError(f"measure: --measure-dataset {settings.dataset}: {error}") from None
    return select_problems(pairs, settings.limit)
