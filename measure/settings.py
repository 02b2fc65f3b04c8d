"""Settings of a measurement run: every default, the smaller profiles, their command-line flags,
a TOML file, and the checks that need no model.

This module is the one place a default is stated. ``measure run``'s flags and the pytest plugin's
``--measure-*`` options are both generated from the fields below (:func:`add_flags`, with a
prefix for the plugin), the engine's :class:`~measure.engine.engine.EngineConfig` takes its
defaults from here, and so does the live page. Where a caller deliberately measures less (the
suite on CI), it names a profile from :data:`PROFILES` instead of stating a second default.

It imports no torch (the pytest plugin builds its options from it on every pytest run); the checks
that need the engine or the model (:func:`measure.run.preflight.validate`) live with the run.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from measure.data import DATASETS
from measure.data.pairs import VARIATION_TYPES
from measure.model.embedded import SMOLLM2
from measure.points import InjectionPoint, merge_duplicate_points, parse_points
from measure.prompts import DEFAULT_QA_SYSTEM_PROMPT, DEFAULT_SYSTEM_PROMPT

#: How users name an identical-problem pair (``variation_type`` None) when they select variation
#: types (``--variation-types``, pytest ``-k``); ``measure.data.load_pairs`` maps it back to None.
CONTROL = "control"
#: What ``--variation-types`` accepts: the data's variation types, with ``control`` for None.
VARIATION_TYPE_NAMES = tuple(CONTROL if name is None else name for name in VARIATION_TYPES)
#: The conditions a run measures unless told otherwise: the references, the seed's conditions and
#: the controls; the update strategies (multi, multi_retract, gradual, gradual_stream) are opt-in.
#: measure.engine.conditions defines what each name does (tests/engine checks the names agree).
DEFAULT_CONDITIONS = ("ignore", "oracle", "injection", "flush", "partial", "noise", "repeat")


class SettingsError(ValueError):
    """Bad settings; the message names the setting and what is allowed."""


def setting(default, help: str, *, minimum: float | None = None, why: str = "", none: str = ""):
    """A RunSettings field: its default, its flag's help, and the least value it accepts (checked
    once, by :func:`check_bounds`, with ``why`` said in the error). ``none`` says in words what
    an unset (None) value means, for the help."""
    metadata = {"help": help, "minimum": minimum, "why": why, "none": none}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class RunSettings:
    model: str = setting(SMOLLM2.name, "an embedded:... model, a Hugging Face id, a folder, a .gguf file, "
                         "or tiny:<family> for fast checks")
    # The default run: the built-in pairs the embedded model solves uninterrupted, one point, tokens
    # enough to finish; enough changed pairs to calibrate the latencies and to power the paired
    # comparison. What it measured, and how long it took: README.md.
    dataset: str = setting("builtin-easy", f"{', '.join(DATASETS)}, or a .json/.jsonl file of pairs")
    data_dir: str | None = setting(None, "dataset folder", none="$MEASURE_DATA_DIR")
    limit: int | None = setting(None, "problems to measure, the first N in dataset order ('all' for every one)",
                                minimum=1, none="all of the dataset")
    variation_types: list[str] | None = setting(None, f"comma list of {','.join(VARIATION_TYPE_NAMES)}", none="all")
    conditions: list[str] = setting(list(DEFAULT_CONDITIONS), "comma list of conditions")
    points: list[str] = setting(["8"], "injection points: token counts (16), fractions of the ignore run (0.3) "
                                "or content-timed (after:quantity), comma list")
    max_new_tokens: int = setting(96, "tokens generated per run at most", minimum=2)
    seed: int = setting(0, "sampling seed (greedy decoding ignores it)")
    temperature: float = setting(0.0, "sampling temperature; 0 decodes greedily", minimum=0, why="0 is greedy")
    device: str = setting("cpu", "cpu | cuda | cuda:N | mps")
    dtype: str = setting("float32", "float32 | bfloat16 | float16; the stated tolerances are for float32")
    out: str | None = setting(None, "the run folder: samples.jsonl, run.json, metrics.json, report.html",
                              none="a new one under reports/")
    resume: bool = setting(False, "complete the interrupted run in --out, with the settings saved in its run.json")
    prompt_style: str = setting("chat", "chat | raw")
    system_prompt: str = setting(DEFAULT_SYSTEM_PROMPT, "system prompt of math problems")
    qa_system_prompt: str = setting(DEFAULT_QA_SYSTEM_PROMPT, "system prompt of reading questions (kind qa)")
    update_form: str = setting("erratum", "erratum | restatement")
    partial_recompute_last: int = setting(1, "generated tokens recomputed by 'partial'", minimum=1,
                                          why="the next distribution needs a query")
    update_gap: int = setting(6, "generated tokens between the updates of the strategies multi, multi_retract, "
                              "gradual", minimum=1, why="generated tokens between a strategy's updates")
    gradual_pieces: int = setting(3, "pieces the update is split into by 'gradual'", minimum=2,
                                  why="the gradual strategy splits the update")
    batch_size: int = setting(64, "rows decoded together at most", minimum=1)
    group_size: int = setting(3, "problems measured together (their rows share decode batches)", minimum=1)
    attention: bool = setting(True, "capture the attention mass on the update and the problem")
    hidden_states: bool = setting(True, "compare hidden states with the references")
    semantic: bool = setting(True, "sentence-embedding similarity metrics (slower)")
    verify_recompute: bool = setting(True, "check each exact stream against a cache-free recompute")
    trust_remote_code: bool = setting(False, "let transformers run the model repository's own code")
    alpha: float = setting(0.05, "false-event rate at which latency events are calibrated on control runs "
                           "(measure.analysis.calibration)")
    # Where the problem groups are measured (measure.run.executors), not what is measured: --resume may change these.
    executor: str = setting("local", "local (this process) | ray (Ray actors; pip install 'measure[ray]')")
    ray_address: str | None = setting(None, "with --executor ray: 'auto' or host:port joins a running cluster",
                                      none="a new local Ray instance")
    workers: int | None = setting(None, "with --executor ray: actors, each loading the model", minimum=1,
                                  none="one per GPU with --device cuda, else one per CPU")
    gpus_per_worker: float | None = setting(None, "with --executor ray: GPUs per actor, 0 to 1 (0.5 puts two "
                                            "actors on a GPU)", none="1 with --device cuda, else 0")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def injection_points(self) -> tuple[InjectionPoint, ...]:
        """The parsed points, parsed once per value of ``points`` (SettingsError names --points)."""
        key = tuple(self.points)
        cached = getattr(self, "_parsed_points", None)
        if cached is None or cached[0] != key:
            try:
                cached = (key, parse_points(key))
            except ValueError as error:
                raise SettingsError(f"--points: {error}") from None
            self._parsed_points = cached  # not a field: as_dict (run.json) leaves it out
        return cached[1]


FIELDS = {f.name: f for f in dataclasses.fields(RunSettings)}
#: The settings that choose where groups are measured, not what: a run may be resumed with other values.
EXECUTION_FIELDS = ("executor", "ray_address", "workers", "gpus_per_worker")
EXECUTORS = ("local", "ray")
#: The defaults, as values (what EngineConfig and the live page start from).
DEFAULTS = RunSettings()
#: Smaller workloads, named, next to the defaults they change. "suite": what ``pytest suites/``
#: measures unless its --measure-* options say otherwise, sized for CI on two CPU cores (two
#: problems, one of them an identical control; one early point; few tokens).
PROFILES: dict[str, dict] = {
    "suite": {"dataset": "builtin", "limit": 2, "points": ["6"], "max_new_tokens": 24, "semantic": False},
}


def profile(name: str | None = None) -> dict:
    """Every setting's default under the profile ``name`` (None: the plain defaults)."""
    return {**DEFAULTS.as_dict(), **(PROFILES[name] if name else {})}


