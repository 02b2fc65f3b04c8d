"""A run that corrects itself states two answers: the last statement is its answer.

Adapting mid-generation often reads "the answer is 10 ... wait, the answer is 12": taking the
first statement would score that run as stale when it adapted (and the reverse for a run that
drifts back to A). Every form is checked: "answer is", "####", \\boxed and the QA span.
"""

from __future__ import annotations

import pytest

from measure.metrics.answers import classify_math, classify_qa, extract_math_answer, extract_qa_answer

A, B = "10", "12"


@pytest.mark.parametrize(("text", "method"), [
    ("So the answer is 10. Wait, the problem changed: the answer is 12.", "answer_is"),
    ("First: #### 10\nCorrection applied, so\n#### 12", "####"),
    ("We get \\boxed{10}. With the new numbers it is \\boxed{12}.", "boxed"),
    ("Answer: 10. Hmm, no. Answer: 12", "answer_is"),
])
def test_the_last_of_two_answer_statements_is_the_answer(text, method):
    found = extract_math_answer(text)
    assert (found.text, found.method) == (B, method)
    assert classify_math(text, A, B)["outcome"] == "adapted"
    swapped = text.replace("10", "@").replace("12", "10").replace("@", "12")  # B first, then A
    assert classify_math(swapped, A, B)["outcome"] == "stale"


def test_the_last_qa_statement_is_the_answer():
    text = "The answer is the mill. Wait, with the update the answer is the castle. Done."
    assert extract_qa_answer(text) == "the castle"
    assert classify_qa(text, ["mill"], ["castle"])["outcome"] == "adapted"
    assert classify_qa(text.replace("mill", "@").replace("castle", "mill").replace("@", "castle"),
                       ["mill"], ["castle"])["outcome"] == "stale"
