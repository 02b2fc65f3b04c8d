"""The end of a session merges its own processes' files only, also when --measure-out is reused.

Every session writes under ``<out>/workers/<run id>/`` and the earlier sessions' folders stay
there; merging them in would put stale records into the new report. Tests without a record are
reported with the reason (merge_run's ``missing``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_plugin import FAKE_HELPERS  # the fake records the plugin tests write

import measure.report.html
import measure.report.summary
import measure.run.provenance
import measure.settings  # noqa: F401  (imported before pytester's in-process runs: see test_plugin.py)
from measure.pytest_plugin.merge import merge_run, write_session_reports
from measure.pytest_plugin.worker_log import WorkerLog
from measure.records import WORKERS_DIR

pytest_plugins = ("pytester",)

FIRST = FAKE_HELPERS + '''

@pytest.mark.parametrize("i", range(3))
def test_first(measurement, i):
    measurement.record(fake(f"p{i}/injection/t6", 0.1 * i))
'''
SECOND = FAKE_HELPERS + '''
def test_second(measurement):
    measurement.record(fake("q0/noise/t6", 0.5))
'''


def sample_keys(folder: Path) -> list[str]:
    return [json.loads(line)["key"] for line in (folder / "samples.jsonl").read_text().splitlines() if line.strip()]


def test_a_reused_output_folder_reports_only_the_new_session(pytester):
    pytester.makepyfile(test_first=FIRST)
    pytester.runpytest("--measure-out", "out").assert_outcomes(passed=3)
    out = pytester.path / "out"
    assert sample_keys(out) == ["p0/injection/t6", "p1/injection/t6", "p2/injection/t6"]
    # The first session's folder stays under workers/ (renamed: two in-process sessions within one
    # second would otherwise share a run id, which separate pytest processes never do).
    (first,) = (out / WORKERS_DIR).iterdir()
    first.rename(first.with_name("0-earlier-session"))

    (pytester.path / "test_first.py").unlink()
    pytester.makepyfile(test_second=SECOND)
    result = pytester.runpytest("--measure-out", "out")
    result.assert_outcomes(passed=1)
    assert sample_keys(out) == ["q0/noise/t6"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["counts"]["records"] == 1 and metrics["skipped"] == []
    run = json.loads((out / "run.json").read_text())
    assert run["tests"]["expected"] == run["tests"]["with_records"] == 1
    result.stdout.fnmatch_lines(["*measure: 1 records from 1 of 1 measurement tests*"])
    assert len(list((out / WORKERS_DIR).iterdir())) == 2  # the earlier session's files are left alone


def identity(key: str) -> dict:
    """The identity fields every record carries, from its key ``problem/condition/point``."""
    problem_id, condition, point = key.split("/")
    return {"key": key, "problem_id": problem_id, "condition": condition, "point": point}


def _session(workers: Path, run_id: str, nodeids: list[str], recorded: list[str]) -> None:
    log = WorkerLog(workers / run_id, "main")
    log.event("collected", tests=[{"nodeid": nodeid, "key": f"{nodeid}/c/t1"} for nodeid in nodeids])
    for nodeid in nodeids:
        log.event("start", nodeid)
        if nodeid in recorded:
            log.record({**identity(f"{nodeid}/c/t1"), "test": {"nodeid": nodeid}})
            log.event("end", nodeid, outcome="passed")


def test_merge_reads_one_session_and_names_what_left_no_record(tmp_path):
    workers = tmp_path / WORKERS_DIR
    _session(workers, "1-old", ["old_a", "old_b"], ["old_a", "old_b"])
    _session(workers, "2-new", ["new_a", "new_b", "new_c"], ["new_b", "new_a"])
    merged = merge_run(workers / "2-new")
    assert [record.key for record in merged.records] == ["new_a/c/t1", "new_b/c/t1"]  # collection order
    assert merged.expected == ["new_a", "new_b", "new_c"]
    assert [(m["nodeid"], m["reason"].split(":")[0]) for m in merged.missing] == [("new_c", "no record")]
    assert "died while running it" in merged.missing[0]["reason"]
    assert merged.warnings == ["1 of 3 measurement tests produced no record: new_c (" + merged.missing[0]["reason"] + ")"]


def test_every_reason_a_test_left_no_record_is_named(tmp_path):
    run_dir = tmp_path / WORKERS_DIR / "1-run"
    log = WorkerLog(run_dir, "gw0")
    names = ["skip_plain", "skip_message", "failed", "failed_message", "died", "never"]
    log.event("collected", tests=[{"nodeid": n, "key": None} for n in names])
    for name in names[:5]:
        log.event("start", name)
    log.event("end", "skip_plain", outcome="skipped", message="")
    log.event("end", "skip_message", outcome="skipped", message="  point t9 not reached ")
    log.event("end", "failed", outcome="failed")
    log.event("end", "failed_message", outcome="error", message="model did not load")
    merged = merge_run(run_dir)
    reasons = {m["nodeid"]: m["reason"] for m in merged.missing}
    assert reasons == {
        "skip_plain": "skipped",
        "skip_message": "skipped: point t9 not reached",
        "failed": "failed before recording a measurement",
        "failed_message": "error before recording a measurement: model did not load",
        "died": f"no record: worker gw0 (pid {os.getpid()}) died while running it (crash, out of memory or kill)",
        "never": "never ran: the session was interrupted or lost its worker before this test",
    }
    assert merged.workers == ["gw0"] and merged.records == []
    assert merged.warnings[0].startswith("6 of 6 measurement tests produced no record: skip_plain (skipped); ")


@pytest.mark.parametrize(("count", "end"), [(20, ")"), (21, ") ...")])
def test_the_warning_lists_twenty_missing_tests_then_cuts(tmp_path, count, end):
    run_dir = tmp_path / WORKERS_DIR / "1-run"
    WorkerLog(run_dir, "main").event("collected", tests=[{"nodeid": f"t{i:02d}"} for i in range(count)])
    (warning,) = merge_run(run_dir).warnings
    assert warning.endswith("t19 (never ran: the session was interrupted or lost its worker before this test" + end)


def test_session_reports_keep_the_skipped_tests_and_the_counts(tmp_path):
    run_dir = tmp_path / "out" / WORKERS_DIR / "1-run"
    _session(run_dir.parent, "1-run", ["a", "b"], ["a"])
    WorkerLog(run_dir, "main").event("model", info={"name": "tiny:llama"}, torch_threads=2)
    merged = merge_run(run_dir)
    assert merged.models == [{"worker": "main", "torch_threads": 2, "name": "tiny:llama"}]
    merged.records[0] = merged.records[0].model_copy(update={"condition": "injection", "variation_type": "single_number"})
    write_session_reports(tmp_path / "out", merged, {"settings": {"model": "tiny:llama"}})
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["tests"]["expected"] == 2 and run["tests"]["with_records"] == 1
    assert run["tests"]["without_record"] == merged.missing and run["tests"]["workers"] == ["main"]
    assert run["skipped"] == [{"test": "b", "key": "b/c/t1", "reason": merged.missing[0]["reason"]}]
    assert run["warnings"] == merged.warnings and run["settings"] == {"model": "tiny:llama"}
    assert sample_keys(tmp_path / "out") == ["a/c/t1"]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["skipped"] == run["skipped"]


def test_records_follow_the_collection_order_then_their_keys(tmp_path):
    run_dir = tmp_path / WORKERS_DIR / "1-run"
    log = WorkerLog(run_dir, "main")
    log.event("collected", tests=[{"nodeid": "z_first"}, {"nodeid": "a_second"}])
    log.record({**identity("k9/c/t1"), "test": {"nodeid": "a_second"}})
    log.record({**identity("k2/c/t1"), "test": {"nodeid": "a_second"}})
    log.record({**identity("k5/c/t1"), "test": {"nodeid": "never_collected"}})
    log.record({**identity("k3/c/t1")})  # written without its test: sorted with the uncollected ones
    log.record({**identity("k7/c/t1"), "test": {"nodeid": "z_first"}})
    merged = merge_run(run_dir)
    assert [record.key for record in merged.records] == [f"{k}/c/t1" for k in ("k7", "k2", "k9", "k3", "k5")]
    assert merged.missing == [] and merged.expected == ["z_first", "a_second"]


def test_session_reports_create_the_folder(tmp_path):
    run_dir = tmp_path / WORKERS_DIR / "1-run"
    _session(run_dir.parent, "1-run", ["a"], [])
    out = tmp_path / "deeper" / "still" / "out"
    write_session_reports(out, merge_run(run_dir), {"settings": {"model": "tiny:llama"}})
    assert json.loads((out / "run.json").read_text())["settings"] == {"model": "tiny:llama"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert any("1 of 1 measurement tests produced no record" in warning for warning in metrics["warnings"])
