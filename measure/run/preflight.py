"""The checks a run makes before any model work: first the settings (:func:`validate`, everything
that can be checked without the model), then, with the model loaded and before any decoding, the
prompts: do they fit its context?

A prompt longer than the model's context does not fail: positions past the trained range give
meaningless distributions, and on a large model a run can go on for many minutes before anyone
notices. So the longest sequence a problem can reach (its longer prompt, plus the longest text a
selected condition inserts, plus ``max_new_tokens``) is checked against the context length first.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from measure.data import CACHE_DIR_ENV, DATASETS, cache_dir
from measure.data.updates import retraction_text
from measure.engine.engine import check_config
from measure.model.cpu_linear import LinearKernelError, requested
from measure.model.load import DEVICES, DTYPES, ModelLoadError, check_model_path
from measure.prompts import PROMPT_STYLES, PromptFormat, inserted_ids
from measure.settings import (
    EXECUTORS,
    VARIATION_TYPE_NAMES,
    RunSettings,
    SettingsError,
    check_bounds,
    check_types,
    flag,
)

#: Tokenizers without a limit report a huge sentinel (1e30) as model_max_length.
_NO_LIMIT = 10**8


def context_length(model, tokenizer) -> int | None:
    """The model's context in tokens: the config's max_position_embeddings, else the tokenizer's
    model_max_length when it states a real limit; None when neither does."""
    config = model.config
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for value in (getattr(config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)):
        if isinstance(value, int) and 0 < value < _NO_LIMIT:
            return value
    return None


def inserted_lengths(problem, tokenizer, update_form: str) -> dict[str, int]:
    """Tokens each inserting condition appends to prompt A's stream, over the whole run (noise is
    cut to the update's length; a strategy appends all its updates)."""
    def length(text: str) -> int:
        return len(inserted_ids(tokenizer, text))

    update = length(getattr(problem, update_form))
    lengths = {"injection": update, "noise": update, "repeat": length(problem.repeat), "gradual": update,
               "gradual_stream": update, "multi_retract": update + length(retraction_text(problem))}
    if getattr(problem, "chain", None) is not None:
        lengths["multi"] = update + length(getattr(problem.chain, update_form))
    return lengths


def longest_sequence(problem, tokenizer, prompt: PromptFormat, conditions, update_form: str,
                     max_new_tokens: int) -> tuple[int, int, int]:
    """(prompt tokens, inserted tokens, total) of the longest stream this problem can produce:
    prompt A plus the longest inserted text, or prompt B (the oracle, flush and partial) or C
    (the references of the multi strategy)."""
    kind = getattr(problem, "kind", "math")
    prompt_a = len(prompt.prompt_ids(tokenizer, problem.question_a, problem.context, kind))
    other_prompts = [problem.question_b]
    if getattr(problem, "chain", None) is not None and "multi" in conditions:
        other_prompts.append(problem.chain.question_c)
    prompt_b = max(len(prompt.prompt_ids(tokenizer, question, problem.context, kind)) for question in other_prompts)
    inserted = max((n for condition, n in inserted_lengths(problem, tokenizer, update_form).items()
                    if condition in conditions), default=0)
    if prompt_a + inserted >= prompt_b:
        return prompt_a, inserted, prompt_a + inserted + max_new_tokens
    return prompt_b, 0, prompt_b + max_new_tokens


def check_context_length(loaded, problems, settings) -> None:
    """SettingsError naming the longest problem when any problem's stream exceeds the context."""
    limit = context_length(loaded.model, loaded.tokenizer)
    if limit is None:
        return
    prompt = PromptFormat(settings.prompt_style, settings.system_prompt, settings.qa_system_prompt)
    lengths = {problem.id: longest_sequence(problem, loaded.tokenizer, prompt, settings.conditions,
                                            settings.update_form, settings.max_new_tokens) for problem in problems}
    too_long = sorted((pid for pid, (_, _, total) in lengths.items() if total > limit), key=lambda pid: -lengths[pid][2])
    if not too_long:
        return
    problem_id = too_long[0]
    prompt_tokens, inserted, total = lengths[problem_id]
    others = f" ({', '.join(too_long[:5])}{', ...' if len(too_long) > 5 else ''})" if len(too_long) > 1 else ""
    raise SettingsError(
        f"problem {problem_id}: prompt {prompt_tokens} tokens + inserted update {inserted} + --max-new-tokens "
        f"{settings.max_new_tokens} = {total} tokens, beyond the {limit}-token context of model {loaded.name}; "
        f"{len(too_long)} of {len(problems)} problems do not fit{others}: lower --max-new-tokens or leave them out")


def validate(settings: RunSettings) -> None:
    """Check everything that can be checked without the model; raise SettingsError."""
    def fail(message: str):
        raise SettingsError(message)

    check_types(settings)
    check_bounds(settings)  # every least value, the conditions' included (measure.settings)
    try:  # conditions, points, --max-new-tokens, --update-form: the engine's own checks
        check_config(settings.max_new_tokens, settings.injection_points(), settings.conditions,
                     settings.update_form, name=flag)
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
    if settings.variation_types:
        bad = [v for v in settings.variation_types if v not in VARIATION_TYPE_NAMES]
        if bad:
            fail(f"unknown variation type(s) {', '.join(bad)}; choose from {', '.join(VARIATION_TYPE_NAMES)}")
    if settings.dataset not in DATASETS and not settings.dataset.endswith((".json", ".jsonl")):
        fail(f"--dataset {settings.dataset!r}: choose one of {', '.join(DATASETS)} or a .json/.jsonl file")
    check_executor(settings)
    check_writable(Path(settings.out) if settings.out else None)
    check_model_source(settings.model)


def check_model_source(model: str) -> None:
    """A model path that does not exist, or a .gguf that is not one, fails here, before the data
    loads; the GGUF cache folder must be usable when the model goes through it."""
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
    if importlib.util.find_spec("ray") is None:
        raise SettingsError("--executor ray needs Ray, an optional extra: pip install 'measure[ray]'")
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
