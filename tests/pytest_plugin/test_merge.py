"""The end of a session merges its own processes' files only, also when --measure-out is reused.

Every session writes under ``<out>/workers/<run id>/`` and the earlier sessions' folders stay
there; merging them in would put stale records into the new report. Tests without a record are
reported with the reason (merge_run's ``missing``).
"""

from __future__ import annotations

import json
from pathlib import Path

from test_plugin import FAKE_HELPERS  # the fake records the plugin tests write

import measure.report.html
import measure.report.summary
import measure.run.provenance
import measure.settings  # noqa: F401  (imported before pytester's in-process runs: see test_plugin.py)
from measure.pytest_plugin.merge import merge_run
from measure.pytest_plugin.worker_log import WORKERS_DIR, WorkerLog

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


def _session(workers: Path, run_id: str, nodeids: list[str], recorded: list[str]) -> None:
    log = WorkerLog(workers / run_id, "main")
    log.event("collected", tests=[{"nodeid": nodeid, "key": f"{nodeid}/c/t1"} for nodeid in nodeids])
    for nodeid in nodeids:
        log.event("start", nodeid)
        if nodeid in recorded:
            log.record({"key": f"{nodeid}/c/t1", "test": {"nodeid": nodeid}})
            log.event("end", nodeid, outcome="passed")


def test_merge_reads_one_session_and_names_what_left_no_record(tmp_path):
    workers = tmp_path / WORKERS_DIR
    _session(workers, "1-old", ["old_a", "old_b"], ["old_a", "old_b"])
    _session(workers, "2-new", ["new_a", "new_b", "new_c"], ["new_b", "new_a"])
    merged = merge_run(workers / "2-new")
    assert [record["key"] for record in merged.records] == ["new_a/c/t1", "new_b/c/t1"]  # collection order
    assert merged.expected == ["new_a", "new_b", "new_c"]
    assert [(m["nodeid"], m["reason"].split(":")[0]) for m in merged.missing] == [("new_c", "no record")]
    assert "died while running it" in merged.missing[0]["reason"]
    assert merged.warnings == ["1 of 3 measurement tests produced no record: new_c (" + merged.missing[0]["reason"] + ")"]
