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
from measure.engine import UPDATE_FORMS, EngineConfig
from measure.model import DEVICES, DTYPES, EMBEDDED_MODEL
from measure.points import parse_points
from measure.prompts import DEFAULT_SYSTEM_PROMPT, PROMPT_STYLES, PromptFormat

VARIATION_TYPES = ("single_number", "multi_number", "added_step", "question_switch", "control")


class SettingsError(ValueError):
    """Bad settings; the message names the setting and what is allowed."""


@dataclass
class RunSettings:
    model: str = EMBEDDED_MODEL
    dataset: str = "builtin"
    data_dir: str | None = None
    limit: int | None = 6
    variation_types: list[str] | None = None
    conditions: list[str] = field(default_factory=lambda: list(CONDITION_NAMES))
    points: list[str] = field(default_factory=lambda: ["8", "0.5"])
    max_new_tokens: int = 48
    seed: int = 0
    temperature: float = 0.0
    device: str = "cpu"
    dtype: str = "float32"
    out: str | None = None
    resume: bool = False
    prompt_style: str = "chat"
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    update_form: str = "erratum"
    partial_recompute_last: int = 1
    batch_size: int = 64
    group_size: int = 3  # problems measured together (their rows share decode batches)
    attention: bool = True
    hidden_states: bool = True
    semantic: bool = True
    verify_recompute: bool = True
    trust_remote_code: bool = False

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            max_new_tokens=self.max_new_tokens, points=tuple(self.points), conditions=tuple(self.conditions),
            prompt=PromptFormat(self.prompt_style, self.system_prompt), update_form=self.update_form,
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

    unknown = [c for c in settings.conditions if c not in CONDITION_NAMES]
    if unknown:
        fail(f"unknown condition(s) {', '.join(unknown)}; choose from {', '.join(CONDITION_NAMES)}")
    if not settings.conditions:
        fail("no condition selected")
    try:
        points = parse_points(settings.points)
    except ValueError as error:
        fail(f"--points: {error}")
    for point in points:
        if not point.is_fraction and point.value >= settings.max_new_tokens:
            fail(f"--points: injection point {point.label} lies at or beyond the generation length "
                 f"(--max-new-tokens {settings.max_new_tokens})")
    if settings.max_new_tokens < 2:
        fail("--max-new-tokens must be at least 2")
    if settings.dtype not in DTYPES:
        fail(f"--dtype {settings.dtype!r}: choose one of {', '.join(DTYPES)}")
    if settings.device not in DEVICES and not settings.device.startswith("cuda:"):
        fail(f"--device {settings.device!r}: choose one of {', '.join(DEVICES)}")
    if settings.update_form not in UPDATE_FORMS:
        fail(f"--update-form {settings.update_form!r}: choose one of {', '.join(UPDATE_FORMS)}")
    if settings.prompt_style not in PROMPT_STYLES:
        fail(f"--prompt-style {settings.prompt_style!r}: choose one of {', '.join(PROMPT_STYLES)}")
    if settings.temperature < 0:
        fail("--temperature must be >= 0 (0 is greedy)")
    if settings.limit is not None and settings.limit < 1:
        fail("--limit must be at least 1")
    if settings.variation_types:
        bad = [v for v in settings.variation_types if v not in VARIATION_TYPES]
        if bad:
            fail(f"unknown variation type(s) {', '.join(bad)}; choose from {', '.join(VARIATION_TYPES)}")
    if settings.dataset not in DATASETS and not settings.dataset.endswith(".jsonl"):
        fail(f"--dataset {settings.dataset!r}: choose one of {', '.join(DATASETS)} or a .jsonl file")
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
