"""ProblemPair: the one typed record the rest of the project consumes, and its JSONL form.

JSONL lines carry this schema's own field names and, alongside, the original research code's
names (`Question`, `Answer`, `Equation`, `alt_problem`, `alt_answer`, `alt_equation`,
`variation_type`), so files written here feed the old tools and old files load here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from measure.data.arithmetic import format_number, parse_number
from measure.data.errors import DataError
from measure.data.records import read_jsonl
from measure.data.updates import (
    CONTROL_ERRATUM,
    NumberChange,
    build_update_texts,
    number_change_erratum,
)

VARIATION_TYPES = ("single_number", "multi_number", "added_step", "question_switch", None)
KINDS = ("math", "qa")
SOURCES = ("builtin", "mawps", "svamp", "gsm8k", "fairytaleqa", "nq_open", "jsonl")
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
_NUMBER_IN_TEXT = re.compile(r"(?<![\w.])\d+(?:,\d{3})*(?:\.\d+)?(?![\w]|\.\d)")


@dataclass(frozen=True)
class ProblemPair:
    id: str                      # unique, stable, [A-Za-z0-9_]+ (used in pytest ids)
    source: str                  # builtin | mawps | svamp | gsm8k | fairytaleqa | nq_open | jsonl
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

    @property
    def is_control(self) -> bool:
        return self.variation_type is None

    def to_dict(self, legacy_names: bool = True) -> dict:
        """JSON-ready dict; tuples become lists. With legacy_names, the research code's keys too."""
        data = asdict(self)
        data["answers_a"], data["answers_b"] = list(self.answers_a), list(self.answers_b)
        if legacy_names:
            for legacy, own in LEGACY_FIELDS.items():
                data[legacy] = data[own]
        return data

    @classmethod
    def from_dict(cls, data: dict, *, default_id: str = "jsonl_0", default_source: str = "jsonl",
                  file: str | Path | None = None, line: int | None = None) -> ProblemPair:
        """Build a pair from this schema's names or the research code's; fill what legacy lacks.

        Raises DataError naming file, line and field when a required field is absent or invalid.
        """
        merged = {own: data[legacy] for legacy, own in LEGACY_FIELDS.items() if legacy in data}
        merged.update({name: value for name, value in data.items() if name not in LEGACY_FIELDS})

        def fail(problem: str, field_name: str) -> DataError:
            return DataError(problem, file=file, line=line, field_name=field_name)

        def text_field(name: str, legacy: str) -> str:
            if name not in merged or merged[name] is None:
                raise fail("missing field", f"{name}' (or '{legacy}")
            if not isinstance(merged[name], (str, int, float)) or isinstance(merged[name], bool):
                raise fail(f"expected text, got {type(merged[name]).__name__}", name)
            return str(merged[name])

        question_a = text_field("question_a", "Question")
        variation_type = merged.get("variation_type")
        if variation_type not in VARIATION_TYPES:
            raise fail(f"unknown variation type {variation_type!r}", "variation_type")
        is_control = variation_type is None
        question_b = question_a if is_control and "question_b" not in merged else text_field("question_b", "alt_problem")
        kind = merged.get("kind", "math")
        if kind not in KINDS:
            raise fail(f"unknown kind {kind!r}", "kind")

        answer_a = _answer_text(text_field("answer_a", "Answer"), kind, fail, "answer_a")
        raw_b = merged.get("answer_b", answer_a if is_control else None)
        if raw_b is None:
            raise fail("missing field", "answer_b' (or 'alt_answer")
        answer_b = _answer_text(str(raw_b), kind, fail, "answer_b")
        equation_a = _optional_text(merged.get("equation_a"))
        equation_b = _optional_text(merged.get("equation_b", equation_a if is_control else None))

        pair_id = str(merged.get("id", default_id))
        if not PAIR_ID_PATTERN.match(pair_id):
            raise fail(f"id {pair_id!r} must match [A-Za-z0-9_]+", "id")

        updates = _updates_for(merged, question_a, question_b, variation_type, pair_id)
        metadata = merged.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise fail("expected an object", "metadata")
        return cls(
            id=pair_id,
            source=str(merged.get("source", default_source)),
            kind=kind,
            variation_type=variation_type,
            question_a=question_a,
            question_b=question_b,
            answer_a=answer_a,
            answer_b=answer_b,
            answers_a=tuple(merged.get("answers_a") or (answer_a,)),
            answers_b=tuple(merged.get("answers_b") or (answer_b,)),
            equation_a=equation_a,
            equation_b=equation_b,
            context=_optional_text(merged.get("context")),
            metadata=metadata,
            **updates,
        )


def _answer_text(raw: str, kind: str, fail, field_name: str) -> str:
    if kind != "math":
        return raw
    try:
        return format_number(parse_number(raw))
    except ValueError:
        raise fail(f"non-numeric answer {raw!r}", field_name) from None


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
    numbers_a = [match.group() for match in _NUMBER_IN_TEXT.finditer(question_a)]
    numbers_b = [match.group() for match in _NUMBER_IN_TEXT.finditer(question_b)]
    if len(numbers_a) == len(numbers_b):
        changes = [NumberChange(old, new) for old, new in zip(numbers_a, numbers_b) if old != new]
        if changes:
            return number_change_erratum(changes)
    return f"Correction: the problem has changed. It now reads: {question_b}"


def read_pairs(path: str | Path) -> list[ProblemPair]:
    """Read a JSONL file of pairs (either field naming); DataError names file, line and field."""
    pairs, seen = [], set()
    for line_number, obj in read_jsonl(path):
        pair = ProblemPair.from_dict(obj, default_id=f"jsonl_{line_number}", file=path, line=line_number)
        if pair.id in seen:
            raise DataError(f"duplicate id {pair.id!r}", file=path, line=line_number, field_name="id")
        seen.add(pair.id)
        pairs.append(pair)
    return pairs


def write_pairs(pairs: Iterable[ProblemPair], path: str | Path, legacy_names: bool = True) -> int:
    """Write pairs as JSONL; returns how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for pair in pairs:
            handle.write(json.dumps(pair.to_dict(legacy_names), ensure_ascii=False) + "\n")
            count += 1
    return count


PAIR_FIELDS = tuple(f.name for f in fields(ProblemPair))
