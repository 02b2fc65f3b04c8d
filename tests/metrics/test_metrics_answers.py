from dataclasses import dataclass
from fractions import Fraction

import pytest

from measure.metrics.answers import (
    classify_math,
    classify_qa,
    exact_match,
    extract_math_answer,
    extract_qa_answer,
    normalize_answer,
    token_f1,
)

MATH_CASES = [
    ("So she has \\boxed{12} apples.", "12", "boxed"),
    ("The answer is \\boxed{\\frac{3}{4}}", "0.75", "boxed"),
    ("\\boxed{\\dfrac{1}{3}}", "1/3", "boxed"),
    ("\\boxed{12 \\text{ apples}} and then 99", "12", "boxed"),
    ("$\\boxed{-7}$", "-7", "boxed"),
    ("\\boxed{1{,}000}", "1000", "boxed"),
    ("\\boxed{\\$1,250.50}", "1250.5", "boxed"),
    ("We get 3 + 4 = 7.\n#### 7", "7", "####"),
    ("#### 1,200", "1200", "####"),
    ("The answer is -5 apples.", "-5", "answer_is"),
    ("The final answer is: 2.50 dollars. Check: 2 + 0.5", "2.5", "answer_is"),
    ("Answer: −3", "-3", "answer_is"),
    ("He pays $12.50 in total.", "12.5", "last_number"),
    ("Half of it is 3/4 of a cup", "0.75", "last_number"),
    ("That is 50% of 80, so 40.", "40", "last_number"),
    ("5 - 8 = -3", "-3", "last_number"),
    ("It costs 1,234,567 dollars", "1234567", "last_number"),
    ("Total: .5 liters", "0.5", "last_number"),
    ("I do not know.", None, "none"),
    ("", None, "none"),
]


@pytest.mark.parametrize("text,expected,method", MATH_CASES)
def test_extract_math_answer(text, expected, method):
    got = extract_math_answer(text)
    if method == "last_number":  # no stated answer: nothing is guessed, the last number is kept apart
        assert (got.text, got.value, got.method, got.last_number) == (None, None, "none", expected)
    else:
        assert (got.text, got.method) == (expected, method)


@pytest.mark.parametrize(
    "text,a,b,outcome",
    [
        ("The answer is 12.", "10", "12", "adapted"),
        ("The answer is 10.", "10", "12", "stale"),
        ("The answer is 11.", "10", "12", "other"),
        ("no number here", "10", "12", "unfinished"),
        ("So 10 + 2 = 12 apples.", "10", "12", "unfinished"),  # never guessed from the last number
        ("#### 2.50", "2", "2.5", "adapted"),
        ("\\boxed{5/2}", "2", "2.5", "adapted"),
        ("The answer is 7", "7", "7", "adapted"),  # controls: A == B -> adapted, flagged identical
    ],
)
def test_classify_math(text, a, b, outcome):
    res = classify_math(text, a, b)
    assert res["outcome"] == outcome
    assert res["answers_identical"] == (a == b)


def test_an_answer_cut_by_the_token_limit_is_not_taken():
    assert classify_math("The answer is 1", "10", "12", finished=False)["outcome"] == "unfinished"
    assert classify_math("The answer is 1", "10", "1", finished=True)["outcome"] == "adapted"
    assert classify_math("The answer is 12. Then", "10", "12", finished=False)["outcome"] == "adapted"
    cut = classify_math("So 5 + 7 = 12", "12", "11", finished=False)
    assert (cut["outcome"], cut["answer"], cut["last_number"]) == ("unfinished", None, "12")


def test_extracted_value_is_exact():
    assert extract_math_answer("\\boxed{0.1}").value == Fraction(1, 10)


@pytest.mark.parametrize(
    "pred,gold,em,f1",
    [
        ("The Eiffel Tower!", ["eiffel tower"], 1.0, 1.0),
        ("Eiffel", ["Eiffel Tower"], 0.0, 2 / 3),
        ("Paris", ["London", "paris"], 1.0, 1.0),
        ("", ["x"], 0.0, 0.0),
    ],
)
def test_qa_em_f1(pred, gold, em, f1):
    assert exact_match(pred, gold) == em
    assert token_f1(pred, gold) == pytest.approx(f1)


def test_normalize_answer_squad():
    assert normalize_answer("  The  Cat, a dog & AN owl. ") == "cat dog owl"


