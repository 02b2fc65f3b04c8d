"""The seed's files load: JSON arrays and JSONL, math and semantic layouts; bad records name where."""

import json
from pathlib import Path

import pytest

from measure.data import DataError, check_pair, load_pairs, read_pairs
from measure.run.preflight import validate
from measure.settings import RunSettings, SettingsError

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "data"
MATH_FIELDS = ("kind", "variation_type", "question_a", "question_b", "answer_a", "answer_b", "equation_a",
               "equation_b", "erratum", "restatement", "repeat")


def _error(name: str) -> DataError:
    with pytest.raises(DataError) as caught:
        read_pairs(FIXTURES / name)
    return caught.value


def test_seed_math_json_array_loads():
    pairs = read_pairs(FIXTURES / "seed_math.json")
    assert [p.id for p in pairs] == ["json_1", "json_2", "json_3", "json_4"]
    assert {p.source for p in pairs} == {"json"} and {p.kind for p in pairs} == {"math"}
    assert [p.variation_type for p in pairs] == ["single_number", "multi_number", "added_step", None]
    single, multi, step, control = pairs
    assert (single.answer_a, single.answer_b, single.equation_b) == ("6", "7", "9.0 - 2.0")
    assert single.erratum == "Correction: 9, not 8." and multi.erratum == "Correction: 12, not 9; 5, not 7."
    assert step.answer_b == "18" and step.question_b.startswith(step.question_a)
    # The seed's controls carry alt_equation: null, read as A's equation.
    assert (control.equation_b, control.answer_b) == ("0.375 + 0.5", "0.875")
    assert control.question_b == control.question_a and control.erratum == "Correction: the problem is unchanged."
    for pair in pairs:
        assert pair.restatement.endswith(pair.question_b) and pair.repeat.endswith(pair.question_a)
        assert len(pair.noise) >= 1.5 * max(len(pair.erratum), len(pair.restatement))
    assert {p.id: check_pair(p) for p in pairs if check_pair(p)} == {}


def test_seed_math_jsonl_loads_the_same_records():
    from_array, from_lines = read_pairs(FIXTURES / "seed_math.json"), read_pairs(FIXTURES / "seed_math.jsonl")
    assert [p.id for p in from_lines] == ["jsonl_1", "jsonl_2", "jsonl_3", "jsonl_4"]
    assert {p.source for p in from_lines} == {"jsonl"}
    assert [[getattr(p, f) for f in MATH_FIELDS] for p in from_lines] == \
        [[getattr(p, f) for f in MATH_FIELDS] for p in from_array]


@pytest.mark.parametrize("name", ["seed_semantic.json", "seed_semantic.jsonl"])
def test_seed_semantic_records_become_qa_pairs(name):
    pairs = read_pairs(FIXTURES / name)
    assert {p.kind for p in pairs} == {"qa"}
    switched, control, labelled, null_control = pairs
    # No variation_type, a different question: the seed's question switch.
    assert switched.variation_type == "question_switch"
    assert (switched.answer_a, switched.answer_b) == ("the miller", "the baker")
    assert switched.erratum == 'Correction: the question is "Who baked the bread?", not "Who ground the flour?"'
    assert switched.context.startswith("The miller ground the flour")  # from story_content
    # No variation_type and B == A, or an explicit null with B == A: identical controls.
    assert control.variation_type is None and control.question_b == control.question_a and control.context is None
    assert null_control.variation_type is None and null_control.answer_b == "by the river"
    # The seed's FairytaleQA topic labels are question switches; the label is kept.
    assert labelled.variation_type == "question_switch"
    assert labelled.metadata == {"seed_variation_type": "action_to_action"}
    assert {p.id: check_pair(p) for p in pairs if check_pair(p)} == {}


def test_load_pairs_and_settings_accept_a_json_array(tmp_path):
    path = FIXTURES / "seed_semantic.json"
    assert load_pairs(str(path)) == read_pairs(path)
    assert [p.id for p in load_pairs(str(path), variation_types=["control"])] == ["json_2", "json_4"]
    copy = tmp_path / "pairs.json"  # named .json but not on disk yet: the suffix alone selects a file
    validate(RunSettings(dataset=str(copy)))
    with pytest.raises(SettingsError, match=r"\.json/\.jsonl"):
        validate(RunSettings(dataset=str(tmp_path / "pairs.csv")))


def test_a_written_file_reads_back_from_a_json_array(tmp_path):
    pairs = read_pairs(FIXTURES / "seed_math.json")
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps([p.to_dict() for p in pairs], indent=2))
    assert read_pairs(path) == pairs


@pytest.mark.parametrize("name, where, field, problem", [
    ("seed_not_objects.json", "item 2", None, "expected a JSON object, got list"),
    ("seed_invalid_json.json", "line 6", None, "invalid JSON: Expecting ',' delimiter"),
    ("seed_nonnumeric_math_answer.json", "item 2", "answer_a", "non-numeric answer 'eight'"),
    ("seed_changed_no_variation.json", "item 2", "variation_type",
     "variation_type is missing but B differs from A in question_b, answer_b, equation_b"),
    ("pairs_qa_changed_no_variation.jsonl", "line 2", "variation_type",
     "variation_type is missing but B differs from A in question_b, answer_b"),
    ("seed_null_variation_changed.json", "item 3", "variation_type",
     "variation_type is null (an identical control) but B differs from A in question_b, answer_b"),
    ("seed_missing_field.json", "item 2", "question_b' (or 'alt_problem", "missing field"),
    ("seed_breaks_constraints.json", "item 2", None, "added_step B does not extend A's text"),
])
def test_bad_record_names_file_place_and_field(name, where, field, problem):
    error = _error(name)
    unit, number = where.split()
    assert (error.line, error.item) == ((int(number), None) if unit == "line" else (None, int(number)))
    assert error.field == field and problem in error.problem
    named_field = "" if field is None else f", field {field!r}"
    assert str(error).startswith(f"file {FIXTURES / name}, {where}{named_field}: ")
