"""Settings of a measurement run: defaults, a TOML file, command-line flags, and validation.

Validation happens before any model is loaded, so a typo costs a second, not a model load.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from measure.data import DATASETS
from measure.data.pairs import VARIATION_TYPES
from measure.engine.conditions import DEFAULT_CONDITIONS
from measure.engine.engine import EngineConfig, check_config
from measure.model.load import DEVICES, DTYPES, EMBEDDED_MODEL
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
    conditions: list[str] = field(default_factory=lambda: list(DEFAULT_CONDITIONS))
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
    update_gap: int = 6  # generated tokens between a strategy's updates (multi, multi_retract, gradual)
    gradual_pieces: int = 3  # pieces the update is split into by the gradual strategy
    batch_size: int = 64
    group_size: int = 3  # problems measured together (their rows share decode batches)
    attention: bool = True
    hidden_states: bool = True
    semantic: bool = True
    verify_recompute: bool = True
    trust_remote_code: bool = False
    alpha: float = 0.05  # false-event rate of the calibrated latency events (measure.analysis.calibration)
    # Where the problem groups are measured (measure.run.executors), not what is measured: --resume may change these.
    executor: str = "local"  # local (this process) | ray (Ray actors, `pip install measure[ray]`)
    ray_address: str | None = None  # unset: a new local Ray instance; "auto" or host:port: an existing cluster
    workers: int | None = None  # Ray actors, each loading the model (default: one per GPU, or per CPU without GPUs)
    gpus_per_worker: float | None = None  # GPUs per Ray actor (default 1 with --device cuda, else 0)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            max_new_tokens=self.max_new_tokens, points=tuple(self.points), conditions=tuple(self.conditions),
            prompt=PromptFormat(self.prompt_style, self.system_prompt, self.qa_system_prompt), update_form=self.update_form,
            seed=self.seed, temperature=self.temperature, partial_recompute_last=self.partial_recompute_last,
            update_gap=self.update_gap, gradual_pieces=self.gradual_pieces,
            batch_size=self.batch_size, hidden_states=self.hidden_states, attention=self.attention,
            verify_recompute=self.verify_recompute,
        )


FIELDS = {f.name: f for f in dataclasses.fields(RunSettings)}
#: The settings that choose where groups are measured, not what: a run may be resumed with other values.
EXECUTION_FIELDS = ("executor", "ray_address", "workers", "gpus_per_worker")
EXECUTORS = ("local", "ray")


#: What each annotated type of a RunSettings field accepts, in words (for the error message).
_EXPECTED = {"bool": "true or false", "int": "a whole number", "float": "a finite number", "str": "text",
             "list[str]": 'a list such as ["a", "b"] (or one comma-separated text)'}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def coerce(name: str, value, where: str | None = None):
    """``value`` as the type of setting ``name``, or SettingsError naming where it came from.

    The same check for flags, TOML and a saved run.json, so a TOML file cannot smuggle in what a
    flag would refuse: ``attention = "no"`` is not true, ``conditions = "injection"`` is one
    condition (a comma list, as on the command line), not nine letters, and ``nan`` or ``inf``
    is no number. ``where`` is the file and line (TOML, run.json); flags are named as flags.
    """
    annotation = str(FIELDS[name].type)
    optional = annotation.endswith(" | None")
    base = annotation.removesuffix(" | None")
    if value is None and optional:
        return None
    ok, coerced = False, value
    if base == "bool":
        ok = isinstance(value, bool)
    elif base == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        coerced = float(value) if ok else value
    elif base == "str":
        ok = isinstance(value, str)
    elif base == "list[str]":
        if isinstance(value, str):
            ok, coerced = True, [item.strip() for item in value.split(",") if item.strip()]
        elif isinstance(value, (list, tuple)):
            ok = all(isinstance(item, (str, int, float)) and not isinstance(item, bool) for item in value)
            coerced = [str(item).strip() for item in value] if ok else value
    if not ok:
        shown = value if isinstance(value, (int, float)) and not isinstance(value, bool) else repr(value)
        if isinstance(value, bool):
            shown = str(value).lower()
        expected = _EXPECTED.get(base, base)
        label = f"{where}: {name} = {shown}" if where else f"{flag(name)} {shown}"
        raise SettingsError(f"{label}: expected {expected}")
    return coerced


def check_types(settings: RunSettings) -> None:
    """Every field of ``settings`` has its annotated type (RunSettings may be built in code)."""
    for name in FIELDS:
        setattr(settings, name, coerce(name, getattr(settings, name)))


def _toml_line(text: str, key: str) -> int | None:
    pattern = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=", re.MULTILINE)
    match = pattern.search(text)
    return text.count("\n", 0, match.start()) + 1 if match else None


def from_toml(path: str | Path) -> dict:
    """Settings from a TOML file (keys as the flags, with underscores or dashes), each checked
    against its type; SettingsError names the file, the line and the setting."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
        data = tomllib.loads(text)
    except FileNotFoundError:
        raise SettingsError(f"settings file not found: {path}") from None
    except IsADirectoryError:
        raise SettingsError(f"--config {path}: a folder, not a TOML file") from None
    except PermissionError:
        raise SettingsError(f"--config {path}: not readable (permission denied)") from None
    except UnicodeDecodeError as error:
        line = error.object.count(b"\n", 0, error.start) + 1
        raise SettingsError(f"{path}, line {line}: not UTF-8 text (byte 0x{error.object[error.start]:02x})") from None
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"{path}: invalid TOML: {error}") from None
    data = data.get("run", data)
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: [run] must be a table of settings, got {type(data).__name__}")
    values = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        line = _toml_line(text, key)
        where = f"{path}, line {line}" if line else str(path)
        if name not in FIELDS:
            raise SettingsError(f"{where}: unknown setting {key!r}; known: {', '.join(sorted(FIELDS))}")
        values[name] = coerce(name, value, where)
    return values


