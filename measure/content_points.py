"""Content-timed injection points: where the change lands is decided by what the model wrote.

Numeric points ("16", "0.3") put the change at a token count, often mid-word. A content point is
resolved per problem on the ignore run's own tokens (the tokens every forked run shares before
the change), so the change lands at a place that means something:

- ``after:quantity``: right after the token that completes the first number the ignore run writes
  that the change affects: a number of problem A that B replaces, or A's answer when B's differs.
- ``boundary:N``: the first sentence or line boundary at or after token N (after ". ", "!", "?",
  or a newline).
- ``before:answer``: just before the last final-answer phrase ("The answer is", "Answer:").

A point that cannot be resolved (the content never appears, or only at the very first token or
after the last one) is not an error: the engine skips it for that problem with the reason, as
it does for numeric points beyond the end of the ignore run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from measure.data.arithmetic import parse_number

CONTENT_PREFIXES = ("after:", "boundary:", "before:")
_NUMBER = re.compile(r"(?<![\w.])\d+(?:,\d{3})*(?:\.\d+)?(?![\w]|\.\d)")
_FINAL_ANSWER = re.compile(r"(?:\b(?:the\s+)?(?:final\s+)?answer\s*(?:is|=|:))", re.IGNORECASE)


class PointNotReached(Exception):
    """The content a point waits for is not in the ignore run; the message says what is missing."""


def _token_ends(pieces: list[str]) -> list[int]:
    """Character offset at which each token ends in the joined text."""
    ends, total = [], 0
    for piece in pieces:
        total += len(piece)
        ends.append(total)
    return ends


def _tokens_through(ends: list[int], char_end: int) -> int:
    """How many tokens it takes to cover the text up to ``char_end``."""
    for index, end in enumerate(ends):
        if end >= char_end:
            return index + 1
    return len(ends)


def _tokens_before(ends: list[int], char_start: int) -> int:
    """How many tokens lie entirely before ``char_start``."""
    return sum(1 for end in ends if end <= char_start)


def changed_quantities(problem) -> list[float]:
    """The values the change affects: A's numbers that B replaces, and A's answer if B's differs."""
    if getattr(problem, "kind", "math") != "math":
        return []
    numbers_a = [m.group() for m in _NUMBER.finditer(problem.question_a)]
    numbers_b = [m.group() for m in _NUMBER.finditer(problem.question_b)]
    values = [parse_number(old) for old, new in zip(numbers_a, numbers_b) if old != new]
    values += [parse_number(old) for old in numbers_a[len(numbers_b):]]
    if problem.answer_a != problem.answer_b:
        values.append(parse_number(problem.answer_a))
    return [value for value in values if value is not None]


def _check_inside(t0: int, n_tokens: int, what: str) -> int:
    if t0 < 1:
        raise PointNotReached(f"{what} comes at the ignore run's first token: no output precedes the change")
    if t0 >= n_tokens:
        raise PointNotReached(f"{what} comes at the ignore run's last token ({n_tokens}): nothing is generated "
                              "after the change")
    return t0


@dataclass(frozen=True)
class AfterQuantity:
    label: str = "after-quantity"
    min_tokens: int = 0  # reachable in any ignore run that writes the quantity

    def resolve_in(self, pieces: list[str], problem) -> int:
        values = changed_quantities(problem)
        if not values:
            raise PointNotReached("the pair changes no quantity (a question switch or an identical control)")
        text = "".join(pieces)
        for match in _NUMBER.finditer(text):
            if parse_number(match.group()) in values:
                return _check_inside(_tokens_through(_token_ends(pieces), match.end()), len(pieces),
                                     f"the first changed quantity ({match.group()})")
        raise PointNotReached("the ignore run never writes a quantity that the change affects")


@dataclass(frozen=True)
class AtBoundary:
    after_tokens: int

    @property
    def label(self) -> str:
        return f"boundary{self.after_tokens}"

    @property
    def min_tokens(self) -> int:
        return self.after_tokens + 1

    def resolve_in(self, pieces: list[str], problem) -> int:
        text = "".join(pieces)
        ends = _token_ends(pieces)
        for t in range(max(1, self.after_tokens), len(pieces)):
            before, following = text[:ends[t - 1]], text[ends[t - 1]:ends[t - 1] + 1]
            sentence_end = before.rstrip(" ")[-1:] in (".", "!", "?") and before.strip() != ""
            # "3." of "3.5" is followed by a digit, not by a space: not the end of a sentence.
            if before.endswith("\n") or (sentence_end and (before.endswith(" ") or following.isspace())):
                return t
        raise PointNotReached(f"no sentence or line boundary at or after token {self.after_tokens}")


@dataclass(frozen=True)
class BeforeAnswer:
    label: str = "before-answer"
    min_tokens: int = 0

    def resolve_in(self, pieces: list[str], problem) -> int:
        matches = list(_FINAL_ANSWER.finditer("".join(pieces)))
        if not matches:
            raise PointNotReached("the ignore run states no final answer (no 'answer is' / 'answer:')")
        return _check_inside(_tokens_before(_token_ends(pieces), matches[-1].start()), len(pieces),
                             "the final-answer phrase")


def parse_content_point(text: str):
    """'after:quantity', 'boundary:N' or 'before:answer' -> its point; ValueError naming the spelling."""
    raw = text.strip()
    if raw == "after:quantity":
        return AfterQuantity()
    if raw == "before:answer":
        return BeforeAnswer()
    if raw.startswith("boundary:"):
        count = raw.removeprefix("boundary:")
        if count.isdigit() and int(count) >= 1:
            return AtBoundary(int(count))
        raise ValueError(f"injection point {raw!r}: boundary:N needs a whole number of tokens N >= 1")
    raise ValueError(f"injection point {raw!r}: content points are after:quantity, boundary:N and before:answer")
