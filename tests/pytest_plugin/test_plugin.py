"""The measure pytest plugin, tested with pytester: options, recording, reports, xdist, crashes.

Most runs use fake records (no model); one compares a serial and an ``-n 2`` run of the real
suite file (suites/test_conditions.py) on the tiny random llama, which takes a few seconds.
Runs with xdist go through ``runpytest_subprocess`` so a worker killed with SIGKILL cannot take
the test process with it.
"""

from __future__ import annotations

import json
from pathlib import Path

import measure.report.html
import measure.report.summary

# In-process pytester runs restore sys.modules afterwards; torch (C extensions) must not be
# imported inside one and dropped, or the next import crashes. Import what the runs use first.
import measure.run.provenance
import measure.settings  # noqa: F401  (the engine)
from measure.pytest_plugin.cases import Case, build_cases
from measure.pytest_plugin.options import select_problems

pytest_plugins = ("pytester",)

SUITE_FILE = Path(__file__).resolve().parents[2] / "suites" / "test_conditions.py"

FAKE_HELPERS = '''
import os
import signal

import pytest


def fake(key, value):
    problem, condition, point = key.split("/")
    return {"key": key, "problem_id": problem, "condition": condition, "point": point,
            "variation_type": "single_number", "metrics": {"kl_oracle_immediate": value}}
'''

FAKE_TESTS = FAKE_HELPERS + '''

@pytest.mark.parametrize("i", range(4))
def test_records(measurement, i):
    measurement.record(fake(f"p{i}/injection/t6", 0.1 * i))


def test_failed_invariant(measurement):
    from measure.pytest_plugin.invariants import below

    invariants = [below("small", 2.0, 1.0, "a value that must stay below 1")]
    measurement.record(fake("p9/noise/t6", 2.0), invariants)
    assert all(invariant.ok for invariant in invariants)


def test_skipped_before_recording(measurement):
    pytest.skip("nothing to measure here")


def test_not_a_measurement():
    pass
'''

KILL_TESTS = FAKE_HELPERS + '''

@pytest.mark.parametrize("i", range(3))
def test_survivor(measurement, i):
    measurement.record(fake(f"p{i}/injection/t6", 0.1 * i))


@pytest.mark.xdist_group("g")
def test_group_before(measurement):
    measurement.record(fake("p5/injection/t6", 0.5))


@pytest.mark.xdist_group("g")
def test_killed(measurement):
    measurement.record(fake("p7/injection/t6", 0.7))  # kept in memory only: lost with the worker
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.xdist_group("g")
def test_group_after(measurement):  # runs on the replacement worker
    measurement.record(fake("p8/injection/t6", 0.8))
'''