def merge_duplicates(settings: RunSettings) -> list[str]:
    """Drop repeated injection points, conditions and variation types (each measured once), in
    place; returns one note per repeat for the user. Raises SettingsError on a bad point."""
    from measure.points import merge_duplicate_points

    notes = []
    try:
        settings.points, point_notes = merge_duplicate_points(settings.points)
    except ValueError as error:
        raise SettingsError(f"--points: {error}") from None
    notes += [f"--points: {note}" for note in point_notes]
    for name in ("conditions", "variation_types"):
        values = getattr(settings, name)
        if values is None:
            continue
        unique = list(dict.fromkeys(values))
        if len(unique) < len(values):
            repeated = sorted({v for v in values if values.count(v) > 1})
            notes.append(f"{flag(name)}: {', '.join(repeated)} given more than once: measured once")
            setattr(settings, name, unique)
    return notes


def validate(settings: RunSettings) -> None:
    """Check everything that can be checked without the model; raise SettingsError."""
    def fail(message: str):
        raise SettingsError(message)

    check_types(settings)
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
    check_executor(settings)
    if settings.partial_recompute_last < 0:
        fail("--partial-recompute-last must be 0 or more")
    if settings.update_gap < 1:
        fail("--update-gap must be at least 1 (generated tokens between a strategy's updates)")
    if settings.gradual_pieces < 2:
        fail("--gradual-pieces must be at least 2 (the gradual strategy splits the update)")
    check_writable(Path(settings.out) if settings.out else None)
    check_model_source(settings.model)


def check_model_source(model: str) -> None:
    """A model path that does not exist, or a .gguf that is not one, fails here, before the data
    loads; the GGUF cache folder must be usable when the model goes through it."""
    from measure.data import CACHE_DIR_ENV, cache_dir
    from measure.model.cpu_linear import LinearKernelError, requested
    from measure.model.load import ModelLoadError, check_model_path

    try:
        check_model_path(model)
    except ModelLoadError as error:
        raise SettingsError(f"--model {model}: {error}") from None
    try:
        requested()
    except LinearKernelError as error:
        raise SettingsError(str(error)) from None
    if model.startswith("embedded:") or model.endswith(".gguf"):
        cache = cache_dir()
        what = f"${CACHE_DIR_ENV}" if os.environ.get(CACHE_DIR_ENV) else "the cache folder"
        if cache.exists() and not cache.is_dir():
            raise SettingsError(f"{what} {cache} is a file, not a folder (the converted GGUF weights are kept there)")
        if not cache.exists():
            check_writable(cache, what)


def check_writable(out: Path | None, what: str = "--out") -> None:
    if out is None:
        return
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise SettingsError(f"{what} {out}: {probe} is not a writable folder")


def check_executor(settings: RunSettings) -> None:
    """--executor and its options (measure.run.executors): Ray installed, workers and GPUs that make sense."""
    if settings.executor not in EXECUTORS:
        raise SettingsError(f"--executor {settings.executor!r}: choose one of {', '.join(EXECUTORS)}")
    if settings.executor != "ray":  # the Ray options are ignored, so that a Ray run can be resumed locally
        return
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise SettingsError("--executor ray needs Ray, an optional extra: pip install 'measure[ray]'")
    if settings.workers is not None and settings.workers < 1:
        raise SettingsError("--workers must be at least 1")
    gpus = settings.gpus_per_worker
    if gpus is not None and not 0 <= gpus <= 1:
        raise SettingsError(f"--gpus-per-worker {gpus:g}: between 0 and 1 (a worker puts the whole model on one "
                            "device; 0.5 puts two workers on each GPU)")
    if settings.device.startswith("cuda:"):
        raise SettingsError(f"--device {settings.device}: with --executor ray use --device cuda; each worker "
                            "uses the GPU Ray gives it")
    if settings.device == "cuda" and gpus == 0:
        raise SettingsError("--device cuda with --gpus-per-worker 0: the workers would see no GPU")
    if settings.device != "cuda" and gpus:
        raise SettingsError(f"--gpus-per-worker {gpus:g} with --device {settings.device}: pass --device cuda "
                            "to measure on the GPUs")
