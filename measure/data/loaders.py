"""Loaders for the math word-problem datasets: MAWPS, SVAMP and GSM8K (local JSONL files).

Each returns (records, LoadReport). Known bad records are detected, not kept silently:
- malformed_equation: the equation does not parse (MAWPS 603 'X=0.32=0.21');
- answer_mismatch: the answer differs from the equation's value by more than 1%;
- duplicate_conflicting_answer: the same text with different answers (MAWPS 1065/1911);
  every record of such a group is dropped, since nothing says which one is right;
- duplicate_text: a repeat of an earlier text with the same answer (the first is kept).
Answers within 1% of the equation are kept and flagged `answer_rounded`.
Bad input (missing file, invalid JSON, missing field, non-numeric answer) raises DataError.
"""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

from measure.data.arithmetic import (
    EquationError,
    evaluate,
    format_number,
    parse_expression,
    parse_number,
    relative_difference,
    split_assignment,
)
from measure.data.errors import DataError, LoadReport
from measure.data.gsm8k_equations import rebuild_equation
from measure.data.items import SourceItem, read_jsonl, require

ANSWER_TOLERANCE = 0.01  # relative; the README's line between "rounded" and "wrong"
# Differences below this are how the answer text was written (e.g. 0.333333 for 1/3), not rounding.
ROUNDING_NOISE = 1e-6
MATH_FILES = {
    "mawps": "mawps/mawps.jsonl",
    "svamp": "svamp/svamp.jsonl",
    "gsm8k": "gsm8k/test.jsonl",
}
SVAMP_VARIATIONS_FILE = "svamp/svamp_masked_with_variation_type.jsonl"


def detokenize(text: str) -> str:
    """Undo MAWPS's spaces before punctuation ('well . If' -> 'well. If')."""
    return re.sub(r"\s+([.,?!;:])", r"\1", text).strip()


def _numeric_answer(raw, path: Path, line: int, field_name: str) -> Fraction:
    try:
        return parse_number(str(raw))
    except ValueError:
        raise DataError(f"non-numeric answer {raw!r}", file=path, line=line, field_name=field_name) from None


def _checked_expression(record_id: str, expression: str, answer: Fraction, report: LoadReport) -> bool:
    """True when the expression parses and gives the answer within ANSWER_TOLERANCE."""
    try:
        value = evaluate(parse_expression(expression))
    except EquationError:
        report.reject("malformed_equation", record_id)
        return False
    difference = relative_difference(value, answer)
    if difference > ANSWER_TOLERANCE:
        report.reject("answer_mismatch", record_id)
        return False
    if difference > ROUNDING_NOISE:
        report.flag("answer_rounded", record_id)
    return True


def _explicit_or_to_solve(equation: str) -> tuple[str | None, str | None]:
    """('x', '56*9') for 'x=56*9'; ('x', None) for one to solve such as 'X-9=4'; (None, None) if malformed."""
    if equation.count("=") != 1:
        return None, None
    try:
        variable, expression = split_assignment(equation)
        if not re.search(rf"\b{re.escape(variable)}\b", expression):
            return variable, expression
    except EquationError:
        pass
    names = set(re.findall(r"[A-Za-z_]\w*", equation))
    return (names.pop(), None) if len(names) == 1 else (None, None)


def _equation_holds_at(equation: str, variable: str, answer: Fraction) -> bool:
    """For an equation still to be solved: does it hold (within 1%) when variable = answer?"""
    substituted = re.sub(rf"\b{re.escape(variable)}\b", f"({answer.numerator}/{answer.denominator})", equation)
    left, right = substituted.split("=")
    try:
        left_value, right_value = evaluate(parse_expression(left)), evaluate(parse_expression(right))
    except EquationError:
        return False
    return relative_difference(left_value, right_value) <= ANSWER_TOLERANCE


def drop_duplicates(records: list[SourceItem], report: LoadReport, key=lambda r: r.question,
                    answer_key=lambda r: parse_number(r.answer)) -> list[SourceItem]:
    """Keep the first of same-text records; drop whole groups whose answers disagree."""
    groups: dict[str, list[SourceItem]] = {}
    for record in records:
        groups.setdefault(key(record), []).append(record)
    kept = []
    for record in records:
        group = groups[key(record)]
        if len({answer_key(member) for member in group}) > 1:
            report.reject("duplicate_conflicting_answer", record.id)
        elif record is not group[0]:
            report.reject("duplicate_text", record.id)
        else:
            kept.append(record)
    return kept


