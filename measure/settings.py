"""Settings of a measurement run: defaults, a TOML file, command-line flags, and validation.

Validation happens before any model is loaded, so a typo costs a second, not a model load.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from measure.conditions import CONDITION_NAMES
from measure.data import DATASETS
from measure.data.pairs import VARIATION_TYPES
from measure.engine import EngineConfig, check_config
from measure.model import DEVICES, DTYPES, EMBEDDED_MODEL
from measure.prompts import DEFAULT_QA_SYSTEM_PROMPT, DEFAULT_SYSTEM_PROMPT, PROMPT_STYLES, PromptFormat

#: How users name an identical-problem pair (``variation_type`` None) when they select variation
#: types (``--variation-types``, pytest ``-k``); ``measure.data.load_pairs`` maps it back to None.
CONTROL = "control"
#: What ``--variation-types`` accepts: the data's variation types, with ``control`` for None.
VARIATION_TYPE_NAMES = tuple(CONTROL if name is None else name for name in VARIATION_TYPES)


class SettingsError(ValueError):
    """Bad settings; the message names the setting and what is allowed."""


@dataclass
class RunSettings:
    model: str = EMBEDDED_MODEL
    # The default run: the 54 built-in pairs the embedded model solves uninterrupted (40 math, 14
    # story questions; 43 changed, 11 identical), one point, tokens enough to finish (87% end by
    # themselves). Enough changed problems to calibrate the latencies (63 control runs per fold)
    # and to detect a paired effect of |dz| 0.44 at 80% power, in about 6 minutes on 2 CPU cores.
    dataset: str = "builtin-easy"
    data_dir: str | None = None
    limit: int | None = None
    variation_types: list[str] | None = None
    conditions: list[str] = field(default_factory=lambda: list(CONDITION_NAMES))
    points: list[str] = field(default_factory=lambda: ["8"])
    max_new_tokens: int = 96
    seed: int = 0
    temperature: float = 0.0
    device: str = "cpu"
    dtype: str = "float32"
    out: str | None = None
    resume: bool = False
    prompt_style: str = "chat"
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    qa_system_prompt: str = DEFAULT_QA_SYSTEM_PROMPT
    update_form: str = "erratum"
    partial_recompute_last: int = 1
    batch_size: int = 64
    group_size: int = 3  # problems measured together (their rows share decode batches)
    attention: bool = True
    hidden_states: bool = True
    semantic: bool = True
    verify_recompute: bool = True
    trust_remote_code: bool = False
    alpha: float = 0.05  # false-event rate of the calibrated latency events (measure.calibration)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            max_new_tokens=self.max_new_tokens, points=tuple(self.points), conditions=tuple(self.conditions),
            prompt=PromptFormat(self.prompt_style, self.system_prompt, self.qa_system_prompt), update_form=self.update_form,
            seed=self.seed, temperature=self.temperature, partial_recompute_last=self.partial_recompute_last,
            batch_size=self.batch_size, hidden_states=self.hidden_states, attention=self.attention,
            verify_recompute=self.verify_recompute,
        )


FIELDS = {f.name: f for f in dataclasses.fields(RunSettings)}


def from_toml(path: str | Path) -> dict:
    """Settings from a TOML file (keys as the flags, with underscores or dashes)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SettingsError(f"settings file not found: {path}") from None
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"{path}: invalid TOML: {error}") from None
    data = data.get("run", data)
    values = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in FIELDS:
            raise SettingsError(f"{path}: unknown setting {key!r}; known: {', '.join(sorted(FIELDS))}")
        values[name] = value
    return values


def validate(settings: RunSettings) -> None:
    """Check everything that can be checked without the model; raise SettingsError."""
    def fail(message: str):
        raise SettingsError(message)

    try:  # conditions, points, --max-new-tokens, --update-form: the engine's own checks
        check_config(settings.max_new_tokens, settings.points, settings.conditions, settings.update_form,
                     name=lambda field: "--" + field.replace("_", "-"))
    except ValueError as error:
        fail(str(error))
    if not settings.conditions:
        fail("no condition selected")
    if settings.dtype not in DTYPES:
        fail(f"--dtype {settings.dtype!r}: choose one of {', '.join(DTYPES)}")
    if settings.device not in DEVICES and not settings.device.startswith("cuda:"):
        fail(f"--device {settings.device!r}: choose one of {', '.join(DEVICES)}")
    if settings.prompt_style not in PROMPT_STYLES:
        fail(f"--prompt-style {settings.prompt_style!r}: choose one of {', '.join(PROMPT_STYLES)}")
    if not 0 < settings.alpha < 1:
        fail(f"--alpha {settings.alpha}: the false-event rate must lie strictly between 0 and 1")
    if settings.temperature < 0:
        fail("--temperature must be >= 0 (0 is greedy)")
    if settings.limit is not None and settings.limit < 1:
        fail("--limit must be at least 1")
    if settings.variation_types:
        bad = [v for v in settings.variation_types if v not in VARIATION_TYPE_NAMES]
        if bad:
            fail(f"unknown variation type(s) {', '.join(bad)}; choose from {', '.join(VARIATION_TYPE_NAMES)}")
    if settings.dataset not in DATASETS and not settings.dataset.endswith((".json", ".jsonl")):
        fail(f"--dataset {settings.dataset!r}: choose one of {', '.join(DATASETS)} or a .json/.jsonl file")
    if settings.batch_size < 1:
        fail("--batch-size must be at least 1")
    if settings.group_size < 1:
        fail("--group-size must be at least 1")
    check_writable(Path(settings.out) if settings.out else None)


def check_writable(out: Path | None) -> None:
    if out is None:
        return
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise SettingsError(f"--out {out}: {probe} is not a writable folder")
