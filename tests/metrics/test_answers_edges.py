"""Edges of answer extraction and classification left open by the other tests (found by mutation
testing, docs/testing.md): nested and unclosed boxes, the fields of a cut answer, LaTeX clean-up,
tolerances at their bound, and every field of a QA classification."""

from __future__ import annotations

from fractions import Fraction

import pytest

from measure.metrics.answers import (
    _gold_value,
    classify_math,
    classify_qa,
    extract_math_answer,
    extract_qa_answer,
    format_value,
    numbers_equal,
    parse_number,
    token_f1,
)


def test_a_box_ends_at_its_own_closing_brace():
    found = extract_math_answer("We write \\boxed{n}. So the answer is 9, not 5.")
    assert (found.text, found.method) == ("9", "answer_is")  # the box holds no number: not 9 from after it
    assert extract_math_answer("\\boxed{\\frac{1}{2}} and {7}").text == "0.5"
    assert extract_math_answer("\\boxed{{{4}}} 7}").text == "4"
    assert extract_math_answer("cut short: \\boxed{12").text == "12"  # unclosed: everything after it
    assert extract_math_answer("").method == "none" and extract_math_answer(None).method == "none"
    assert extract_math_answer("3 #### 4 and 5").text == "4"


def test_an_answer_cut_by_the_token_limit_keeps_its_number_for_inspection_only():
    assert classify_math("The answer is 1", "10", "12", finished=False) == {
        "outcome": "unfinished", "answer": None, "answer_method": "none", "last_number": "1",
        "answers_identical": False}


def test_latex_is_cleaned_before_numbers_are_read():
    assert parse_number("\\text{apples: } \\mathrm{42}") == 42
    assert parse_number("\\$12\\!,\\,5 \\% {,}") == 12
    assert parse_number("1{,}200") == 1200
    assert extract_math_answer("the answer is 3/0 or 6").text == "6"  # a zero denominator is skipped
    assert extract_math_answer("the answer is 4/1").text == "4"


def test_values_are_formatted_exactly():
    assert format_value(Fraction(1, 8)) == "0.125"
    assert format_value(Fraction(1, 6)) == "1/6"
    assert format_value(Fraction(1, 40)) == "0.025"
    assert format_value(Fraction(10**20 + 1, 10)) == "10000000000000000000.1"  # never in exponent form
    assert format_value(Fraction(1, 3 * 5)) == "1/15"


def test_number_tolerance_and_gold_values():
    assert numbers_equal(Fraction(1), Fraction(1) + Fraction(1, 10**6)) is True  # at the relative bound
    assert numbers_equal(Fraction(1), Fraction(-1)) is False
    assert numbers_equal(Fraction(1000), Fraction(1001)) is False
    assert numbers_equal(None, None) is False and numbers_equal(Fraction(1), None) is False
    assert _gold_value(12) == 12 and _gold_value(2.5) == Fraction(5, 2) and _gold_value("12 apples") == 12
    assert _gold_value(True) is None  # a bool is no number


def test_qa_spans():
    assert extract_qa_answer("The answer is __Paris__!\nMore text.") == "Paris"
    assert extract_qa_answer("The answer is Paris, France. Then more.\nLine two.") == "Paris, France"
    assert extract_qa_answer("Paris.\nThe answer follows") == "Paris"
    assert extract_qa_answer("?Paris") == "?Paris"  # only trailing punctuation is dropped
    assert token_f1("paris", []) == 0.0 and token_f1("paris", "Paris") == 1.0


@pytest.mark.parametrize(("text", "outcome"), [
    ("The answer is castle.", "adapted"),
    ("The answer is mill.", "stale"),
    ("The answer is red mill castle tower.", "other"),  # both named, both F1 0.4
])
def test_qa_classification_fields(text, outcome):
    result = classify_qa(text, ["mill"], ["castle"])
    assert result["outcome"] == outcome
    assert set(result) == {"outcome", "answer", "answer_method", "answers_identical", "em_a", "em_b", "f1_a",
                           "f1_b", "contains_a", "contains_b"}
    assert result["answer"] == text[len("The answer is "):-1] and result["answer_method"] == "answer_is"
    assert result["answers_identical"] is False
    assert result["em_a"] == float(outcome == "stale") and result["em_b"] == float(outcome == "adapted")
    assert result["contains_a"] == ("mill" in text) and result["contains_b"] == ("castle" in text)


def test_qa_f1_at_the_threshold_and_ties():
    half = classify_qa("The answer is old mill.", ["the mill"], ["old tower"])  # F1 0.67 vs 0.5
    assert half["f1_a"] == pytest.approx(2 / 3) and half["f1_b"] == pytest.approx(0.5)
    assert half["outcome"] == "stale"
    at = classify_qa("The answer is blue house.", ["red barn"], ["blue barn"], f1_threshold=0.5)
    assert at["f1_b"] == 0.5 and at["outcome"] == "adapted"  # F1 exactly at the threshold counts
    tie = classify_qa("The answer is blue red.", ["red green"], ["blue green"], f1_threshold=0.5)
    assert tie["f1_a"] == tie["f1_b"] == 0.5 and tie["outcome"] == "adapted"  # a tie goes to B
    assert classify_qa("The answer is x.", ["a"], ["a", "b"])["answers_identical"] is True


def test_latex_text_and_thin_spaces():
    assert parse_number("\\text{7 apples} 5") == 5  # \text{...} is a label, not the answer
    assert parse_number("1\\,000 and 1\\!000") == 1000
    assert format_value(Fraction(1, 10**7)) == "0.0000001"  # never 1E-7


def test_qa_stale_needs_a_at_the_threshold_and_above_b():
    at = classify_qa("The answer is red barn.", ["red house"], ["blue car"])
    assert at["f1_a"] == 0.5 and at["outcome"] == "stale"
    below = classify_qa("The answer is red one two three.", ["red barn"], ["blue car"])
    assert below["f1_a"] == pytest.approx(1 / 3) and below["outcome"] == "other"
