"""Watching a run folder while it is written: growing samples.jsonl, torn last lines, rewrites,
and Findings computed from the records so far."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time

import pytest
from serve_helpers import BASELINE, CALIBRATION_ID, first_line, read_events

from measure.report.findings import build_findings
from measure.report.summary import build_metrics
from measure.serve import watchers
from measure.serve.watch import RunFolders, SamplesTail


def baseline_lines(n: int) -> list[bytes]:
    with open(BASELINE / "samples.jsonl", "rb") as handle:
        return [next(handle) for _ in range(n)]


def test_tail_reads_only_complete_lines_and_keeps_a_torn_one_for_later(tmp_path):
    path = tmp_path / "samples.jsonl"
    lines = baseline_lines(3)
    tail = SamplesTail(path)
    assert tail.poll() == ([], False)  # no file yet
    path.write_bytes(lines[0] + lines[1][:100])  # the second record is being written
    new, reset = tail.poll()
    assert [r.key for r in new] == ["builtin_00/ignore/-"] and not reset and tail.pending_bytes == 100
    with open(path, "ab") as handle:
        handle.write(lines[1][100:] + b"{broken\n" + lines[2])
    new, _ = tail.poll()
    assert [r.key for r in new] == ["builtin_00/oracle/-", "builtin_00/injection/t6"]
    assert len(tail.warnings) == 1 and ":3: not a record" in tail.warnings[0]
    assert tail.pending_bytes == 0 and len(tail.records) == 3


def test_tail_starts_again_when_the_file_is_rewritten(tmp_path):
    path = tmp_path / "samples.jsonl"
    lines = baseline_lines(3)
    path.write_bytes(b"".join(lines))
    tail = SamplesTail(path)
    assert len(tail.poll()[0]) == 3
    replacement = tmp_path / "samples.jsonl.tmp"
    replacement.write_bytes(lines[0])
    os.replace(replacement, path)  # as `measure run --resume` repairs a torn file
    new, reset = tail.poll()
    assert reset and [r.key for r in new] == ["builtin_00/ignore/-"] and len(tail.records) == 1


def test_run_folders_are_found_below_the_root_and_named_by_id(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "run.json").write_text(json.dumps({"model": {"name": "m"}, "finished": "now"}))
    (tmp_path / "group" / "b").mkdir(parents=True)
    (tmp_path / "group" / "b" / "samples.jsonl").write_bytes(baseline_lines(1)[0])
    (tmp_path / "not-a-run").mkdir()
    folders = RunFolders(tmp_path)
    listing = {entry["id"]: entry for entry in folders.listing()}
    assert set(listing) == {"a", "group/b"}
    assert listing["a"]["finished"] and listing["a"]["model"] == "m" and not listing["group/b"]["finished"]
    assert folders.folder("group/b") == tmp_path / "group" / "b"
    assert folders.folder("../a") is None and folders.folder(str(tmp_path / "a")) is None


def test_watching_a_growing_run_streams_records_and_findings(client, runs_root):
    folder = runs_root / "growing"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"settings": {"alpha": 0.05, "seed": 0}}))
    lines = baseline_lines(14)  # two problems: ignore, oracle and five conditions at t6 each
    (folder / "samples.jsonl").write_bytes(b"".join(lines[:7]) + lines[7][:50])
    url = "/api/runs/events?id=growing"
    first = read_events(client, url, until=lambda m, seen: m["type"] == "findings")
    records = [item for m in first if m["type"] == "records" for item in m["items"]]
    assert [r["key"] for r in records] == [json.loads(line)["key"] for line in lines[:7]]
    status = [m for m in first if m["type"] == "status"][-1]
    assert status["pending_bytes"] == 50 and status["finished"] is False
    findings = first[-1]
    assert findings["records"] == 7
    # The same Findings `measure report` would compute from these records now.
    expected = build_findings(build_metrics([json.loads(line) for line in lines[:7]], {}, [], alpha=0.05, seed=0))
    assert findings["findings"]["points"] == expected["points"]
    assert any(item["code"] == "too_few_problems" for item in findings["findings"]["cannot_say"])
    assert findings["text"].startswith("Findings")

    with open(folder / "samples.jsonl", "ab") as handle:  # the run goes on: the torn line completes
        handle.write(lines[7][50:] + b"".join(lines[8:]))

    def caught_up(message, seen):
        return message["type"] == "findings" and message["records"] == 14

    later = read_events(client, url, until=caught_up)
    keys = [item["key"] for m in later if m["type"] == "records" for item in m["items"]]
    assert keys == [json.loads(line)["key"] for line in lines]
    assert all(item["continuation"] is not None for m in later if m["type"] == "records" for item in m["items"])


def test_an_unknown_folder_is_404(client):
    response = client.get("/api/runs/events", params={"id": "../../etc"})
    assert response.status_code == 404 and "no run folder" in response.json()["error"]


# -- one reader per folder ----------------------------------------------------------------------
def open_streams(client, url: str, count: int, stack: contextlib.ExitStack) -> list:
    """``count`` open streams of ``url``, each read up to its first Findings."""
    streams = []
    for _ in range(count):
        response = stack.enter_context(client.stream("GET", url))
        lines = response.iter_lines()
        first_line(lines, lambda line: line.startswith('data: {"type": "findings"'))
        streams.append(lines)
    return streams


def test_many_watchers_share_one_reader_and_one_findings_computation(client, runs_root, monkeypatch):
    folder = runs_root / "shared"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"settings": {"alpha": 0.05, "seed": 0}}))
    lines = baseline_lines(14)
    (folder / "samples.jsonl").write_bytes(b"".join(lines[:7]))
    threads = []
    computed = watchers.folder_findings

    def recorded(*args):
        threads.append(threading.current_thread().name)
        return computed(*args)

    monkeypatch.setattr(watchers, "folder_findings", recorded)
    hub = client.app.state.serve.watches
    with contextlib.ExitStack() as stack:
        streams = open_streams(client, "/api/runs/events?id=shared", 5, stack)
        assert hub.readers() == 1
        (watch,) = hub.watches.values()
        assert watch.subscribers == 5 and watch.findings_computed == 1 and watch.tail.records and len(streams) == 5
        with open(folder / "samples.jsonl", "ab") as handle:  # the run goes on
            handle.write(b"".join(lines[7:]))
        for lines_of_one in streams:  # every watcher gets the new Findings, computed once for all
            first_line(lines_of_one, lambda line: line.startswith('data: {"type": "findings"') and '"records": 14' in line)
        assert watch.findings_computed == 2
    # Computed off the pool that serves the page's files.
    assert threads == ["measure-serve-findings_0"] * 2
    deadline = time.monotonic() + 5
    while hub.readers():  # the last watcher left: the reader stops (LINGER_SECONDS is 0.2 here)
        assert time.monotonic() < deadline, "the reader did not stop after the last watcher left"
        time.sleep(0.05)
    assert not hub.watches


def test_a_finished_run_shows_the_findings_it_wrote(client, runs_root):
    folder = runs_root / "finished"
    shutil.copytree(BASELINE, folder)
    os.utime(folder / "metrics.json")  # written after the last record, as measure run does
    findings = read_events(client, "/api/runs/events?id=finished", until=lambda m, _: m["type"] == "findings")[-1]
    saved = json.loads((BASELINE / "metrics.json").read_text())
    assert findings["source"] == "metrics.json" and findings["findings"] == saved["findings"]
    assert findings["records"] == 280 and findings["text"].startswith("Findings")


# -- what is listed -----------------------------------------------------------------------------
def test_a_symlink_leading_outside_the_runs_dir_is_not_listed(tmp_path):
    root, outside = tmp_path / "runs", tmp_path / "elsewhere"
    (outside / "secret-run").mkdir(parents=True)
    (outside / "secret-run" / "run.json").write_text("{}")
    (root / "inside").mkdir(parents=True)
    (root / "inside" / "run.json").write_text("{}")
    (root / "escape").symlink_to(outside / "secret-run")  # a run folder through a link
    (root / "group").symlink_to(outside)  # a group of run folders through a link
    (root / "alias").symlink_to(root / "inside")  # a link that stays inside
    (root / "dangling").symlink_to(tmp_path / "nothing")
    folders = RunFolders(root)
    assert [entry["id"] for entry in folders.listing()] == ["alias", "inside"]
    assert folders.folder("escape") is None and folders.folder("group/secret-run") is None


@pytest.mark.parametrize(("name", "text", "words"), [
    ("run.json", '{"model": "a string", "finished": true}', "'model' is not an object"),
    ("run.json", '{"model": {"name": ["x"]}}', "'model' is not an object with a text 'name'"),
    ("run.json", "[1, 2]", "holds a JSON list, not an object"),
    ("run.json", '{"model": ', "not valid JSON"),
    ("metrics.json", '{"calibration": {"events": {"detection_latency": 5}}}', "calibration.events.detection_latency"),
    ("metrics.json", '{"calibration": {"events": {"detection_latency": {"points": {"t6": {"folds": 3}}}}}}',
     "'folds' is not a list"),
    ("metrics.json", '{"calibration": {"events": {"detection_latency": {"points": {"t6": {"calibrated": true, '
                     '"folds": [{"fit_fold": "a", "window": 2, "threshold": 1}]}}}}}}', "is not a number"),
    ("metrics.json", "null", "holds a JSON null, not an object"),
])
def test_a_malformed_run_file_is_listed_with_its_error_and_the_others_still_show(client, runs_root, name, text, words):
    bad = runs_root / "bad"
    bad.mkdir()
    (bad / "samples.jsonl").write_bytes(baseline_lines(1)[0])
    (bad / name).write_text(text)
    response = client.get("/api/runs")
    assert response.status_code == 200
    listing = {entry["id"]: entry for entry in response.json()}
    assert listing[CALIBRATION_ID]["has_metrics"] and not listing[CALIBRATION_ID]["errors"]
    assert not listing["bad"]["has_metrics"] and any(words in error for error in listing["bad"]["errors"]), listing["bad"]
    if name == "metrics.json":  # the calibration route and a submission name the error too
        refused = client.get("/api/calibration", params={"id": "bad"})
        assert refused.status_code == 422 and words in refused.json()["error"]


def test_lines_of_odd_shapes_are_left_out_with_a_warning_and_the_watch_goes_on(client, runs_root):
    folder = runs_root / "odd"
    folder.mkdir()
    odd = [json.dumps({"key": "a/b/c", "metrics": [1], "texts": "not an object"}).encode() + b"\n",
           b"[" * 5000 + b"]" * 5000 + b"\n",  # too deep to decode: a warning, not a dead reader
           baseline_lines(1)[0]]
    (folder / "samples.jsonl").write_bytes(b"".join(odd))

    def settled(message, seen):
        return message["type"] in ("findings", "findings_error")

    messages = read_events(client, "/api/runs/events?id=odd", until=settled)
    keys = [item["key"] for m in messages if m["type"] == "records" for item in m["items"]]
    assert keys == ["builtin_00/ignore/-"]  # a line that is no record is left out, named with its field
    status = [m for m in messages if m["type"] == "status"][-1]
    assert status["records"] == 1 and any(":2: not a record" in warning for warning in status["warnings"])
    assert any("samples.jsonl:1: not a measure record: field problem_id" in warning for warning in status["warnings"])
