"""Hypothesis fuzz of the augmentation generator: every pair it produces satisfies every
constraint in check_pair, counts of discrete things stay whole, and the output is a function of
the seed alone. Needs no model (it lived in suites/ before; nothing there applied to it)."""


from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from measure.data.arithmetic import (
    evaluate,
    format_number,
    node_values,
    parse_expression,
)
from measure.data.augment import (
    MATH_VARIATION_TYPES,
    Rejected,
    augment_problem,
    generate_pairs,
)
from measure.data.builtin import load_builtin
from measure.data.constraints import check_pair
from measure.data.items import SourceItem
from measure.data.quantities import discrete_counts

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NAMES = ("Ava", "Bruno", "Chen", "Dara")
ITEMS = ("marbles", "stamps", "apples", "cards")
variation_types = st.sampled_from(MATH_VARIATION_TYPES)
seeds = st.integers(min_value=0, max_value=2**32 - 1)


@st.composite
def problems(draw):
    """A small word problem with its equation: random quantities, operation and phrasing."""
    name, item = draw(st.sampled_from(NAMES)), draw(st.sampled_from(ITEMS))
    a, b = draw(st.integers(1, 500)), draw(st.integers(1, 60))
    c = draw(st.integers(1, 40))
    # A distractor whose digits contain a's digits, so replacing inside a number would show.
    room = f"In room {a}1, " if draw(st.booleans()) else ""
    kind = draw(st.sampled_from(["add", "sub", "mul", "div", "two_step", "decimal", "share_of", "share_then_add"]))
    # "share_of": a decimal share of a count, whole by construction (0.25 of 8 pets are 2 cats),
    # so changing the share or the count can make it a fraction of a cat.
    share, whole = draw(st.sampled_from([(0.5, 2), (0.25, 4), (0.75, 4), (0.2, 5), (0.4, 5), (0.125, 8)]))
    of = whole * draw(st.integers(1, 12))
    if kind == "add":
        text, equation = f"{room}{name} has {a} {item}. Then {name} gets {b} more. How many {item} now?", f"{a}+{b}"
    elif kind == "sub":
        a = a + b
        text, equation = f"{room}{name} had {a} {item} and gave away {b} of them. How many {item} are left?", f"{a}-{b}"
    elif kind == "mul":
        text, equation = f"{room}{name} fills {b} boxes with {a} {item} each. How many {item} in all?", f"{b}*{a}"
    elif kind == "div":
        text, equation = f"{room}{name} shares {a * b} {item} equally among {b} friends. How many does each get?", f"{a * b}/{b}"
    elif kind == "two_step":
        a = a + c
        text = f"{room}{name} has {a} {item}, finds {b} more and then loses {c}. How many {item} are left?"
        equation = f"({a}+{b})-{c}"
    elif kind == "share_of":
        text, equation = f"{room}If {share} of {of} {item} are red, how many are red?", f"{share}*{of}"
    elif kind == "share_then_add":
        text = f"{room}{name} has {of} {item} and {share} of them are red. {name} paints {c} more red. How many are red?"
        equation = f"({share}*{of})+{c}"
    else:
        x, y = draw(st.integers(1, 99)) / 10, draw(st.integers(1, 99)) / 10
        text, equation = f"{name} walks {x} km in the morning and {y} km at night. How far in total?", f"{x}+{y}"
    answer = format_number(evaluate(parse_expression(equation)))
    # Every kind but "decimal" asks how many things: its answer and every intermediate value count.
    return SourceItem(id=f"fuzz_{draw(st.integers(0, 10**6))}", source="jsonl", question=text,
                        answer=answer, equation=equation, metadata={"counts_things": kind != "decimal"})


def _augment_or_none(record, variation_type, seed):
    try:
        return augment_problem(record, variation_type, seed)
    except Rejected as rejection:
        assert str(rejection), "a rejection always names its reason"
        return None


@FUZZ
@given(record=problems(), variation_type=variation_types, seed=seeds)
def test_generated_problems_satisfy_every_constraint(record, variation_type, seed):
    pair = _augment_or_none(record, variation_type, seed)
    if pair is None:
        return
    assert check_pair(pair) == []
    assert pair.variation_type == variation_type
    if variation_type is None:
        assert pair.question_b == pair.question_a
    else:
        assert pair.answer_b != pair.answer_a
    assert augment_problem(record, variation_type, seed) == pair  # deterministic by seed


