"""Checks that need the loaded model and run before any decoding: do the prompts fit its context?

A prompt longer than the model's context does not fail: positions past the trained range give
meaningless distributions, and on a large model a run can go on for many minutes before anyone
notices. So the longest sequence a problem can reach (its longer prompt, plus the longest text a
selected condition inserts, plus ``max_new_tokens``) is checked against the context length first.
"""

from __future__ import annotations

from measure.data.updates import retraction_text
from measure.prompts import PromptFormat, inserted_ids
from measure.settings import SettingsError

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
