"""Watching a run folder while it is written: growing samples.jsonl, torn last lines, rewrites,
and Findings computed from the records so far."""

from __future__ import annotations

import json
import os

from serve_helpers import BASELINE, read_events

from measure.report.findings import build_findings
from measure.report.summary import build_metrics
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
    assert [r["key"] for r in new] == ["builtin_00/ignore/-"] and not reset and tail.pending_bytes == 100
    with open(path, "ab") as handle:
        handle.write(lines[1][100:] + b"{broken\n" + lines[2])
    new, _ = tail.poll()
    assert [r["key"] for r in new] == ["builtin_00/oracle/-", "builtin_00/injection/t6"]
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
    assert reset and [r["key"] for r in new] == ["builtin_00/ignore/-"] and len(tail.records) == 1


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
