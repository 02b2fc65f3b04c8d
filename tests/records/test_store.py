"""The crash-safe record store: one JSON object per line, a torn last line dropped with a warning,
any other bad line an error naming the file and line."""

from __future__ import annotations

import json

import pytest

from measure.records.record import Record
from measure.records.store import RecordStore, StoreError, decode_record, latest_by_key, read_store, write_records


def test_appended_records_read_back_in_order_as_compact_lines(tmp_path):
    store = RecordStore(tmp_path / "s.jsonl")
    assert store.read() == ([], [])  # no file yet
    store.append({"key": "a", "x": 1.5})
    store.append({"key": "b", "y": [1, 2]})
    assert store.read() == ([{"key": "a", "x": 1.5}, {"key": "b", "y": [1, 2]}], [])
    assert (tmp_path / "s.jsonl").read_text() == '{"key":"a","x":1.5}\n{"key":"b","y":[1,2]}\n'


def test_a_non_finite_number_is_refused_not_written(tmp_path):
    store = RecordStore(tmp_path / "s.jsonl")
    with pytest.raises(ValueError):
        store.append({"key": "a", "x": float("nan")})


def test_a_torn_last_line_is_dropped_with_a_warning_and_repaired(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"key":"a"}\n\n{"key":"b"}\n{"key": "c", "x": [1, \n\n')
    records, warnings = read_store(path)
    assert records == [{"key": "a"}, {"key": "b"}]
    assert len(warnings) == 1 and warnings[0].startswith(f"{path}:4: dropped a truncated last record")
    store = RecordStore(path)
    assert store.repair() == warnings
    assert path.read_text() == '{"key":"a"}\n{"key":"b"}\n'
    assert store.repair() == [] and path.read_text() == '{"key":"a"}\n{"key":"b"}\n'  # nothing left to repair


def test_a_bad_line_before_the_last_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"key":"a"}\n{"key": \n{"key":"c"}\n')
    with pytest.raises(StoreError, match=rf"^{path}:2: corrupt record: "):
        read_store(path)
    path.write_text('{"key":"a"}\n[1, 2]\n{"key":"c"}\n')  # valid JSON, not a record
    with pytest.raises(StoreError, match=r":2: corrupt record: not a record object with a 'key'"):
        read_store(path)


def test_a_line_cut_inside_a_utf8_character_is_a_torn_line(tmp_path):
    path = tmp_path / "s.jsonl"
    whole = json.dumps({"key": "é"}, ensure_ascii=False).encode()
    path.write_bytes(b'{"key":"a"}\n' + whole[:-3])
    records, warnings = read_store(path)
    assert records == [{"key": "a"}] and len(warnings) == 1 and ":2:" in warnings[0]


def test_decode_record_needs_an_object_with_a_key():
    assert decode_record(b'{"key": 1, "v": 2}') == {"key": 1, "v": 2}
    for line in (b'{"v": 2}', b"[1]", b'"key"', b"\xff"):
        with pytest.raises(ValueError):
            decode_record(line)


def test_write_records_replaces_the_whole_file(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text("old\n")
    write_records(path, [{"key": "a"}, {"key": "b"}])
    assert path.read_text() == '{"key":"a"}\n{"key":"b"}\n'
    write_records(path, [])
    assert path.read_text() == "" and sorted(p.name for p in tmp_path.iterdir()) == ["s.jsonl"]


def test_latest_by_key_keeps_the_last_written():
    lines = [("a/c/t1", 1), ("b/c/t1", 2), ("a/c/t1", 3)]
    records = [Record.model_validate({"key": key, "problem_id": key[0], "condition": "c", "point": "t1", "v": v})
               for key, v in lines]
    latest = latest_by_key(records)
    assert list(latest) == ["a/c/t1", "b/c/t1"] and [r.model_extra["v"] for r in latest.values()] == [3, 2]


def test_an_empty_or_blank_file_holds_no_records(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text("")
    assert read_store(path) == ([], [])
    path.write_text("\n\n")
    assert read_store(path) == ([], [])
