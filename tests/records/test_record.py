"""The typed record: every field defined once and documented, its JSON Schema checked in, every
committed record valid, and a corrupt or foreign line one error naming file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from measure.records.record import Record, RecordError, as_dict, schema_text, validate_line
from measure.records.store import read_store

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / "reports" / "baselines" / "smollm2" / "samples.jsonl"


def test_the_checked_in_json_schema_is_the_models():
    assert (ROOT / "docs" / "record.schema.json").read_text() == schema_text(), \
        "regenerate it: python -m measure.records.record > docs/record.schema.json"


def test_every_field_has_a_one_line_description():
    schema = json.loads(schema_text())
    models = [schema, *schema["$defs"].values()]
    for model in models:
        for name, field in model["properties"].items():
            assert field.get("description"), f"{model['title']}.{name} has no docstring"
            assert "\n" not in field["description"], f"{model['title']}.{name}: more than one line"


def test_the_baseline_records_validate_and_round_trip():
    lines = BASELINE.read_bytes().splitlines()
    records, warnings = read_store(BASELINE, typed=True)
    assert warnings == [] and len(records) == len(lines) == 280
    assert all(isinstance(record, Record) for record in records)
    for line, record in zip(lines, records):
        assert as_dict(record) == json.loads(line)
    assert {record.schema_ for record in records} == {1}  # today's layout: arrays inline
    assert all(len(r.arrays.kl["oracle"]) == len(r.tokens.generated) for r in records)


GOOD = {"key": "p1/injection/t6", "problem_id": "p1", "condition": "injection", "point": "t6", "metrics": {"x": 1.0}}


@pytest.mark.parametrize("line, message", [
    (json.dumps({**GOOD, "point": 6}), "field point: Input should be a valid string"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "condition"}), "field condition: Field required"),
    (json.dumps({**GOOD, "tokens": {"prompt": [1], "inserted": [], "generated": ["a"]}}),
     "field tokens.generated.0: Input should be a valid integer"),
    (json.dumps({**GOOD, "arrays": {"logprob_run": [0.1], "kl": {"oracle": [0.1, "x"]}}}),
     "field arrays.kl.oracle.1: Input should be a valid number"),
    (json.dumps({**GOOD, "texts": {"prompt": "A", "inserted": "", "generated": "", "continuation": "", "pieces": []}}),
     "field texts.generated_pieces: Field required"),
    # a line of skipped.jsonl is no sample record
    (json.dumps({"key": "p1/t6", "problem_id": "p1", "point": "t6", "reason": "ended", "keys": []}),
     "field condition: Field required"),
    ("[1, 2]", "a JSON list, not an object"),
    ('{"key": "p1/inj', "not JSON"),
    (json.dumps({**GOOD, "schema": 9}), "record schema 9 is newer than this version of measure reads"),
])
def test_a_bad_line_is_one_error_naming_file_line_and_field(line, message):
    with pytest.raises(RecordError) as caught:
        validate_line(line, "run/samples.jsonl", 7)
    text = str(caught.value)
    assert text.startswith("run/samples.jsonl:7: ") and message in text and "\n" not in text


def test_a_bad_line_in_a_file_names_its_line(tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps({**GOOD, "t0": "three"}) + "\n" + json.dumps(GOOD) + "\n")
    with pytest.raises(RecordError, match=rf"^{path}:2: not a measure record: field t0: "):
        read_store(path, typed=True)


def test_fields_of_a_measurement_test_are_kept():
    record = validate_line(json.dumps({**GOOD, "test": {"nodeid": "t.py::x"}, "mine": [1, 2]}), "f", 1)
    assert record.test.nodeid == "t.py::x" and as_dict(record)["mine"] == [1, 2]
