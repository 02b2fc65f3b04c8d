"""The model's notes: had the text generated before the change already written what the change affects?

"Models Take Notes at Prefill" (arXiv 2606.17107) finds that once a model has written the old
value, a changed prompt no longer moves it. :func:`notes_before_change` flags a run whose text
before the change (the tokens it shares with the ignore run, ``generated_ids[:t0]``) already holds

- for a math pair: a quantity of problem A that the change affects (:func:`affected_quantities`):
  A's numbers that the change replaces, and A's answer when B's differs (an added step changes no
  number of A, only its answer);
- for a story question (kind ``qa``): an answer to question A (any of ``answers_a``, compared after
  SQuAD normalisation as whole words).

Numbers are compared by value as whole tokens, so "15" never matches inside "150", "1.5" or
"x15", and "1,500" matches 1500. Cardinal words from zero to ninety-nine ("five", "twenty-one")
count as their number: the built-ins' small counts are what a model writes out in words
("Sam has five apples"). A known false positive: "one" used as a pronoun ("each one") counts as 1.

The flag is a covariate, never a filter: every run keeps its record and its outcome.
"""

from __future__ import annotations

import re
from collections import Counter
from fractions import Fraction

from measure.data.arithmetic import parse_number
from measure.data.quantities import NUMBER_TOKEN
from measure.metrics.answers import normalize_answer

_UNITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
          "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
         "ninety": 90}
_SMALL = {word: value for value, word in enumerate(_UNITS)}
# "twenty-one", "twenty one" or a lone word; the tens alternative first so "twenty-one" is one number.
_NUMBER_WORD = re.compile(
    r"\b(?:(?P<tens>" + "|".join(_TENS) + r")(?:[- ](?P<unit>" + "|".join(_UNITS[1:10]) + r"))?"
    r"|(?P<small>" + "|".join(sorted(_UNITS, key=len, reverse=True)) + r"))\b",
    re.IGNORECASE)


def numbers_in(text: str) -> list[Fraction]:
    """Every number written in ``text``, as digits (whole tokens) or as a cardinal word, by value."""
    values = [parse_number(match.group()) for match in NUMBER_TOKEN.finditer(text)]
    for match in _NUMBER_WORD.finditer(text):
        if match.group("small"):
            values.append(Fraction(_SMALL[match.group("small").lower()]))
        else:
            unit = match.group("unit")
            values.append(Fraction(_TENS[match.group("tens").lower()] + (_SMALL[unit.lower()] if unit else 0)))
    return values


def affected_quantities(pair) -> set[Fraction]:
    """Values of problem A that the change replaces: the old numbers the pair's metadata names as
    changed (``metadata["changes"]``; else A's numbers missing from B, counted with multiplicity),
    and A's answer when B's answer differs. Empty for an identical control."""
    if pair.kind != "math" or pair.variation_type is None:
        return set()
    changes = pair.metadata.get("changes") if isinstance(pair.metadata, dict) else None
    if changes:
        values = {parse_number(str(change["old"])) for change in changes}
    else:
        left = Counter(match.group() for match in NUMBER_TOKEN.finditer(pair.question_a))
        left.subtract(match.group() for match in NUMBER_TOKEN.finditer(pair.question_b))
        values = {parse_number(text) for text, count in left.items() if count > 0}
    if pair.answer_a != pair.answer_b:
        values.add(parse_number(pair.answer_a))
    return values


def contains_answer(text: str, answers) -> bool:
    """Does ``text`` hold one of ``answers`` as whole words, after SQuAD normalisation?"""
    padded = f" {normalize_answer(text)} "
    return any(f" {normalize_answer(answer)} " in padded for answer in answers if normalize_answer(answer))


def notes_before_change(pair, text_before: str) -> bool:
    """The notes flag of a run whose text generated before the change is ``text_before``
    (see the module docstring). False for an identical control: the change affects nothing."""
    if pair.kind == "qa":
        return pair.variation_type is not None and contains_answer(text_before, pair.answers_a)
    affected = affected_quantities(pair)
    return bool(affected) and any(value in affected for value in numbers_in(text_before))
