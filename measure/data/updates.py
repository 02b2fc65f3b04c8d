"""Update texts injected mid-generation: erratum, restatement, repeat and length-matched noise.

The engine trims noise to the update's token length, so noise only has to be long enough
(at least NOISE_LENGTH_FACTOR times the longer update) and free of anything problem-like:
the pool below has no digits and no question marks.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass

NOISE_LENGTH_FACTOR = 1.5
CONTROL_ERRATUM = "Correction: the problem is unchanged."
QA_CONTROL_ERRATUM = "Correction: the question is unchanged."
# Withdraw the erratum delivered before (the multi_retract strategy): the run ends on problem A.
RETRACTION = "Ignore that correction: the original problem stands."
QA_RETRACTION = "Ignore that correction: the original question stands."

_NOISE_SENTENCES = (
    "The morning fog rolled slowly over the quiet harbour.",
    "A pair of herons stood still at the edge of the reeds.",
    "Somewhere down the street a radio was playing an old song.",
    "The library smelled of dust, paper and floor polish.",
    "Clouds drifted west, thinning into long pale ribbons.",
    "The baker swept flour from the counter before opening.",
    "An old cat slept in the only patch of sunlight on the porch.",
    "Rain tapped against the window in an uneven rhythm.",
    "The path through the orchard was lined with wild mint.",
    "A train whistle sounded far away across the valley.",
    "The museum guard nodded politely to each visitor.",
    "Leaves gathered in the corners of the empty courtyard.",
    "The kettle began to hum as the water warmed.",
    "Fishing boats rocked gently against the wooden pier.",
    "The painter mixed a soft shade of blue for the sky.",
    "Children's chalk drawings covered the pavement by the school.",
    "The lighthouse beam swept across the dark water.",
    "A breeze carried the scent of pine from the hills.",
    "The market stalls were folded away before sunset.",
    "Snow settled quietly on the roofs of the village.",
)


@dataclass(frozen=True)
class NumberChange:
    """One replaced quantity: its old and new text and the word after it in the problem."""

    old_text: str
    new_text: str
    unit: str = ""
    prefix: str = ""

    def describe(self, new: bool) -> str:
        number = self.new_text if new else self.old_text
        return f"{self.prefix}{number} {self.unit}".strip()


@dataclass(frozen=True)
class UpdateTexts:
    erratum: str
    restatement: str
    repeat: str
    noise: str


def stable_rng(*key: object) -> random.Random:
    """A Random seeded from the key's text, identical across processes (unlike hash())."""
    digest = hashlib.sha256("\x1f".join(map(str, key)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def number_change_erratum(changes: list[NumberChange]) -> str:
    """'Correction: 7 apples, not 5 apples.' for each change, joined with semicolons."""
    parts = [f"{change.describe(new=True)}, not {change.describe(new=False)}" for change in changes]
    return "Correction: " + "; ".join(parts) + "."


def added_step_erratum(step_sentence: str) -> str:
    return f"Correction: there is one more step: {step_sentence}"


def question_switch_erratum(question_a: str, question_b: str) -> str:
    return f'Correction: the question is "{question_b}", not "{question_a}"'


def retraction_text(pair) -> str:
    """A short fluent retraction of the pair's erratum: after it, problem A holds again.

    Takes a ProblemPair (not imported here: pairs imports this module); QA pairs speak of the
    question, math pairs of the problem.
    """
    return QA_RETRACTION if pair.kind == "qa" else RETRACTION


def restatement(question_b: str) -> str:
    return f"Update: the problem is now: {question_b}"


def repeat(question_a: str) -> str:
    return f"To restate the problem: {question_a}"


def noise(min_chars: int, *key: object) -> str:
    """Fluent irrelevant sentences, chosen by key, at least min_chars characters long."""
    rng = stable_rng("noise", *key)
    sentences: list[str] = []
    order = list(_NOISE_SENTENCES)
    while len(" ".join(sentences)) < min_chars:
        rng.shuffle(order)
        sentences.extend(order)
    text = ""
    for sentence in sentences:
        text = f"{text} {sentence}".strip()
        if len(text) >= min_chars:
            break
    return text


def build_update_texts(question_a: str, question_b: str, erratum: str, *key: object) -> UpdateTexts:
    """Restatement of B, repeat of A, and noise long enough for the longer of erratum/restatement."""
    restated = restatement(question_b)
    target = math.ceil(NOISE_LENGTH_FACTOR * max(len(erratum), len(restated)))
    return UpdateTexts(
        erratum=erratum,
        restatement=restated,
        repeat=repeat(question_a),
        noise=noise(target, *key),
    )