def samples(folder: Path) -> list[dict]:
    lines = (folder / "samples.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def without_worker(records: list[dict]) -> list[dict]:
    out = []
    for record in records:
        record = dict(record)
        record["test"] = {k: v for k, v in record["test"].items() if k != "worker"}
        out.append(record)
    return out


def test_options_are_listed_in_help(pytester):
    result = pytester.runpytest("--help")
    for option in ("--measure-model", "--measure-dataset", "--measure-data-dir", "--measure-limit",
                   "--measure-points", "--measure-max-new-tokens", "--measure-out"):
        result.stdout.fnmatch_lines([f"*{option}*"])


def test_a_session_without_measurements_writes_nothing(pytester):
    pytester.makepyfile("def test_plain():\n    pass\n")
    result = pytester.runpytest("--measure-out", "out")
    result.assert_outcomes(passed=1)
    assert not (pytester.path / "out").exists()
    assert not (pytester.path / "reports").exists()


def test_records_are_written_with_their_test_outcome_and_report(pytester):
    pytester.makepyfile(test_fake=FAKE_TESTS)
    result = pytester.runpytest("--measure-out", "out")
    result.assert_outcomes(passed=5, failed=1, skipped=1)
    out = pytester.path / "out"
    records = {record["key"]: record for record in samples(out)}
    assert sorted(records) == ["p0/injection/t6", "p1/injection/t6", "p2/injection/t6", "p3/injection/t6",
                               "p9/noise/t6"]
    assert records["p1/injection/t6"]["test"] == {
        "nodeid": "test_fake.py::test_records[1]", "outcome": "passed", "failed_invariants": [], "worker": "main"}
    failed = records["p9/noise/t6"]
    assert failed["test"]["outcome"] == "failed"
    assert failed["test"]["failed_invariants"] == ["small"]
    assert failed["invariants"]["small"] == {"value": 2.0, "bound": 1.0, "relation": "<", "ok": False,
                                             "what": "a value that must stay below 1"}
    assert failed["metrics"] == {"kl_oracle_immediate": 2.0}  # the measurement is kept
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["counts"]["records"] == 5
    assert metrics["skipped"] == [{"test": "test_fake.py::test_skipped_before_recording", "key": None,
                                   "reason": "skipped: nothing to measure here"}]
    assert any("1 of 6 measurement tests produced no record" in w for w in metrics["warnings"])
    assert "test_skipped_before_recording" in (out / "report.html").read_text()
    run = json.loads((out / "run.json").read_text())
    assert run["tests"]["expected"] == 6 and run["tests"]["with_records"] == 5
    result.stdout.fnmatch_lines(["*measure: 5 records from 5 of 6 measurement tests*",
                                 "*no record from test_fake.py::test_skipped_before_recording: skipped*"])


def test_xdist_run_merges_the_same_records_as_a_serial_run(pytester):
    pytester.makepyfile(test_fake=FAKE_TESTS)
    pytester.runpytest_subprocess("--measure-out", "serial").assert_outcomes(passed=5, failed=1, skipped=1)
    result = pytester.runpytest_subprocess("-n", "2", "--measure-out", "parallel")
    result.assert_outcomes(passed=5, failed=1, skipped=1)
    serial, parallel = samples(pytester.path / "serial"), samples(pytester.path / "parallel")
    assert without_worker(parallel) == without_worker(serial)
    assert {record["test"]["worker"] for record in parallel} <= {"gw0", "gw1"}
    assert len(list((pytester.path / "parallel" / "workers").glob("*/gw*.jsonl"))) >= 2


def test_a_killed_worker_is_reported_and_the_other_records_survive(pytester):
    pytester.makepyfile(test_kill=KILL_TESTS)
    result = pytester.runpytest_subprocess("-n", "2", "--measure-out", "out")
    result.stdout.fnmatch_lines(["*crashed while running*test_killed*"])
    out = pytester.path / "out"
    keys = sorted(record["key"] for record in samples(out))
    assert keys == ["p0/injection/t6", "p1/injection/t6", "p2/injection/t6", "p5/injection/t6", "p8/injection/t6"]
    result.assert_outcomes(passed=5, failed=1)
    metrics = json.loads((out / "metrics.json").read_text())
    (missing,) = metrics["skipped"]
    assert missing["test"] == "test_kill.py::test_killed"
    assert "died while running it" in missing["reason"]
    assert any("test_killed" in warning for warning in metrics["warnings"])
    assert "test_killed" in (out / "report.html").read_text()
    result.stdout.fnmatch_lines(["*no record from test_kill.py::test_killed: no record: worker gw* died*"])


def test_cases_are_selectable_by_condition_variation_type_and_problem(pytester):
    pytester.makepyfile(test_cases="def test_case(measure_case):\n    pass\n")
    args = ("--collect-only", "-q", "--measure-model", "tiny:llama", "--measure-points", "6,0.5")
    result = pytester.runpytest(*args, "-k", "injection and control")
    result.stdout.fnmatch_lines(["*test_case[[]injection-t6-builtin_03[]]", "*test_case[[]injection-f0.5-builtin_03[]]",
                                 "*2/38 tests collected*"])
    result = pytester.runpytest(*args, "-k", "oracle")
    result.stdout.fnmatch_lines(["*test_case[[]oracle-builtin_00[]]", "*test_case[[]oracle-builtin_03[]]",
                                 "*2/38 tests collected*"])
    result = pytester.runpytest(*args, "--measure-limit", "1", "-k", "control and t6")
    result.stdout.fnmatch_lines(["*8/18 tests collected*"])  # limit 1: the control replaces builtin_00
    # The strategies by name (2 points, 2 problems): multi and multi_retract, but no multi case on the
    # identical control builtin_03, which has no chain; gradual and gradual_stream.
    result = pytester.runpytest(*args, "-k", "multi")
    result.stdout.fnmatch_lines(["*test_case[[]multi-t6-builtin_00[]]", "*test_case[[]multi_retract-f0.5-builtin_03[]]",
                                 "*6/38 tests collected*"])
    assert "multi-t6-builtin_03" not in result.stdout.str()
    result = pytester.runpytest(*args, "-k", "gradual")
    result.stdout.fnmatch_lines(["*test_case[[]gradual_stream-t6-builtin_00[]]", "*8/38 tests collected*"])


def test_problem_selection_includes_a_control():
    class Pair:
        def __init__(self, id, variation_type):
            self.id, self.variation_type = id, variation_type

    pairs = [Pair("a", "single_number"), Pair("b", "multi_number"), Pair("c", None), Pair("d", "added_step")]
    assert [p.id for p in select_problems(pairs, 2)] == ["a", "c"]
    assert [p.id for p in select_problems(pairs, 3)] == ["a", "b", "c"]
    assert [p.id for p in select_problems(pairs, None)] == ["a", "b", "c", "d"]
    assert [p.id for p in select_problems(pairs[:2], 1)] == ["a"]  # no control to swap in


def test_case_ids_and_keywords():
    class Pair:
        id, variation_type, kind = "builtin_07", None, "math"

    cases = build_cases([Pair()], ("ignore", "injection"), ["t16", "f0.3"], "builtin")
    assert [case.id for case in cases] == ["ignore-builtin_07", "injection-t16-builtin_07",
                                           "injection-f0.3-builtin_07"]
    assert cases[1] == Case("builtin_07", "injection", "t16", None, "builtin", "math")
    assert cases[1].key == "builtin_07/injection/t16"
    assert {"control", "injection", "builtin", "math", "t16"} <= cases[1].keywords


def test_suite_on_tiny_model_serial_and_xdist_give_the_same_records(pytester):
    """The real suite file, all conditions and strategies of two problems (one a control, which has no
    chain and so no multi test), serial vs -n 2."""
    pytester.makepyfile(test_conditions=SUITE_FILE.read_text())
    common = ("--measure-model", "tiny:llama", "--measure-threads", "1")
    pytester.runpytest_subprocess(*common, "--measure-out", "serial").assert_outcomes(passed=21)
    result = pytester.runpytest_subprocess(*common, "-n", "2", "--measure-out", "parallel")
    result.assert_outcomes(passed=21)
    serial, parallel = samples(pytester.path / "serial"), samples(pytester.path / "parallel")
    assert [r["key"] for r in parallel] == [r["key"] for r in serial]
    assert without_worker(parallel) == without_worker(serial)
    # loadgroup (switched on by the plugin): all of a problem's tests ran on one worker.
    workers = {}
    for record in parallel:
        workers.setdefault(record["problem_id"], set()).add(record["test"]["worker"])
    assert all(len(names) == 1 for names in workers.values()), workers
    run = json.loads((pytester.path / "parallel" / "run.json").read_text())
    assert run["pytest"]["dist"] == "loadgroup"
    control = [r for r in serial if r["variation_type"] is None]
    assert control and all("control_flush_continues_ignore" in r["invariants"] for r in control if r["condition"] == "flush")
    by_condition = {condition: [r for r in serial if r["condition"] == condition] for condition in ("ignore", "partial")}
    assert by_condition["ignore"] and all("ignore_self_kl" in r["invariants"] for r in by_condition["ignore"])
    assert by_condition["partial"] and all(r["invariants"]["partial_independent"]["value"] < 1e-5
                                           for r in by_condition["partial"])
    assert all(r["test"]["failed_invariants"] == [] for r in serial)
