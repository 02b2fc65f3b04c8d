"""Chains A -> B -> C: file round trip, malformed chains named by line and field, check_pair on the
link B -> C, the built-in chains, and the generator's chains under hypothesis."""

import dataclasses
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from real_data import REAL_DATA
from test_data_augment_fuzz import problems  # the fuzz file's random word problems

from measure.data.arithmetic import evaluate, parse_expression, parse_number
from measure.data.augment import Rejected, add_chain, augment_problem, generate_pairs
from measure.data.builtin import load_builtin
from measure.data.cli import register
from measure.data.constraints import check_pair
from measure.data.errors import DataError
from measure.data.items import SourceItem
from measure.data.pair_files import read_pairs, write_pairs
from measure.data.pairs import ChainStep, ProblemPair
from measure.data.updates import RETRACTION, NumberChange, number_change_erratum, restatement, retraction_text

BUILTIN = {pair.id: pair for pair in load_builtin()}


def _with_chain(pair_id: str, question_c: str, equation_c: str | None, answer_c: str, changes: list[tuple[str, str]],
                variation_type: str = "single_number", erratum: str | None = None) -> ProblemPair:
    """A built-in pair with a hand-made chain (erratum naming the changes unless given)."""
    erratum = erratum or number_change_erratum([NumberChange(old, new) for old, new in changes])
    chain = ChainStep(question_c=question_c, answer_c=answer_c, answers_c=(answer_c,), equation_c=equation_c,
                      variation_type=variation_type, erratum=erratum, restatement=restatement(question_c),
                      metadata={"changes": [{"old": old, "new": new} for old, new in changes]})
    return dataclasses.replace(BUILTIN[pair_id], chain=chain)


SARAH = "Sarah has {} apples. Her friend gives her {} more apples. How many apples does Sarah have now?"  # builtin_00
NORA = ("Nora baked 40 cookies. Her family ate {} of them, and she shared the rest equally among {} friends."
        " How many cookies did each friend get?")  # builtin_12; B: ate 16, 3 friends


# --- file forms -------------------------------------------------------------------------------

def test_round_trip_through_dict_and_jsonl(tmp_path):
    pairs = [BUILTIN["builtin_00"], BUILTIN["builtin_01"], BUILTIN["builtin_02"], BUILTIN["builtin_story_00"]]
    assert pairs[0].chain is not None and pairs[2].chain is None and pairs[3].chain is not None
    for pair in pairs:
        data = json.loads(json.dumps(pair.to_dict()))
        assert data["chain"] == (None if pair.chain is None else {**dataclasses.asdict(pair.chain),
                                                                  "answers_c": list(pair.chain.answers_c)})
        assert ProblemPair.from_dict(data) == pair
    path = tmp_path / "chains.jsonl"
    assert write_pairs(pairs, path) == 4
    assert read_pairs(path) == pairs
    assert json.loads(path.read_text().splitlines()[2])["chain"] is None


def test_a_record_without_chain_key_has_no_chain():
    data = BUILTIN["builtin_00"].to_dict()
    del data["chain"]
    assert ProblemPair.from_dict(data).chain is None


def test_missing_erratum_and_restatement_are_built_from_b_and_c():
    data = BUILTIN["builtin_00"].to_dict()
    del data["chain"]["erratum"], data["chain"]["restatement"]
    chain = ProblemPair.from_dict(data).chain
    assert chain.erratum == "Correction: 8, not 5." and chain.restatement == restatement(chain.question_c)


@pytest.mark.parametrize("edit, field_name", [
    (lambda chain: chain.pop("answer_c"), "chain.answer_c"),
    (lambda chain: chain.update(answer_c="fourteen"), "chain.answer_c"),
    (lambda chain: chain.pop("question_c"), "chain.question_c"),
    (lambda chain: chain.update(variation_type="added_step"), "chain.variation_type"),
    (lambda chain: chain.update(answers_c="14"), "chain.answers_c"),
    (lambda chain: chain.update(equation_c=["8+6"]), "chain.equation_c"),
    (lambda chain: chain.update(metadata=[1]), "chain.metadata"),
])
def test_malformed_chain_names_file_line_and_field(tmp_path, edit, field_name):
    good, bad = BUILTIN["builtin_01"].to_dict(), BUILTIN["builtin_00"].to_dict()
    edit(bad["chain"])
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError) as error:
        read_pairs(path)
    assert (error.value.line, error.value.field) == (2, field_name)
    assert str(path) in str(error.value) and "line 2" in str(error.value) and field_name in str(error.value)


@pytest.mark.parametrize("chain, problem", [("not a chain", "expected an object"), ([], "expected an object")])
def test_chain_that_is_not_an_object(chain, problem):
    data = {**BUILTIN["builtin_00"].to_dict(), "chain": chain}
    with pytest.raises(DataError, match=problem) as error:
        ProblemPair.from_dict(data, file="x.jsonl", line=7)
    assert (error.value.line, error.value.field) == (7, "chain")


