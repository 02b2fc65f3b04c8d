"""Turn a problem's question into the model's prompt, and inserted texts into token ids."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_SYSTEM_PROMPT = (
    "You are a careful assistant. Solve the problem step by step, "
    "then give the final answer as 'The answer is N.'"
)
#: The system prompt of reading questions (problems of kind "qa": a story and a question about it).
#: The math prompt's "solve step by step" makes the embedded model reason about a puzzle instead of
#: answering; on the built-in stories this prompt doubles the questions it answers (14 vs 9 of 50).
DEFAULT_QA_SYSTEM_PROMPT = (
    "You are a careful reader. Answer the question about the story in a few words, then stop. "
    "Write the answer as 'The answer is X.'"
)
PROMPT_STYLES = ("chat", "raw")


@dataclass(frozen=True)
class PromptFormat:
    """How a question becomes a prompt.

    ``chat`` applies the tokenizer's chat template with an explicit system prompt (SmolLM2's
    template otherwise inserts its own default one); ``raw`` is plain text for base models. A
    tokenizer without a chat template (a base model such as Gemma 3 270M) always gets ``raw``:
    :meth:`style_for` says which one a model gets, and runs record it in their provenance.
    """

    style: str = "chat"
    system_prompt: str = DEFAULT_SYSTEM_PROMPT  # math problems
    qa_system_prompt: str = DEFAULT_QA_SYSTEM_PROMPT  # reading questions (kind "qa")

    def __post_init__(self) -> None:
        if self.style not in PROMPT_STYLES:
            raise ValueError(f"unknown prompt style {self.style!r}; choose one of {', '.join(PROMPT_STYLES)}")

    def style_for(self, tokenizer) -> str:
        """The style this model's prompts actually take: chat only where there is a chat template."""
        return "chat" if self.style == "chat" and getattr(tokenizer, "chat_template", None) else "raw"

    def system_for(self, kind: str = "math") -> str:
        return self.qa_system_prompt if kind == "qa" else self.system_prompt

    def prompt_text(self, tokenizer, question: str, context: str | None = None, kind: str = "math") -> str:
        user = f"{context.strip()}\n\n{question.strip()}" if context else question.strip()
        system = self.system_for(kind)
        if self.style_for(tokenizer) == "raw":
            return f"{system}\n\nProblem: {user}\nSolution:"
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def prompt_ids(self, tokenizer, question: str, context: str | None = None, kind: str = "math") -> list[int]:
        # The chat template already carries every special token; adding BOS again would double it.
        # Plain text gets what the tokenizer adds itself: Gemma's BOS, which Gemma models are
        # trained to see first; SmolLM2's and the tiny tokenizer add nothing.
        raw = self.style_for(tokenizer) == "raw"
        return list(tokenizer(self.prompt_text(tokenizer, question, context, kind), add_special_tokens=raw).input_ids)


def inserted_ids(tokenizer, text: str) -> list[int]:
    """Token ids of a text inserted mid-generation, set off from the generated text by blank lines."""
    return list(tokenizer(f"\n\n{text.strip()}\n\n", add_special_tokens=False).input_ids)


def length_matched_ids(tokenizer, text: str, n_tokens: int) -> list[int]:
    """Token ids of ``text`` cut (or repeated) to exactly ``n_tokens`` tokens, blank lines kept.

    The noise control must perturb the stream by as many tokens as the update it controls for,
    otherwise a difference could come from length alone.
    """
    frame = list(tokenizer("\n\n", add_special_tokens=False).input_ids)
    body_length = max(n_tokens - 2 * len(frame), 1)
    body = list(tokenizer(text.strip(), add_special_tokens=False).input_ids)
    if not body:
        raise ValueError("noise text is empty")
    while len(body) < body_length:
        body = body + body
    return frame + body[:body_length] + frame
