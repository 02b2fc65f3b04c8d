"""ProblemPair: the one typed record the rest of the project consumes, and its file forms.

Files of pairs are JSONL or one JSON array of objects (told apart by content: see
`items.read_items`). Lines carry this schema's own field names and, alongside, the original
research code's (the seed's) names (`Question`, `Answer`, `Equation`, `alt_problem`,
`alt_answer`, `alt_equation`, `variation_type`), so files written here feed the old tools and
the seed's files load here. The seed wrote two layouts, both read by `ProblemPair.from_dict`:

- math: `Question`, `Answer`, `alt_problem`, `alt_answer`, `Equation`, `alt_equation`,
  `variation_type` (single_number | multi_number | added_step | null); numeric answers. Its
  controls carry `alt_equation: null`, read as "the same equation as A".
- semantic: `Question`, `Answer`, `alt_problem`, `alt_answer` (free-text answers), often with
  no `variation_type` at all; these become kind "qa" pairs, and `story_content`, where its
  FairytaleQA file has one, becomes the shared `context`.

A record without `kind` is "math" when it has an equation or a math variation type, "qa" when it
asks for a question switch or has a non-numeric answer, else "math".

Decision on a changed pair without a variation type: the seed's semantic layout has no
`variation_type` field, its alternative question is by construction a different question, and
the seed's own runner told control from change in those records by comparing the two questions.
So a record in that layout (no `kind`, no `variation_type` key, kind inferred "qa") whose
question B differs from A is a "question_switch". Every other record whose B differs from A in
question, answer or equation while its variation type is null or absent is a DataError naming
`variation_type`, never a silent identical control: math records, records that state a `kind`
(this project's own schema always writes `variation_type`), and any record with an explicit null.
The seed's older labels are mapped (SEED_VARIATION_TYPES, kept in metadata["seed_variation_type"]).

A pair may carry a chain (`ChainStep`): a third problem C made from B, delivered as a second update
(A -> B -> C), for strategies with several updates in one generation. `chain_pair()` is the link
B -> C as a pair of its own (checked like any pair), `final_pair()` the pair A -> C (the problem a
run ends on). Files write `chain` as an object, or null.

Reading and writing files of pairs is :mod:`measure.data.pair_files`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from measure.data.arithmetic import format_number, parse_number
from measure.data.errors import DataError
from measure.data.updates import (
    CONTROL_ERRATUM,
    NumberChange,
    build_update_texts,
    number_change_erratum,
    question_switch_erratum,
)
from measure.data.updates import restatement as restatement_text

VARIATION_TYPES = ("single_number", "multi_number", "added_step", "question_switch", None)
MATH_VARIATION_TYPES = VARIATION_TYPES[:3]
# A chain's B -> C change: numbers of B changed again (math), or another question (qa).
CHAIN_VARIATION_TYPES = ("single_number", "multi_number", "question_switch")
KINDS = ("math", "qa")
SOURCES = ("builtin", "mawps", "svamp", "gsm8k", "fairytaleqa", "nq_open", "jsonl", "json")
PAIR_ID_PATTERN = re.compile(r"^[A-Za-z0-9_]+$")

# Original research code field name -> this schema's field name.
LEGACY_FIELDS = {
    "Question": "question_a",
    "Answer": "answer_a",
    "Equation": "equation_a",
    "alt_problem": "question_b",
    "alt_answer": "answer_b",
    "alt_equation": "equation_b",
}
# Read, never written: the seed's FairytaleQA records carry their story section as story_content.
SEED_INPUT_FIELDS = {"story_content": "context"}
# The seed's own variation labels: its MAWPS file says number_change / multi_number_change, its
# runner took "control" for a control, and its FairytaleQA generator labelled every switched
# question by topic (all of them a question switch).
SEED_VARIATION_TYPES = {
    "number_change": "single_number", "multi_number_change": "multi_number", "control": None,
    **dict.fromkeys(("character_to_character", "character_to_other", "other_to_character",
                     "action_to_action", "action_to_other", "other_to_action", "location_focused",
                     "causal_reasoning", "temporal_focused", "semantic_variation"), "question_switch"),
}
_NUMBER_IN_TEXT = re.compile(r"(?<![\w.])\d+(?:,\d{3})*(?:\.\d+)?(?![\w]|\.\d)")


@dataclass(frozen=True)
class ChainStep:
    """The third problem C of a chain A -> B -> C, and the update that turns B into C."""

    question_c: str
    answer_c: str                # canonical answer, as answer_a/answer_b
    answers_c: tuple[str, ...]
    equation_c: str | None
    variation_type: str          # the B -> C change: single_number | multi_number | question_switch
    erratum: str                 # names what changed from B to C ("Correction: 4 more, not 6 more.")
    restatement: str             # "Update: the problem is now: <C>"
    metadata: dict               # e.g. "changes" (old/new numbers of B -> C), as a pair's metadata

    def to_dict(self) -> dict:
        return {**asdict(self), "answers_c": list(self.answers_c)}


@dataclass(frozen=True)
class ProblemPair:
    id: str                      # unique, stable, [A-Za-z0-9_]+ (used in pytest ids)
    source: str                  # builtin | mawps | svamp | gsm8k | fairytaleqa | nq_open | jsonl | json
    kind: str                    # "math" | "qa"
    variation_type: str | None   # single_number | multi_number | added_step | question_switch | None
    question_a: str
    question_b: str
    answer_a: str                # canonical answer (math: the number as text, e.g. "12" or "2.5")
    answer_b: str
    answers_a: tuple[str, ...]   # all acceptable answers (QA answer lists; math: (answer_a,))
    answers_b: tuple[str, ...]
    equation_a: str | None
    equation_b: str | None
    context: str | None          # shared context shown before the question, else None
    erratum: str                 # update text naming what changed
    restatement: str             # "Update: the problem is now: <B>"
    repeat: str                  # "To restate the problem: <A>"
    noise: str                   # irrelevant fluent text, >= 1.5x the longer of erratum/restatement
    metadata: dict               # source ids, rejected-reason info, etc. (JSON-serialisable)
    chain: ChainStep | None = None  # optional third problem C: A -> B -> C

    @property
    def is_control(self) -> bool:
        return self.variation_type is None

    def chain_pair(self) -> ProblemPair:
        """The chain's link B -> C as a pair (id "<id>_c"): checked by check_pair like any pair."""
        chain = self._require_chain()
        texts = build_update_texts(self.question_b, chain.question_c, chain.erratum, f"{self.id}_c", 0)
        return ProblemPair(
            id=f"{self.id}_c", source=self.source, kind=self.kind, variation_type=chain.variation_type,
            question_a=self.question_b, question_b=chain.question_c,
            answer_a=self.answer_b, answer_b=chain.answer_c, answers_a=self.answers_b, answers_b=chain.answers_c,
            equation_a=self.equation_b, equation_b=chain.equation_c, context=self.context,
            erratum=chain.erratum, restatement=chain.restatement, repeat=texts.repeat, noise=texts.noise,
            metadata=chain.metadata,
        )

    def final_pair(self) -> ProblemPair:
        """A -> C: the problem a run with both updates ends on, for classifying its outcome.

        Same id as this pair (it is this pair's problem, read to its end). The erratum is the two
        updates in delivery order; the variation type is this pair's own (A -> C is no single
        kind of change), restatement C's; repeat and noise stay this pair's.
        """
        chain = self._require_chain()
        return ProblemPair(
            id=self.id, source=self.source, kind=self.kind, variation_type=self.variation_type,
            question_a=self.question_a, question_b=chain.question_c,
            answer_a=self.answer_a, answer_b=chain.answer_c, answers_a=self.answers_a, answers_b=chain.answers_c,
            equation_a=self.equation_a, equation_b=chain.equation_c, context=self.context,
            erratum=f"{self.erratum} {chain.erratum}", restatement=chain.restatement, repeat=self.repeat,
            noise=self.noise, metadata={**self.metadata, "final_problem": "c"},
        )

    def _require_chain(self) -> ChainStep:
        if self.chain is None:
            raise ValueError(f"pair {self.id} has no chain (A -> B -> C)")
        return self.chain

    def to_dict(self, legacy_names: bool = True) -> dict:
        """JSON-ready dict; tuples become lists. With legacy_names, the research code's keys too."""
        data = asdict(self)
        data["answers_a"], data["answers_b"] = list(self.answers_a), list(self.answers_b)
        data["chain"] = None if self.chain is None else self.chain.to_dict()
        if legacy_names:
            for legacy, own in LEGACY_FIELDS.items():
                data[legacy] = data[own]
        return data

    @classmethod
    def from_dict(cls, data: dict, *, default_id: str = "jsonl_0", default_source: str = "jsonl",
                  file: str | Path | None = None, line: int | None = None,
                  item: int | None = None) -> ProblemPair:
        """Build a pair from this schema's names or the seed's layouts; fill what the seed lacks.

        Raises DataError naming file, line (or item) and field when a required field is absent or
        invalid, or when B differs from A without a variation type (see the module docstring).
        """
        aliases = {**LEGACY_FIELDS, **SEED_INPUT_FIELDS}
        merged = {own: data[legacy] for legacy, own in aliases.items() if legacy in data}
        merged.update({name: value for name, value in data.items() if name not in aliases})

        def fail(problem: str, field_name: str) -> DataError:
            return DataError(problem, file=file, line=line, item=item, field_name=field_name)

        def text_field(name: str, legacy: str) -> str:
            if name not in merged or merged[name] is None:
                raise fail("missing field", f"{name}' (or '{legacy}")
            if not isinstance(merged[name], (str, int, float)) or isinstance(merged[name], bool):
                raise fail(f"expected text, got {type(merged[name]).__name__}", name)
            return str(merged[name])

        question_a = text_field("question_a", "Question")
        stated_type = merged.get("variation_type")
        variation_type = SEED_VARIATION_TYPES.get(str(stated_type), stated_type)  # str(): may be a list
        if variation_type not in VARIATION_TYPES:
            raise fail(f"unknown variation type {stated_type!r}", "variation_type")
        kind = merged["kind"] if "kind" in merged else _infer_kind(merged, variation_type)
        if kind not in KINDS:
            raise fail(f"unknown kind {kind!r}", "kind")
        has_b = "question_b" in merged or variation_type is not None
        question_b = text_field("question_b", "alt_problem") if has_b else question_a
        seed_semantic = kind == "qa" and not {"kind", "variation_type"} & set(merged)
        if seed_semantic and question_b != question_a:
            variation_type = "question_switch"  # see the module docstring
        is_control = variation_type is None

        answer_a = _answer_text(text_field("answer_a", "Answer"), kind, fail, "answer_a")
        raw_b = merged.get("answer_b", answer_a if is_control else None)
        if raw_b is None:
            raise fail("missing field", "answer_b' (or 'alt_answer")
        answer_b = _answer_text(str(raw_b), kind, fail, "answer_b")
        equation_a = _optional_text(merged.get("equation_a"))
        equation_b = _optional_text(merged.get("equation_b"))
        if is_control:
            equation_b = equation_b or equation_a  # the seed's controls say alt_equation: null
            b_and_a = {"question_b": (question_b, question_a), "answer_b": (answer_b, answer_a),
                       "equation_b": (equation_b, equation_a)}
            if changed := [name for name, (b, a) in b_and_a.items() if b != a]:
                stated = "is null (an identical control)" if "variation_type" in merged else "is missing"
                raise fail(f"variation_type {stated} but B differs from A in {', '.join(changed)}",
                           "variation_type")

        pair_id = str(merged.get("id", default_id))
        if not PAIR_ID_PATTERN.match(pair_id):
            raise fail(f"id {pair_id!r} must match [A-Za-z0-9_]+", "id")

        updates = _updates_for(merged, question_a, question_b, variation_type, pair_id)
        metadata = merged.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise fail("expected an object", "metadata")
        if stated_type in SEED_VARIATION_TYPES:
            metadata = {**metadata, "seed_variation_type": stated_type}
        chain = _chain_from(merged.get("chain"), kind, question_b, variation_type, fail)
        return cls(
            id=pair_id,
            source=str(merged.get("source", default_source)),
            kind=kind,
            variation_type=variation_type,
            question_a=question_a,
            question_b=question_b,
            answer_a=answer_a,
            answer_b=answer_b,
            answers_a=_answer_list(merged.get("answers_a"), answer_a, fail, "answers_a"),
            answers_b=_answer_list(merged.get("answers_b"), answer_b, fail, "answers_b"),
            equation_a=equation_a,
            equation_b=equation_b,
            context=_optional_text(text_field("context", "story_content")) if merged.get("context") is not None else None,
            metadata=metadata,
            chain=chain,
            **updates,
        )