def test_extract_qa_answer_and_classify():
    assert extract_qa_answer("The answer is Paris. It is in France.") == "Paris"
    assert extract_qa_answer("**Dr. Smith** wrote it\nmore") == "Dr. Smith wrote it"
    res = classify_qa("Answer: the old mill.", ["the old mill"], ["the castle"])
    assert res["outcome"] == "stale" and res["em_a"] == 1.0 and res["contains_a"] and not res["contains_b"]
    assert classify_qa("The castle.", ["the old mill"], ["castle"])["outcome"] == "adapted"
    assert classify_qa("Nobody knows.", ["mill"], ["castle"])["outcome"] == "other"
    # a first line cut by the token limit is a sentence in progress, not an answer
    assert classify_qa("The castle was", ["mill"], ["castle"], finished=False)["outcome"] == "unfinished"
    assert classify_qa("The answer is castle. It", ["mill"], ["castle"], finished=False)["outcome"] == "adapted"
    assert classify_qa("", ["mill"], ["castle"])["outcome"] == "unfinished"
    # a sentence that names exactly one answer list counts for it, whatever its F1
    sentence = "The lost fishing boat was called the Marigold."
    assert classify_qa(sentence, ["green"], ["the Marigold", "Marigold"])["outcome"] == "adapted"
    assert classify_qa(sentence, ["the Marigold"], ["green"])["outcome"] == "stale"
    assert classify_qa("It was green, like the Marigold.", ["green"], ["Marigold"])["outcome"] == "other"


# Runs of the default problems stopped by the token limit (`measure run --points 8 --max-new-tokens 32`),
# their generated text exactly as measured: each mentions a phrase of A's answer while retelling the
# story or explaining, and none states an answer in answer form before the limit.
CUT_STORY_RUNS = [
    # builtin_story_21, flush and partial at t8 (the same text): the limit cuts the retelling
    ("The answer is: The story takes place in a kingdom where it never rained, but where a girl named Lio found a "
     "cloud caught in a thorn bush", ["caught in a thorn bush", "in a thorn bush"], ["a fishing net", "fishing net"]),
    # builtin_story_37, flush at t8
    ("The answer is: The fox Rusk hid in the reeds to watch the moon's reflection shiver, and when the moon rose "
     "again, the lake was full", ["a fox named Rusk", "Rusk"], ["tiny silver fish", "silver fish"]),
    # builtin_story_47, injection at t8: the answer line broke off at the change ("fire" + "1."), a list began
    ("The answer is: The jar of fire1. The jar of fireflies is a type of insect, not a sword.\n\n2. The troll was",
     ["a jar of fireflies", "fireflies"], ["a troll", "troll"]),
]


@pytest.mark.parametrize(("text", "answers_a", "answers_b"), CUT_STORY_RUNS)
def test_a_phrase_of_an_answer_inside_narration_cut_by_the_limit_is_no_answer(text, answers_a, answers_b):
    assert classify_qa(text, answers_a, answers_b, finished=False)["outcome"] == "unfinished"
    # the same text, had the run ended by itself, states its answer after "The answer is:"
    assert classify_qa(text, answers_a, answers_b, finished=True)["outcome"] == "stale"


def test_a_complete_answer_line_counts_when_the_limit_stops_the_run_later():
    # builtin_story_47's flush run ended by itself with this line; cut by the limit after more text, it still counts
    text = "The answer is: The jar of fireflies.\nThen the knight"
    assert classify_qa(text, ["a jar of fireflies", "fireflies"], ["a troll", "troll"], finished=False)["outcome"] == "stale"
    assert classify_qa("The answer is: a troll.", ["fireflies"], ["a troll"], finished=False)["outcome"] == "adapted"
    assert classify_qa("The answer is: the troll from the", ["fireflies"], ["troll"], finished=False)["outcome"] == \
        "unfinished"


@dataclass(frozen=True)
class Pair:
    kind: str
    answer_a: str
    answer_b: str
    answers_a: tuple
    answers_b: tuple
    variation_type: str | None = "single_number"


def test_summarize_run_outcome_and_json(make_run):
    import json

    from measure.metrics.registry import spec_for
    from measure.metrics.summarize import summarize_run

    run = make_run(switch=4, t0=6, n_after=25)
    row = summarize_run(run, Pair("math", "10", "12", ("10",), ("12",)))
    assert row["outcome"] == "adapted" and row["outcome_adapted"] is True and row["answer"] == "12"
    assert row["variation_type"] == "single_number" and row["n_after"] == 25
    assert row["attr_injected_count"] + row["attr_original_count"] == 25
    assert row["attr_original_count"] == 3  # positions 1..3 follow A
    assert row["log_ratio_immediate"] is not None and row["log_ratio_long"] is not None
    assert row["hidden_cos_oracle_L0_all"] == pytest.approx(1.0)
    json.dumps(row, allow_nan=False)
    unknown = [k for k in row if spec_for(k) is None]
    assert not unknown, unknown
    # no attention, no hidden states, few tokens: keys stay, values None
    run.attention_mass, run.hidden_cosine = None, {}
    row2 = summarize_run(run, Pair("qa", "mill", "castle", ("mill",), ("castle",)), thresholds={"gap_tokens": 5})
    assert row2["attention_ratio_all"] is None and row2["attention_stabilization_latency"] is None
    assert row2["outcome"] == "other" and "f1_b" in row2
    json.dumps(row2, allow_nan=False)
    with pytest.raises(ValueError):
        summarize_run(run, None, thresholds={"nope": 1})