# -- flags ----------------------------------------------------------------------------------------
def flag(name: str, prefix: str = "") -> str:
    return f"--{prefix}{name.replace('_', '-')}"


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _limit(text: str) -> int | None:
    if text.strip().lower() in ("all", "none"):
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number or 'all'") from None


#: How a flag's text becomes a value, by the field's annotated type (``limit`` also takes 'all').
_PARSERS = {"int": int, "float": float, "str": str, "list[str]": _csv}


def _shown(value) -> str:
    return ",".join(value) if isinstance(value, list) else str(value)


def add_flags(add, prefix: str = "", names=None, profile_name: str | None = None, suppress: bool = False) -> None:
    """One flag per setting in ``names`` (all by default), through ``add``: argparse's
    ``add_argument`` or pytest's ``addoption``, which take the same arguments (as pytest-benchmark
    shares its options between its plugin and its CLI). The flag is ``--<prefix><name>`` and its
    dest ``<prefix><name>`` with underscores; a boolean gets ``--<prefix>no-<name>`` too. Defaults
    and help come from the fields, under ``profile_name``; ``suppress`` leaves unset flags out of
    the parsed values (``measure run`` lays them over a TOML file or a saved run)."""
    defaults = profile(profile_name)
    for name in names or FIELDS:
        meta = FIELDS[name].metadata
        base = str(FIELDS[name].type).removesuffix(" | None")
        default = defaults[name]
        common = {"dest": prefix.replace("-", "_") + name.replace("-", "_"),
                  "default": argparse.SUPPRESS if suppress else default}
        if base == "bool":
            state = "on" if default else "off"
            add(flag(name, prefix), action="store_true", help=f"{meta['help']} (default: {state})", **common)
            add(flag(f"no_{name}", prefix), action="store_false", help=f"turn off {flag(name, prefix)}", **common)
            continue
        shown = meta["none"] if default is None else _shown(default)
        parse = _limit if name == "limit" else _PARSERS[base]
        add(flag(name, prefix), type=parse, metavar=name.upper(), help=f"{meta['help']} (default: {shown})", **common)


def check_bounds(values, name=flag) -> None:
    """Every setting in ``values`` (RunSettings, EngineConfig: any object with such attributes) is at
    least its field's minimum; SettingsError names it as ``name(field)`` (the flag by default)."""
    for key, spec in FIELDS.items():
        minimum = spec.metadata["minimum"]
        value = getattr(values, key, None)
        if minimum is None or not isinstance(value, (int, float)) or isinstance(value, bool) or value >= minimum:
            continue
        why = f" ({spec.metadata['why']})" if spec.metadata["why"] else ""
        raise SettingsError(f"{name(key)} must be at least {minimum:g}{why}")


#: What each annotated type of a RunSettings field accepts, in words (for the error message).
_EXPECTED = {"bool": "true or false", "int": "a whole number", "float": "a finite number", "str": "text",
             "list[str]": 'a list such as ["a", "b"] (or one comma-separated text)'}


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
