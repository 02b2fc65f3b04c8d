"""Malformed inputs give a DataError naming file, line and field (fixtures/data)."""

from pathlib import Path

import pytest

from measure.data import DataError, load_pairs, read_pairs
from measure.data.loaders import load_gsm8k, load_mawps, load_svamp
from measure.data.qa import load_fairytaleqa, load_nq_open

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "data"


def _raises(loader, name):
    with pytest.raises(DataError) as caught:
        loader(FIXTURES / name)
    return caught.value


def test_missing_file_names_the_file():
    error = _raises(load_mawps, "no_such_file.jsonl")
    assert "no_such_file.jsonl" in str(error) and "not found" in str(error)


def test_invalid_json_names_file_and_line():
    error = _raises(load_mawps, "mawps_invalid_json.jsonl")
    assert error.line == 2 and "mawps_invalid_json.jsonl" in str(error) and "line 2" in str(error)


@pytest.mark.parametrize("loader, name, line, field", [
    (load_mawps, "mawps_missing_field.jsonl", 2, "equation"),
    (load_mawps, "mawps_nonnumeric_answer.jsonl", 3, "ans"),
    (load_gsm8k, "gsm8k_no_final_answer.jsonl", 2, "answer"),
    (load_svamp, "svamp_missing_equation.jsonl", 2, "Equation"),
    (load_fairytaleqa, "fairytaleqa_missing_section.jsonl", 1, "questions"),
    (load_nq_open, "nq_open_answer_not_list.jsonl", 2, "answer"),
    (read_pairs, "pairs_missing_answer.jsonl", 2, "answer_b' (or 'alt_answer"),
])
def test_bad_record_names_file_line_and_field(loader, name, line, field):
    error = _raises(loader, name)
    assert (error.line, error.field) == (line, field)
    assert name in str(error) and f"line {line}" in str(error) and field in str(error)


def test_nonnumeric_answer_message_says_so():
    assert "non-numeric answer 'eight'" in str(_raises(load_mawps, "mawps_nonnumeric_answer.jsonl"))


def test_unknown_dataset_is_a_data_error():
    with pytest.raises(DataError, match="unknown dataset"):
        load_pairs("not_a_dataset", data_dir=FIXTURES)


def test_known_bad_records_are_reported_not_kept():
    records, report = load_mawps(FIXTURES / "mawps_known_bad.jsonl")
    assert [r.id for r in records] == ["mawps_1", "mawps_7"]
    assert report.rejected == {
        "malformed_equation": ["mawps_2"],
        "answer_mismatch": ["mawps_3"],
        "duplicate_text": ["mawps_4"],
        "duplicate_conflicting_answer": ["mawps_5", "mawps_6"],
    }
    assert report.flagged == {"equation_to_solve": ["mawps_7"]}
    assert (report.total, report.kept) == (7, 2)


def test_no_data_folder_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("MEASURE_DATA_DIR", raising=False)
    monkeypatch.setenv("MEASURE_CACHE_DIR", str(tmp_path / "absent"))
    with pytest.raises(DataError, match="no data folder"):
        load_pairs("mawps")