def _chain_from(value, kind: str, question_b: str, variation_type: str | None, fail) -> ChainStep | None:
    """The record's `chain` object (or null); every fault is a DataError naming `chain.<field>`."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise fail(f"expected an object (or null), got {type(value).__name__}", "chain")
    if variation_type is None:
        raise fail("an identical control (variation_type null) cannot have a chain", "chain")

    def chain_fail(problem: str, name: str) -> DataError:
        return fail(problem, f"chain.{name}")

    def text(name: str, required: bool = True) -> str | None:
        raw = value.get(name)
        if raw is None or raw == "":
            if required:
                raise chain_fail("missing field", name)
            return None
        if not isinstance(raw, (str, int, float)) or isinstance(raw, bool):
            raise chain_fail(f"expected text, got {type(raw).__name__}", name)
        return str(raw)

    question_c = text("question_c")
    chain_type = value.get("variation_type")
    if chain_type not in CHAIN_VARIATION_TYPES:
        raise chain_fail(f"expected one of {', '.join(CHAIN_VARIATION_TYPES)}, got {chain_type!r}", "variation_type")
    answer_c = _answer_text(text("answer_c"), kind, chain_fail, "answer_c")
    metadata = value.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise chain_fail("expected an object", "metadata")
    return ChainStep(
        question_c=question_c, answer_c=answer_c,
        answers_c=_answer_list(value.get("answers_c"), answer_c, chain_fail, "answers_c"),
        equation_c=text("equation_c", required=False), variation_type=chain_type,
        erratum=text("erratum", required=False) or infer_erratum(question_b, question_c, chain_type),
        restatement=text("restatement", required=False) or restatement_text(question_c),
        metadata=metadata,
    )


def _infer_kind(merged: dict, variation_type: str | None) -> str:
    """The seed wrote no kind: math records have an equation, semantic ones free-text answers."""
    if merged.get("equation_a") is not None or variation_type in MATH_VARIATION_TYPES:
        return "math"
    if variation_type == "question_switch":
        return "qa"
    answers = [merged.get(name) for name in ("answer_a", "answer_b")]
    return "math" if all(_is_number(answer) for answer in answers if answer is not None) else "qa"


def _is_number(value) -> bool:
    try:
        parse_number(str(value))
    except ValueError:
        return False
    return True


def _answer_text(raw: str, kind: str, fail, field_name: str) -> str:
    if kind != "math":
        return raw
    try:
        return format_number(parse_number(raw))
    except ValueError:
        raise fail(f"non-numeric answer {raw!r}", field_name) from None


def _answer_list(value, answer: str, fail, field_name: str) -> tuple[str, ...]:
    """All acceptable answers: a list of texts (a bare text would be split into its letters, and
    every letter would then count as a right answer)."""
    if value is None or value == []:
        return (answer,)
    if not isinstance(value, list):
        raise fail(f"expected a list of answers such as [\"Paris\"], got {type(value).__name__} {value!r}", field_name)
    for index, item in enumerate(value, start=1):
        if not isinstance(item, (str, int, float)) or isinstance(item, bool) or not str(item).strip():
            raise fail(f"answer {index} of the list is {item!r}, not a non-empty text", field_name)
    return tuple(str(item) for item in value)


def _optional_text(value) -> str | None:
    return None if value is None or value == "" else str(value)


def _updates_for(merged: dict, question_a: str, question_b: str, variation_type: str | None,
                 pair_id: str) -> dict:
    """Use the record's own update texts; legacy records get them built from A and B."""
    names = ("erratum", "restatement", "repeat", "noise")
    if all(merged.get(name) for name in names):
        return {name: str(merged[name]) for name in names}
    erratum = merged.get("erratum") or infer_erratum(question_a, question_b, variation_type)
    texts = build_update_texts(question_a, question_b, erratum, pair_id)
    return {"erratum": erratum, "restatement": texts.restatement, "repeat": texts.repeat,
            "noise": texts.noise}


def infer_erratum(question_a: str, question_b: str, variation_type: str | None) -> str:
    """An erratum for a pair that came without one: name the numbers that differ, if any."""
    if variation_type is None or question_a == question_b:
        return CONTROL_ERRATUM
    if variation_type == "question_switch":
        return question_switch_erratum(question_a, question_b)
    numbers_a = [match.group() for match in _NUMBER_IN_TEXT.finditer(question_a)]
    numbers_b = [match.group() for match in _NUMBER_IN_TEXT.finditer(question_b)]
    if len(numbers_a) == len(numbers_b):
        changes = [NumberChange(old, new) for old, new in zip(numbers_a, numbers_b) if old != new]
        if changes:
            return number_change_erratum(changes)
    return f"Correction: the problem has changed. It now reads: {question_b}"


PAIR_FIELDS = tuple(f.name for f in fields(ProblemPair))