def test_a_control_cannot_have_a_chain():
    control = next(p for p in BUILTIN.values() if p.variation_type is None and p.kind == "math")
    data = {**control.to_dict(), "chain": BUILTIN["builtin_00"].to_dict()["chain"]}
    with pytest.raises(DataError, match="control") as error:
        ProblemPair.from_dict(data)
    assert error.value.field == "chain"
    assert check_pair(dataclasses.replace(control, chain=BUILTIN["builtin_00"].chain))[0].startswith("chain:")


def test_read_pairs_rejects_a_chain_that_breaks_its_constraints(tmp_path):
    bad = _with_chain("builtin_00", SARAH.format(4, 7), "(4+7)", "11", [("5", "4"), ("6", "7")], "multi_number")
    path = tmp_path / "pairs.jsonl"
    write_pairs([BUILTIN["builtin_01"], bad], path)
    with pytest.raises(DataError, match="chain.answer_c") as error:
        read_pairs(path)
    assert error.value.line == 2


# --- check_pair on chains ---------------------------------------------------------------------

def test_a_valid_hand_made_chain_passes():
    assert check_pair(_with_chain("builtin_00", SARAH.format(9, 6), "(9+6)", "15", [("5", "9")])) == []


@pytest.mark.parametrize("pair, field_name, words", [
    # C's answer equals B's (4 + 7 = 11 = 5 + 6) or A's (6 + 6 = 12 = 5 + 7): outcomes could not tell them apart.
    (_with_chain("builtin_00", SARAH.format(4, 7), "(4+7)", "11", [("5", "4"), ("6", "7")], "multi_number"),
     "chain.answer_c", "also B's"),
    (_with_chain("builtin_00", SARAH.format(5, 7), "(5+7)", "12", [("6", "7")]), "chain.answer_c", "also A's"),
    # Unphysical: 24 cookies shared among 5 friends; a family eating more cookies than were baked.
    (_with_chain("builtin_12", NORA.format(16, 5), "((40-16)/5)", "4.8", [("3", "5")]), "chain.equation_c",
     "exact division"),
    (_with_chain("builtin_12", NORA.format(46, 3), "((40-46)/3)", "-2", [("16", "46")]), "chain.equation_c",
     "was a non-negative integer"),
    # The equation changes a number the text does not (text: 4 friends, equation: 2).
    (_with_chain("builtin_12", NORA.format(16, 4), "((40-16)/2)", "12", [("3", "4")]), "chain.equation_c",
     "equation changes 3 to 2 but the text does not"),
    # The stated answer is not what C's equation gives.
    (_with_chain("builtin_12", NORA.format(16, 4), "((40-16)/4)", "7", [("3", "4")]), "chain.answer_c",
     "C's equation does not evaluate to C's answer 7"),
    (_with_chain("builtin_12", NORA.format(16, 4), "((40-16)/4)", "6", [("3", "4")], erratum="Correction: more friends."),
     "chain.erratum", "does not name the new number 4"),
    (_with_chain("builtin_12", NORA.format(16, 4), "((40-16)/4)", "6", [("3", "4")], "multi_number"),
     "chain.variation_type", "multi_number with 1 changed numbers"),
    (_with_chain("builtin_12", NORA.format(16, 4), "((40-16)/4)", "6", [("3", "4")], "question_switch"),
     "chain.variation_type", "not a math chain change"),
    (_with_chain("builtin_12", NORA.format(16, 4) + " Be quick.", "((40-16)/4)", "6", [("3", "4")]),
     "chain.question_c", "more than its numbers"),
])
def test_check_pair_names_the_chain_field_at_fault(pair, field_name, words):
    violations = check_pair(pair)
    assert any(v.startswith(f"{field_name}: ") and words in v for v in violations), violations
    assert check_pair(dataclasses.replace(pair, chain=None)) == []  # the pair A -> B itself is fine


def test_qa_chain_answer_shared_with_a_or_b():
    story = BUILTIN["builtin_story_00"]
    for answers in (story.answers_a, story.answers_b):
        chain = dataclasses.replace(story.chain, answer_c=answers[-1], answers_c=("something else", answers[-1]))
        violations = check_pair(dataclasses.replace(story, chain=chain))
        assert any(v.startswith("chain.answer_c: ") for v in violations), violations
    switched_back = dataclasses.replace(story.chain, question_c=story.question_a, restatement=restatement(story.question_a))
    assert any(v.startswith("chain.question_c: ") for v in check_pair(dataclasses.replace(story, chain=switched_back)))


# --- derived pairs and texts ------------------------------------------------------------------