def load_mawps(path: str | Path) -> tuple[list[SourceItem], LoadReport]:
    path = Path(path)
    report = LoadReport(source="mawps", file=str(path))
    records = []
    for line, obj in read_jsonl(path):
        report.total += 1
        record_id = f"mawps_{require(obj, 'id', int, path, line)}"
        text = require(obj, "original_text", str, path, line)
        equation = require(obj, "equation", str, path, line)
        answer = _numeric_answer(require(obj, "ans", (int, float, str), path, line), path, line, "ans")
        metadata = {"source_id": obj["id"], "original_text": text, "equation_raw": equation}
        variable, expression = _explicit_or_to_solve(equation)
        if expression is None and variable is None:
            report.reject("malformed_equation", record_id)
            continue
        if expression is None:
            # An equation still to be solved for x: usable for loading, not for augmentation.
            if not _equation_holds_at(equation, variable, answer):
                report.reject("answer_mismatch", record_id)
                continue
            report.flag("equation_to_solve", record_id)
        elif not _checked_expression(record_id, expression, answer, report):
            continue
        records.append(SourceItem(id=record_id, source="mawps", question=detokenize(text),
                                    answer=format_number(answer), equation=expression, metadata=metadata))
    kept = drop_duplicates(records, report, key=lambda r: r.metadata["original_text"])
    report.kept = len(kept)
    return kept, report


def _svamp_variation_codes(path: Path) -> dict[str, list[str]]:
    """svamp_id -> variation codes from the masked CSV export, when that file is present."""
    if not path.is_file():
        return {}
    codes = {}
    for _, obj in read_jsonl(path):
        if obj.get("svamp_id"):
            codes[obj["svamp_id"]] = [code.strip() for code in str(obj.get("Variation Type", "")).split(",") if code.strip()]
    return codes


def load_svamp(path: str | Path) -> tuple[list[SourceItem], LoadReport]:
    path = Path(path)
    report = LoadReport(source="svamp", file=str(path))
    variation_codes = _svamp_variation_codes(path.parent / Path(SVAMP_VARIATIONS_FILE).name)
    records = []
    for line, obj in read_jsonl(path):
        report.total += 1
        source_id = require(obj, "ID", str, path, line)
        record_id = "svamp_" + re.sub(r"\W", "_", source_id)
        body = require(obj, "Body", str, path, line).strip()
        question = require(obj, "Question", str, path, line).strip()
        equation = require(obj, "Equation", str, path, line).strip()
        answer = _numeric_answer(require(obj, "Answer", (int, float, str), path, line), path, line, "Answer")
        if not _checked_expression(record_id, equation, answer, report):
            continue
        metadata = {"source_id": source_id, "type": obj.get("Type"),
                    "variation_codes": variation_codes.get(source_id, [])}
        records.append(SourceItem(id=record_id, source="svamp", question=f"{body} {question}",
                                    answer=format_number(answer), equation=equation, metadata=metadata))
    kept = drop_duplicates(records, report)
    report.kept = len(kept)
    return kept, report


def load_gsm8k(path: str | Path) -> tuple[list[SourceItem], LoadReport]:
    """GSM8K has no equation field: one is rebuilt from the solution's <<expr=value>> steps.

    Records whose equation cannot be rebuilt are kept (the answer is fine) with equation None
    and a flag naming why; the generator rejects them.
    """
    path = Path(path)
    report = LoadReport(source="gsm8k", file=str(path))
    records = []
    for line, obj in read_jsonl(path):
        report.total += 1
        record_id = f"gsm8k_{line}"
        question = require(obj, "question", str, path, line)
        solution = require(obj, "answer", str, path, line)
        if "####" not in solution:
            raise DataError("no '#### <answer>' line in the solution", file=path, line=line, field_name="answer")
        final_text = solution.rsplit("####", 1)[1].strip()
        answer = _numeric_answer(final_text, path, line, "answer")
        equation, problem = rebuild_equation(solution, answer, question)
        if problem:
            report.flag(problem, record_id)
        records.append(SourceItem(id=record_id, source="gsm8k", question=question.strip(),
                                    answer=format_number(answer), equation=equation,
                                    metadata={"source_line": line, "solution": solution}))
    kept = drop_duplicates(records, report)
    report.kept = len(kept)
    return kept, report


MATH_LOADERS = {"mawps": load_mawps, "svamp": load_svamp, "gsm8k": load_gsm8k}
