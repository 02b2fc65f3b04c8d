"""Small helpers for tests of code built on measure: a hand-made problem pair, and the headless
Chromium the browser tests drive."""

from __future__ import annotations

import os
import shutil

import pytest

from measure.data.pairs import ProblemPair

CHROMIUM = "/usr/bin/chromium"

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


def chromium_or_fail() -> str:
    """The headless Chromium binary; a failed test naming the install command when there is none
    (a skip only when MEASURE_SKIP_BROWSER=1 asks for one)."""
    if os.environ.get("MEASURE_SKIP_BROWSER") == "1":
        pytest.skip("MEASURE_SKIP_BROWSER=1")
    path = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if not path:
        pytest.fail(f"headless Chromium not found at {CHROMIUM}: run `apt-get install -y chromium` "
                    "(or set MEASURE_SKIP_BROWSER=1 to skip the browser tests)", pytrace=False)
    return path
