"""check_pair catches each kind of violation (hand-broken copies of a valid pair)."""

import dataclasses

import pytest

from measure.data import check_pair
from measure.data.arithmetic import EquationError, evaluate, parse_expression
from measure.data.augment import augment_problem
from measure.data.items import SourceItem
from measure.data.updates import build_update_texts

RECORD = SourceItem(id="apples", source="jsonl",
                      question="Sarah has 12 apples and gives 4 to each of 2 friends. How many apples are left?",
                      answer="4", equation="12-(4*2)")


def _pair(**changes):
    pair = augment_problem(RECORD, "single_number", seed=0)
    pair = dataclasses.replace(pair, **changes)
    texts = build_update_texts(pair.question_a, pair.question_b, pair.erratum, pair.id)
    return dataclasses.replace(pair, restatement=texts.restatement, noise=texts.noise)


def test_valid_pair_has_no_violations():
    assert check_pair(_pair()) == []


@pytest.mark.parametrize("changes, expected", [
    ({"answer_b": "999", "answers_b": ("999",)}, "does not evaluate to B's answer"),
    ({"question_b": "Sarah has 15 apples and gives 4 to each of 2 friends. How many apples are left?",
      "equation_b": "(15-(4*2))", "answer_b": "7", "answers_b": ("7",),
      "erratum": "Correction: 15 apples, not 12 apples.",
      "metadata": {"changes": [{"old": "12", "new": "15"}]}}, None),
    ({"question_b": "Sarah has 6 apples and gives 4 to each of 2 friends. How many apples are left?",
      "equation_b": "(6-(4*2))", "answer_b": "-2", "answers_b": ("-2",),
      "metadata": {"changes": [{"old": "12", "new": "6"}]}}, "non-negative integer"),
    ({"equation_b": "(12-(4*2))", "answer_b": "4", "answers_b": ("4",)}, "answer did not change"),
    ({"question_b": "Sarah has 112 apples and gives 4 to each of 2 friends. How many apples are left?",
      "equation_b": "(11-(4*2))", "answer_b": "3", "answers_b": ("3",),
      "metadata": {"changes": [{"old": "12", "new": "11"}]}}, "not the declared changes"),
    ({"noise": "Too short."}, "noise has"),
    ({"erratum": "Correction: something changed."}, "erratum does not name"),
])
def test_each_violation_is_reported(changes, expected):
    pair = _pair(**{k: v for k, v in changes.items() if k != "noise"})
    if "noise" in changes:
        pair = dataclasses.replace(pair, noise=changes["noise"])
    violations = check_pair(pair)
    if expected is None:
        assert violations == []
    else:
        assert any(expected in v for v in violations), violations


def test_inexact_division_is_reported():
    record = SourceItem(id="muffins", source="jsonl", question="A baker packs 24 muffins into boxes of 6. How many boxes?",
                          answer="4", equation="24/6")
    pair = augment_problem(record, "single_number", seed=0)
    broken = dataclasses.replace(
        pair, question_b="A baker packs 25 muffins into boxes of 6. How many boxes?", equation_b="(25/6)",
        answer_b="4.166667", answers_b=("4.166667",), erratum="Correction: 25 muffins, not 24 muffins.",
        metadata={"changes": [{"old": "24", "new": "25"}]})
    broken = dataclasses.replace(broken, restatement=f"Update: the problem is now: {broken.question_b}")
    assert any("exact division" in v for v in check_pair(broken)), check_pair(broken)


def test_safe_evaluator_refuses_code():
    for text in ("__import__('os').system('true')", "a+1", "[1,2]", "2**1000"):
        with pytest.raises(EquationError):
            evaluate(parse_expression(text))
    assert evaluate(parse_expression("( 76.0 - 25.0 )")) == 51
    assert evaluate(parse_expression("2^3/4")) == 2
