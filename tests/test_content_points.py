"""Content-timed points resolved on hand-made token streams, the not-found cases included."""

from __future__ import annotations

from dataclasses import replace

import pytest

from measure.content_points import (
    AfterQuantity,
    AtBoundary,
    BeforeAnswer,
    PointNotReached,
    changed_quantities,
    parse_content_point,
)
from measure.testing import QUESTION_A, example_pair


def pieces_of(text: str) -> list[str]:
    """Tokens as a tokenizer might cut them: words with their leading space, digits apart."""
    import re

    return re.findall(r" ?[A-Za-z]+| ?\d|[^\w\s]| |\n", text)


def test_example_pieces_rebuild_the_text():
    text = "Tom has 12 apples.\nHe eats 3. The answer is 9."
    assert "".join(pieces_of(text)) == text


def test_after_quantity_lands_right_after_the_first_changed_number():
    pair = example_pair()  # A and B differ in one number: see measure.testing
    old = changed_quantities(pair)
    assert old == [5, 12], "5 apples become 7, and the answer 12 becomes 14"
    number = "5"
    pieces = pieces_of(f"First we note {number} items. Then more.")
    t0 = AfterQuantity().resolve_in(pieces, pair)
    assert "".join(pieces[:t0]).endswith(number)
    assert not "".join(pieces[:t0 - 1]).endswith(number)


def test_after_quantity_ignores_numbers_the_change_leaves_alone():
    pair = example_pair()
    untouched = 987654
    assert untouched not in changed_quantities(pair)
    with pytest.raises(PointNotReached, match="never writes a quantity"):
        AfterQuantity().resolve_in(pieces_of(f"Start with {untouched} and stop."), pair)


def test_after_quantity_refuses_a_pair_without_changed_quantities():
    control = replace(example_pair(question_b=QUESTION_A), answer_b="12", answers_b=("12",))
    assert changed_quantities(control) == []
    with pytest.raises(PointNotReached, match="changes no quantity"):
        AfterQuantity().resolve_in(pieces_of("Anything 12."), control)


def test_boundary_is_the_first_sentence_or_line_end_at_or_after_n():
    pieces = pieces_of("We have 3.5 kg. Then we add 2\nmore and stop! Done")
    text = "".join(pieces)
    t0 = AtBoundary(1).resolve_in(pieces, None)
    assert "".join(pieces[:t0]) == "We have 3.5 kg."  # "3." inside 3.5 is not a boundary
    later = AtBoundary(t0 + 1).resolve_in(pieces, None)
    assert "".join(pieces[:later]).endswith("2\n")
    last = AtBoundary(later + 1).resolve_in(pieces, None)
    assert "".join(pieces[:last]).endswith("stop!") and text.startswith("".join(pieces[:last]))


def test_boundary_not_reached():
    with pytest.raises(PointNotReached, match="no sentence or line boundary at or after token 2"):
        AtBoundary(2).resolve_in(pieces_of("no boundary anywhere here"), None)


def test_before_answer_is_just_before_the_last_answer_phrase():
    pieces = pieces_of("The answer is maybe 3. Let me check. The answer is 4.")
    t0 = BeforeAnswer().resolve_in(pieces, None)
    assert "".join(pieces[t0:]).lstrip().startswith("The answer is 4")
    assert "".join(pieces[:t0]).endswith("check.")


def test_before_answer_not_reached_and_at_the_first_token():
    with pytest.raises(PointNotReached, match="states no final answer"):
        BeforeAnswer().resolve_in(pieces_of("I think it is 4."), None)
    with pytest.raises(PointNotReached, match="first token"):
        BeforeAnswer().resolve_in(pieces_of("Answer: 4"), None)


@pytest.mark.parametrize("text, label", [("after:quantity", "after-quantity"), ("boundary:16", "boundary16"),
                                          ("before:answer", "before-answer")])
def test_parse(text, label):
    assert parse_content_point(text).label == label


@pytest.mark.parametrize("text", ["after:number", "boundary:0", "boundary:x", "before:end"])
def test_parse_errors_name_the_spelling(text):
    with pytest.raises(ValueError, match="injection point"):
        parse_content_point(text)


def test_engine_resolves_content_points_per_problem_or_skips_with_the_reason():
    from measure.engine.engine import Engine, EngineConfig
    from measure.model.load import load_model
    from measure.points import parse_points

    points = parse_points("3,boundary:2,before:answer,after:quantity")
    engine = Engine(load_model("tiny:llama"), EngineConfig(max_new_tokens=16, points=points, attention=False,
                                                             conditions=("ignore", "oracle", "injection")))
    (result,) = engine.run_problems([example_pair()])
    ignore = result.references["ignore"]
    skipped = {label: reason for label, reason, _ in result.skipped}
    for point in points:
        runs = [run for run in result.runs if run.point == point.label]
        try:
            t0 = point.resolve_in(ignore.generated_pieces, example_pair())
        except PointNotReached as reason:
            assert not runs and skipped[point.label] == str(reason)
        else:
            assert [run.t0 for run in runs] == [t0] and point.label not in skipped
            assert runs[0].generated_ids[:t0] == ignore.generated_ids[:t0]
    # A random tiny model writes no "answer is": that point is skipped with its reason.
    assert "states no final answer" in skipped["before-answer"]