def _b_counterpart(pair):
    """B's equation tree and the part of it that plays A's role (added_step extends A's on the left)."""
    tree_b = parse_expression(pair.equation_b)
    return tree_b, (tree_b.left if pair.variation_type == "added_step" else tree_b)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=problems(), variation_type=st.sampled_from(("single_number", "multi_number", "added_step")),
       seed=seeds)
def test_counts_of_discrete_things_stay_whole(record, variation_type, seed):
    """Every generated pair's intermediate and final values that count discrete things are whole."""
    pair = _augment_or_none(record, variation_type, seed)
    if pair is None:
        return
    tree_a = parse_expression(pair.equation_a)
    tree_b, part_b = _b_counterpart(pair)
    # By construction: a problem that asks how many things has whole intermediates and answers
    # (leaves such as the share 0.25 are no counts), in A and so in B, added step included.
    if record.metadata["counts_things"]:
        whole_b = [value for node, value in zip(tree_b.subtrees(), node_values(tree_b)) if not node.is_leaf]
        assert all(value.denominator == 1 and value >= 0 for value in whole_b), (pair.question_b, pair.equation_b)
    # By the checker's reading of A's text, whatever the problem.
    for counts, value_a, value_b in zip(discrete_counts(pair.question_a, tree_a), node_values(tree_a),
                                        node_values(part_b)):
        if counts:
            assert value_b.denominator == 1 and value_b >= 0, (pair.question_b, pair.equation_b, value_a)


def test_a_share_of_a_count_is_never_changed_into_a_fraction_of_things():
    """MAWPS 812: 'If 0.5 of 8 pets are cats' once became '0.3 of 8 pets' (2.4 cats)."""
    record = SourceItem(id="mawps_812", source="mawps", question="If 0.5 of 8 pets are cats. How many are cats?",
                          answer="4", equation="0.5*8.0")
    for seed in range(40):
        pair = _augment_or_none(record, "single_number", seed)
        if pair is not None:
            assert evaluate(parse_expression(pair.equation_b)).denominator == 1, pair.question_b
    # The pair the generator once produced is named by the checker.
    question_b = "If 0.3 of 8 pets are cats. How many are cats?"
    bad = replace(augment_problem(record, None, 0), variation_type="single_number", question_b=question_b,
                  equation_b="(0.3*8.0)", answer_b="2.4", answers_b=("2.4",), restatement=f"Update: {question_b}",
                  erratum="Correction: 0.3 of the pets, not 0.5.",
                  metadata={"changes": [{"old": "0.5", "new": "0.3", "unit": "", "prefix": ""}]})
    assert any("counts discrete things" in violation for violation in check_pair(bad)), check_pair(bad)


BUILTIN_PROBLEMS = [
    SourceItem(id=p.id, source="builtin", question=p.question_a, answer=p.answer_a, equation=p.equation_a)
    for p in load_builtin(kind="math")
]


@FUZZ
@given(index=st.integers(0, len(BUILTIN_PROBLEMS) - 1), variation_type=variation_types, seed=seeds)
def test_builtin_problems_over_arbitrary_seeds(index, variation_type, seed):
    pair = _augment_or_none(BUILTIN_PROBLEMS[index], variation_type, seed)
    if pair is not None:
        assert check_pair(pair) == []


@settings(max_examples=10, deadline=None)
@given(seed=seeds, n=st.integers(1, 40))
def test_generate_pairs_is_deterministic_and_meets_the_mix(seed, n):
    first, report = generate_pairs(BUILTIN_PROBLEMS, n, seed=seed)
    second, _ = generate_pairs(BUILTIN_PROBLEMS, n, seed=seed)
    assert first == second
    assert len(first) == n == sum(report.produced.values())
    assert len({p.id for p in first}) == n
    assert all(check_pair(p) == [] for p in first)
    counts = [sum(p.variation_type == t for p in first) for t in MATH_VARIATION_TYPES]
    assert max(counts) - min(counts) <= 1  # default mix: equal shares


def test_different_seeds_give_different_pairs():
    a, _ = generate_pairs(BUILTIN_PROBLEMS, 20, seed=1)
    b, _ = generate_pairs(BUILTIN_PROBLEMS, 20, seed=2)
    assert a != b


@pytest.mark.parametrize("text, equation", [
    ("Room 156 holds 56 chairs and 4 tables. How many chairs in 3 such rooms?", "56*3"),
])
def test_numbers_inside_other_numbers_are_left_alone(text, equation):
    record = SourceItem(id="whole_tokens", source="jsonl", question=text, answer="168", equation=equation)
    for seed in range(20):
        pair = augment_problem(record, "single_number", seed)
        assert "Room 156" in pair.question_b and check_pair(pair) == []
