"""Question-answering sources: FairytaleQA (two questions about one story section) and NQ-open
(two unrelated questions). Loaders return SourceRecords; `qa_pairs` turns them into pairs.

Pairs are `question_switch` (B asks a different question) or, every CONTROL_EVERY-th pair,
an identical control (B == A), so controls run through every condition as for math.
"""

from __future__ import annotations

import re
import string
from pathlib import Path

from measure.data.errors import DataError, LoadReport
from measure.data.items import SourceItem, read_jsonl, require
from measure.data.loaders import drop_duplicates
from measure.data.pairs import ProblemPair
from measure.data.updates import (
    QA_CONTROL_ERRATUM,
    build_update_texts,
    question_switch_erratum,
    stable_rng,
)

QA_FILES = {
    "fairytaleqa": ("fairytaleqa/test.jsonl", "fairytaleqa/val.jsonl"),
    "nq_open": ("nq_open/NQ-open.dev.jsonl",),
}
CONTROL_EVERY = 4  # one identical control per four pairs: the 25% default of the math mix
_ANSWER_FIELDS = ("answer1", "answer2", "answer3", "answer4", "answer5", "answer6")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def load_fairytaleqa(paths: list[str | Path] | str | Path) -> tuple[list[SourceItem], LoadReport]:
    """One record per question whose answer lies in a single, known section (context = its text)."""
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    report = LoadReport(source="fairytaleqa", file=", ".join(map(str, paths)))
    records = []
    for path in paths:
        for line, story in read_jsonl(path):
            story_name = require(story, "story_name", str, path, line)
            split = str(story.get("split", path.stem))
            sections = {}
            for number, section in enumerate(require(story, "sections", list, path, line), start=1):
                if not isinstance(section, dict) or "section" not in section or "text" not in section:
                    raise DataError(f"section {number}: each section needs 'section' and 'text'", file=path,
                                    line=line, field_name="sections")
                if not isinstance(section["text"], str):
                    raise DataError(f"section {number}: 'text' must be text, got {type(section['text']).__name__}",
                                    file=path, line=line, field_name="sections")
                sections[str(section["section"])] = section["text"]
            for number, question in enumerate(require(story, "questions", list, path, line), start=1):
                if not isinstance(question, dict) or "question" not in question or "cor_section" not in question:
                    raise DataError(f"question {number}: each question needs 'question' and 'cor_section'", file=path,
                                    line=line, field_name="questions")
                bad = [name for name in ("question", *_ANSWER_FIELDS)
                       if question.get(name) is not None and not isinstance(question[name], str)]
                if bad:
                    raise DataError(f"question {number}: {bad[0]!r} must be text, got {type(question[bad[0]]).__name__}",
                                    file=path, line=line, field_name="questions")
                report.total += 1
                record_id = f"fairytaleqa_{split}_{_slug(story_name)}_{_slug(str(question.get('question_id', report.total)))}"
                raw = (question.get(f, "") for f in _ANSWER_FIELDS)
                answers = tuple(dict.fromkeys(a.strip() for a in raw if a and a.strip()))
                section_id = str(question["cor_section"]).strip()
                if not answers or not question["question"].strip():
                    report.reject("no_answer", record_id)
                elif "," in section_id:
                    report.reject("multi_section", record_id)
                elif section_id not in sections:
                    report.reject("unknown_section", record_id)
                else:
                    records.append(SourceItem(
                        id=record_id, source="fairytaleqa", question=question["question"].strip(),
                        answer=answers[0], answers=answers, context=sections[section_id].strip(),
                        metadata={"story": story_name, "split": split, "section": section_id,
                                  "question_id": question.get("question_id"),
                                  "attribute": question.get("attribute1")}))
    report.kept = len(records)
    return records, report


def load_nq_open(path: str | Path) -> tuple[list[SourceItem], LoadReport]:
    path = Path(path)
    report = LoadReport(source="nq_open", file=str(path))
    records = []
    for line, obj in read_jsonl(path):
        report.total += 1
        question = require(obj, "question", str, path, line).strip()
        answers = tuple(a.strip() for a in require(obj, "answer", list, path, line) if isinstance(a, str) and a.strip())
        record_id = f"nq_open_{line}"
        if not answers or not question:
            report.reject("no_answer", record_id)
            continue
        records.append(SourceItem(id=record_id, source="nq_open", question=question, answer=answers[0],
                                    answers=answers, metadata={"source_line": line}))
    kept = drop_duplicates(records, report, key=lambda r: r.question.lower(),
                           answer_key=lambda r: frozenset(map(normalize_answer, r.all_answers)))
    report.kept = len(kept)
    return kept, report


def normalize_answer(text: str) -> str:
    """SQuAD-style normalisation used to tell whether two answers are the same."""
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    return " ".join(word for word in text.split() if word not in ("a", "an", "the"))


def answers_overlap(a: SourceItem, b: SourceItem) -> bool:
    return bool({normalize_answer(x) for x in a.all_answers} & {normalize_answer(x) for x in b.all_answers})


def _candidate_switches(records: list[SourceItem], source: str, seed: int) -> list[tuple[SourceItem, SourceItem]]:
    """Pairs of distinct questions with different answers: within a section, or across the set."""
    if source == "fairytaleqa":
        groups: dict[tuple, list[SourceItem]] = {}
        for record in records:
            groups.setdefault((record.metadata["split"], record.metadata["story"], record.metadata["section"]), []).append(record)
        ordered_groups = [groups[key] for key in sorted(groups)]
    else:
        ordered_groups = [list(records)]
    pairs = []
    for group in ordered_groups:
        members = list(group)
        stable_rng(source, seed, members[0].id).shuffle(members)
        for first, second in zip(members[0::2], members[1::2]):
            if first.question != second.question and not answers_overlap(first, second):
                pairs.append((first, second))
    stable_rng(source, seed, "order").shuffle(pairs)
    return pairs


def qa_pairs(records: list[SourceItem], source: str, seed: int = 0) -> list[ProblemPair]:
    pairs = []
    for index, (first, second) in enumerate(_candidate_switches(records, source, seed)):
        is_control = index % CONTROL_EVERY == CONTROL_EVERY - 1
        second = first if is_control else second
        pair_id = f"{source}_{index}"
        erratum = QA_CONTROL_ERRATUM if is_control else question_switch_erratum(first.question, second.question)
        texts = build_update_texts(first.question, second.question, erratum, pair_id, seed)
        pairs.append(ProblemPair(
            id=pair_id, source=source, kind="qa",
            variation_type=None if is_control else "question_switch",
            question_a=first.question, question_b=second.question,
            answer_a=first.answer, answer_b=second.answer,
            answers_a=first.all_answers, answers_b=second.all_answers,
            equation_a=None, equation_b=None, context=first.context,
            erratum=texts.erratum, restatement=texts.restatement, repeat=texts.repeat, noise=texts.noise,
            metadata={"record_a": first.id, "record_b": second.id, "seed": seed, **{
                f"a_{k}": v for k, v in first.metadata.items() if k in ("story", "split", "section")}},
        ))
    return pairs
