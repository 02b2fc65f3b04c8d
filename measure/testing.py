"""Small helpers for tests of code built on measure: a hand-made problem pair."""

from __future__ import annotations

from measure.data.pairs import ProblemPair

QUESTION_A = "Sarah has 5 apples. She buys 7 more apples. How many apples does she have now?"
QUESTION_B = "Sarah has 7 apples. She buys 7 more apples. How many apples does she have now?"


def example_pair(question_b: str | None = None, pair_id: str = "p1") -> ProblemPair:
    """A single-number change (5 -> 7 apples); pass ``question_b=QUESTION_A`` for a control."""
    question_b = question_b or QUESTION_B
    return ProblemPair(
        id=pair_id, source="builtin", kind="math",
        variation_type=None if question_b == QUESTION_A else "single_number",
        question_a=QUESTION_A, question_b=question_b, answer_a="12", answer_b="14",
        answers_a=("12",), answers_b=("14",), equation_a="x=5+7", equation_b="x=7+7", context=None,
        erratum="Correction: Sarah has 7 apples, not 5.",
        restatement=f"Update: the problem is now: {question_b}",
        repeat=f"To restate the problem: {QUESTION_A}",
        noise="The weather is sunny today and the birds sing in the tall green trees near the river.",
        metadata={},
    )
