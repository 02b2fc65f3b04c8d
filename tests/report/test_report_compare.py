"""measure compare: gate grammar and semantics, difference table, exit codes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from measure.report import cli
from measure.report.compare import CompareError, compare, parse_gate


@pytest.mark.parametrize("text, direction, tolerance, relative", [
    ("adaptation_latency.median:+2", "+", 2.0, False),
    ("adaptation_latency.median:-2", "-", 2.0, False),
    ("adaptation_latency.median:2", "±", 2.0, False),
    ("adaptation_latency.median:±2", "±", 2.0, False),
    ("kl_oracle_short.mean:5%", "±", 0.05, True),
    ("kl_oracle_short.mean:+0.5%", "+", 0.005, True),
    ("outcome_adapted.rate:-0.1", "-", 0.1, False),
])
def test_parse_gate(text, direction, tolerance, relative):
    gate = parse_gate(text)
    assert (gate.direction, gate.relative) == (direction, relative)
    assert gate.tolerance == pytest.approx(tolerance)


def test_parse_gate_with_condition():
    gate = parse_gate("injection/adaptation_latency.median:+2")
    assert gate.condition == "injection" and gate.metric == "adaptation_latency"


@pytest.mark.parametrize("text, message", [
    ("no_such_metric.mean:1", "no_such_metric"),
    ("kl_oracle_short.median:1", "use kl_oracle_short.mean"),
    ("adaptation_latency.mean:1", "use adaptation_latency.median"),
    ("adaptation_latency.p99:1", "unknown statistic"),
    ("adaptation_latency.median", "bad gate"),
    ("adaptation_latency.median:abc", "bad gate"),
])
def test_bad_gates_are_errors_naming_the_problem(text, message):
    with pytest.raises(CompareError, match=message):
        parse_gate(text)


@pytest.mark.parametrize("gate, base, new, ok", [
    ("adaptation_latency.median:+2", 5, 7, True),   # the bound itself passes
    ("adaptation_latency.median:+2", 5, 8, False),
    ("adaptation_latency.median:+2", 5, 0, True),   # any fall passes
    ("adaptation_latency.median:-2", 5, 2, False),
    ("adaptation_latency.median:-2", 5, 50, True),
    ("adaptation_latency.median:2", 5, 2, False),
    ("adaptation_latency.median:2", 5, 8, False),
    ("adaptation_latency.median:2", 5, 6.5, True),
    ("kl_oracle_short.mean:10%", 2.0, 2.19, True),
    ("kl_oracle_short.mean:10%", 2.0, 1.7, False),
    ("kl_oracle_short.mean:+10%", 2.0, 1.0, True),
    ("kl_oracle_short.mean:10%", 0.0, 0.0, True),
    ("kl_oracle_short.mean:10%", 0.0, 1e-9, False),  # base 0: no relative room
    ("adaptation_latency.median:+2", 5, math.inf, False),  # median no longer reached
    ("adaptation_latency.median:+2", math.inf, 5, True),
    ("adaptation_latency.median:2", math.inf, 5, False),
    ("adaptation_latency.median:2", math.inf, math.inf, True),
    ("kl_oracle_short.mean:10%", None, None, True),
    ("kl_oracle_short.mean:10%", 1.0, None, False),
])
def test_gate_semantics(gate, base, new, ok):
    assert parse_gate(gate).check(base, new)[0] is ok


def _bump(run_dir, condition, metric, field, delta, pooled=True):
    path = run_dir / "metrics.json"
    metrics = json.loads(path.read_text())
    table = metrics["aggregate_pooled" if pooled else "aggregate"]
    hit = 0
    for row in table:
        if row["condition"] == condition and row["metric"] == metric:
            row[field] = (row[field] or 0) + delta
            hit += 1
    assert hit
    path.write_text(json.dumps(metrics))


@pytest.fixture
def two_runs(report_dir, tmp_path, helpers):
    return helpers.copy_run(report_dir, tmp_path / "base"), helpers.copy_run(report_dir, tmp_path / "new")


def test_identical_runs_pass(two_runs):
    result = compare(*two_runs, ["adaptation_latency.median:0", "kl_oracle_short.mean:0%"])
    assert not result.failed and result.exit_code == 0
    assert all(g.checked > 0 for g in result.gates)
    assert "adaptation_latency.median" in result.table()


def test_regression_beyond_tolerance_fails(two_runs):
    base, new = two_runs
    _bump(new, "injection", "kl_oracle_short", "estimate", 1.0)
    result = compare(base, new, ["kl_oracle_short.mean:5%", "kl_oracle_short.mean:-5%", "injection/kl_oracle_short.mean:+1.5"])
    status = {g.gate.text: g.passed for g in result.gates}
    assert status == {"kl_oracle_short.mean:5%": False, "kl_oracle_short.mean:-5%": True,
                      "injection/kl_oracle_short.mean:+1.5": True}
    failing = result.gates[0].failures
    assert {r.condition for r in failing} == {"injection"} and {r.point for r in failing} == {"t4", "f0.5"}
    assert "FAIL kl_oracle_short.mean:5%" in result.table()


def test_missing_row_in_new_fails(two_runs):
    base, new = two_runs
    metrics = json.loads((new / "metrics.json").read_text())
    metrics["aggregate_pooled"] = [r for r in metrics["aggregate_pooled"] if r["condition"] != "noise"]
    (new / "metrics.json").write_text(json.dumps(metrics))
    result = compare(base, new, ["adaptation_latency.median:+100"])
    assert result.failed and all(r.condition == "noise" for r in result.gates[0].failures)


def test_per_variation_gates_strata(two_runs):
    base, new = two_runs
    _bump(new, "flush", "kl_matched_short", "estimate", 5.0, pooled=False)
    assert not compare(base, new, ["kl_matched_short.mean:1"]).failed
    assert compare(base, new, ["kl_matched_short.mean:1"], per_variation=True).failed


def test_provenance_differences_are_listed(two_runs):
    base, new = two_runs
    metrics = json.loads((new / "metrics.json").read_text())
    metrics["provenance"]["git"] = "f" * 40
    (new / "metrics.json").write_text(json.dumps(metrics))
    assert "git" in compare(base, new).summary()


def test_cli_exit_codes(two_runs, capsys):
    base, new = two_runs
    # 3 problems cannot calibrate latencies: gate the adaptation gap (a mean) instead
    _bump(new, "injection", "adaptation_gap", "estimate", 3)
    assert cli.main(["compare", str(base), str(new), "--fail", "adaptation_gap.mean:+5"]) == 0
    assert cli.main(["compare", str(base), str(new), "--fail", "adaptation_gap.mean:+2"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "injection" in out
    assert cli.main(["compare", str(base), str(new), "--fail", "latency_of_doom.median:+2"]) == 2
    assert "latency_of_doom" in capsys.readouterr().err
    assert cli.main(["compare", str(base), str(base.parent / "nope")]) == 2


def test_compare_from_samples_only(report_dir, tmp_path, helpers):
    run = helpers.copy_run(report_dir, tmp_path / "samples_only")
    (run / "metrics.json").unlink()
    (run / "report.html").unlink()
    result = compare(report_dir, run, ["outcome_adapted.rate:0"])
    assert not result.failed and any("samples.jsonl" in n for n in result.notes)


def test_cli_report_rerenders(report_dir, tmp_path, helpers, capsys):
    run = helpers.copy_run(report_dir, tmp_path / "run")
    (run / "report.html").unlink()
    assert cli.main(["report", str(run), "--resamples", str(helpers.RESAMPLES)]) == 0
    assert (run / "report.html").exists()
    assert cli.main(["report", str(tmp_path / "empty")]) == 2


def test_register_adds_subcommands():
    import argparse

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["compare", "a", "b", "--fail", "x.mean:1", "--fail", "y.mean:2"])
    assert args.func is cli.run_compare and args.fail == ["x.mean:1", "y.mean:2"]
    assert parser.parse_args(["report", "d"]).func is cli.run_report


def test_check_gates_bound_the_new_runs_invariants(two_runs):
    base, new = two_runs
    metrics = json.loads((Path(new) / "metrics.json").read_text())
    name, entry = next(iter(metrics["checks"].items()))
    assert compare(base, new, check_gates=[f"{name}:{entry['max'] * 2 + 1e-12}"]).exit_code == 0
    failing = compare(base, new, check_gates=[f"{name}:{entry['max'] / 2 - 1e-12}"])
    assert failing.exit_code == 1 and "FAIL" in failing.summary()
    with pytest.raises(CompareError, match="no check 'nope'"):
        compare(base, new, check_gates=["nope:1"])
    with pytest.raises(CompareError, match="bad check gate"):
        compare(base, new, check_gates=["full_recompute_max_kl:abc"])


def test_value_gates_bound_values_of_the_new_metrics_at_a_path(two_runs):
    base, new = two_runs
    path = Path(new) / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["calibration"]["lead"]["points"] = {"t4": {"false_event_rate": {"controls": {"estimate": 0.04}}},
                                                "f0.5": {"false_event_rate": {"controls": {"estimate": 0.08}}}}
    path.write_text(json.dumps(metrics))
    gate = "calibration.lead.points.*.false_event_rate.controls.estimate"
    passing = compare(base, new, value_gates=[f"{gate}:0.1"])
    assert passing.exit_code == 0 and len(passing.value_gates[0].values) == 2
    failing = compare(base, new, value_gates=[f"{gate}:0.05"])  # f0.5's 0.08 is above
    assert failing.exit_code == 1 and "calibration.lead.points.f0.5.false_event_rate.controls.estimate = 0.08" \
        in failing.summary()
    assert compare(base, new, value_gates=["calibration.nothing.*:1"]).exit_code == 1  # matches nothing: fails
    with pytest.raises(CompareError, match="bad value gate"):
        compare(base, new, value_gates=[f"{gate}:abc"])
