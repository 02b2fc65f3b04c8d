"""ProblemPair JSON round trip, legacy field names, built-in pairs."""

import json
from pathlib import Path

from measure.data import check_pair, load_pairs, read_pairs, write_pairs
from measure.data.pairs import LEGACY_FIELDS, PAIR_FIELDS, ProblemPair

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "data"


def test_builtin_needs_no_data_folder_and_every_pair_is_valid(monkeypatch):
    monkeypatch.delenv("MEASURE_DATA_DIR", raising=False)
    pairs = load_pairs("builtin")
    math = [p for p in pairs if p.kind == "math"]
    stories = [p for p in pairs if p.kind == "qa"]
    assert len(math) >= 50 and len(stories) >= 10
    assert {p.variation_type for p in math} == {"single_number", "multi_number", "added_step", None}
    assert all(p.context for p in stories)
    assert {p.id: check_pair(p) for p in pairs if check_pair(p)} == {}
    assert len({p.id for p in pairs}) == len(pairs)


def test_filter_and_limit():
    controls = load_pairs("builtin", variation_types=["control"])
    assert controls and all(p.variation_type is None and p.question_a == p.question_b for p in controls)
    assert len(load_pairs("builtin", limit=5)) == 5


def test_round_trip_through_dict_and_jsonl(tmp_path):
    pairs = load_pairs("builtin", limit=8)
    assert [ProblemPair.from_dict(json.loads(json.dumps(p.to_dict()))) for p in pairs] == pairs
    path = tmp_path / "pairs.jsonl"
    write_pairs(pairs, path)
    assert read_pairs(path) == pairs
    assert load_pairs(str(path)) == pairs


def test_written_lines_carry_both_namings(tmp_path):
    path = tmp_path / "pairs.jsonl"
    write_pairs(load_pairs("builtin", limit=1), path)
    line = json.loads(path.read_text().splitlines()[0])
    assert set(PAIR_FIELDS) | set(LEGACY_FIELDS) <= set(line)
    assert line["alt_problem"] == line["question_b"] and line["Answer"] == line["answer_a"]


def test_legacy_records_load_with_generated_update_texts():
    pairs = read_pairs(FIXTURES / "pairs_legacy.jsonl")
    assert [p.id for p in pairs] == ["jsonl_1", "jsonl_2", "jsonl_3"]
    single, control, step = pairs
    assert (single.answer_a, single.answer_b, single.equation_b) == ("7", "9", "4+5")
    assert single.erratum == "Correction: 5, not 3."
    assert control.variation_type is None and control.erratum.startswith("Correction")
    assert step.answer_b == "9"
    assert {p.id: check_pair(p) for p in pairs if check_pair(p)} == {}