def test_chain_pair_and_final_pair():
    pair = BUILTIN["builtin_00"]
    link, final = pair.chain_pair(), pair.final_pair()
    assert (link.id, link.question_a, link.question_b) == ("builtin_00_c", pair.question_b, pair.chain.question_c)
    assert (link.answer_a, link.answer_b, link.equation_b, link.erratum) == ("11", "14", "(8+6)", pair.chain.erratum)
    assert check_pair(link) == []
    assert (final.id, final.question_a, final.question_b) == (pair.id, pair.question_a, pair.chain.question_c)
    assert (final.answer_a, final.answer_b, final.answers_b, final.equation_b) == ("12", "14", ("14",), "(8+6)")
    assert final.restatement == pair.chain.restatement
    with pytest.raises(ValueError, match="no chain"):
        BUILTIN["builtin_02"].final_pair()


def test_retraction_text():
    assert retraction_text(BUILTIN["builtin_00"]) == RETRACTION == "Ignore that correction: the original problem stands."
    story = retraction_text(BUILTIN["builtin_story_00"])
    assert "question" in story and "problem" not in story and not any(ch.isdigit() for ch in story)


# --- built-in chains --------------------------------------------------------------------------

def test_every_builtin_chain_passes_on_both_links():
    chained = [pair for pair in BUILTIN.values() if pair.chain is not None]
    assert sum(p.kind == "math" for p in chained) >= 8 and sum(p.kind == "qa" for p in chained) >= 3
    for pair in chained:
        assert check_pair(pair) == [] and check_pair(pair.chain_pair()) == [], pair.id
        if pair.kind == "math":
            assert len({parse_number(a) for a in (pair.answer_a, pair.answer_b, pair.chain.answer_c)}) == 3, pair.id
            assert evaluate(parse_expression(pair.chain.equation_c)) == parse_number(pair.chain.answer_c)
            assert all(change["new"] in pair.chain.erratum for change in pair.chain.metadata["changes"])
        else:
            assert pair.context and not set(pair.chain.answers_c) & (set(pair.answers_a) | set(pair.answers_b))
            assert any(answer.lower() in pair.context.lower() for answer in pair.chain.answers_c), pair.id
    # Every single/multi_number pair of the first 52 (kept as committed) has one.
    first = [BUILTIN[f"builtin_{n:02d}"] for n in range(52)]
    assert all(p.chain is not None for p in first if p.variation_type in ("single_number", "multi_number"))


# --- generated chains -------------------------------------------------------------------------

seeds = st.integers(min_value=0, max_value=2**32 - 1)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=problems(), variation_type=st.sampled_from(("single_number", "multi_number")), seed=seeds)
def test_generated_chains_pass_both_links_with_three_distinct_answers(record, variation_type, seed):
    try:
        pair = augment_problem(record, variation_type, seed, chain=True)
    except Rejected:
        return
    assert dataclasses.replace(pair, chain=None) == augment_problem(record, variation_type, seed)  # A -> B unchanged
    assert augment_problem(record, variation_type, seed, chain=True) == pair  # deterministic by seed
    if pair.chain is None:
        return
    assert check_pair(pair) == [] and check_pair(pair.chain_pair()) == []
    assert pair.chain.variation_type == variation_type
    assert len({parse_number(a) for a in (pair.answer_a, pair.answer_b, pair.chain.answer_c)}) == 3
    assert pair.chain.question_c not in (pair.question_a, pair.question_b)
    assert ProblemPair.from_dict(json.loads(json.dumps(pair.to_dict()))) == pair


def test_chains_are_made_for_most_changed_pairs_and_only_for_them():
    records = [SourceItem(id=p.id, source="builtin", question=p.question_a, answer=p.answer_a, equation=p.equation_a)
               for p in BUILTIN.values() if p.kind == "math"]
    plain, _ = generate_pairs(records, 40, seed=3)
    chained, report = generate_pairs(records, 40, seed=3, chains=True)
    assert [dataclasses.replace(p, chain=None) for p in chained] == plain
    with_chain = [p for p in chained if p.chain is not None]
    changed = [p for p in chained if p.variation_type in ("single_number", "multi_number")]
    assert report.chains == len(with_chain) >= 0.8 * len(changed) > 0
    assert all(p.variation_type in ("single_number", "multi_number") for p in with_chain)
    assert any(line.startswith(f"chains (A -> B -> C): {report.chains} of {len(changed)}") for line in report.summary_lines())
    assert add_chain(BUILTIN["builtin_02"]) is BUILTIN["builtin_02"]  # added_step: left as it is


@pytest.mark.skipif(not REAL_DATA.is_dir(), reason=f"real datasets not found at {REAL_DATA}")
def test_augment_cli_chains(tmp_path, capsys):
    import argparse

    parser = argparse.ArgumentParser(prog="measure")
    register(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "svamp.jsonl"
    args = parser.parse_args(["augment", "--source", "svamp", "--data-dir", str(REAL_DATA), "--n", "20",
                              "--out", str(out), "--mix", "single_number=1,multi_number=1", "--chains"])
    assert args.func(args) == 0
    pairs = read_pairs(out)  # checks every pair, chains included
    assert "chains (A -> B -> C):" in capsys.readouterr().out
    assert sum(p.chain is not None for p in pairs) >= 10
