"""`measure run` end to end on a tiny model: outputs, bad settings, interruption and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from measure.records import SKIPPED_FILE
from measure.records.columnar import read_samples
from measure.records.store import read_store
from measure.report.summary import render_from_dir
from measure.run import runner
from measure.settings import RunSettings, SettingsError

TINY = ["--model", "tiny:llama", "--limit", "3", "--group-size", "1", "--max-new-tokens", "12", "--points", "3,0.5",
        "--no-semantic", "--quiet"]


def measure(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "measure.cli", "run", *args], check=False, capture_output=True,
                          text=True, env=env, timeout=300)


def by_key(folder: Path) -> dict[str, dict]:
    records, _ = read_samples(folder / "samples.jsonl")  # arrays attached from the columnar files
    return {r["key"]: r for r in records}


def comparable(record: dict) -> dict:
    return {k: record[k] for k in ("tokens", "arrays", "metrics", "texts", "spans")}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "whole"
    result = measure(*TINY, "--out", str(out))
    assert result.returncode == 0, result.stderr
    (out.parent / "stdout.txt").write_text(result.stdout)
    return out


def test_run_prints_the_findings_of_its_report(uninterrupted):
    from measure.report.findings import findings_text

    printed = (uninterrupted.parent / "stdout.txt").read_text()
    findings = json.loads((uninterrupted / "metrics.json").read_text())["findings"]
    assert findings_text(findings) in printed  # the same sentences as metrics.json and the report
    # 3 problems cannot calibrate the latencies, and the run says so in words
    assert "What this run cannot say" in printed and "not reported" in printed
    assert printed.rstrip().endswith("report.html")


def test_run_writes_samples_metrics_and_report(uninterrupted):
    records = by_key(uninterrupted)
    conditions = {r["condition"] for r in records.values()}
    assert conditions == {"ignore", "oracle", "injection", "flush", "partial", "noise", "repeat"}
    assert len(records) == 3 * (2 + 5 * 2)
    metrics = json.loads((uninterrupted / "metrics.json").read_text())
    provenance = metrics["provenance"]
    assert provenance["model"]["name"] == "tiny:llama"
    assert provenance["settings"]["seed"] == 0
    assert provenance["versions"]["torch"] and "commit" in provenance["git"]
    # metrics.json counts what samples.jsonl holds, and the report names the model and every problem.
    samples = list(records.values())
    problem_ids = {r["problem_id"] for r in samples}
    counts = metrics["counts"]
    assert counts["records"] == len(samples) and counts["problems"] == len(problem_ids) == 3
    assert counts["per_condition_point"] == dict(Counter(f"{r['condition']}/{r['point']}" for r in samples))
    assert counts["skipped_points"] == 0 and metrics["skipped"] == []
    page = (uninterrupted / "report.html").read_text()
    assert "tiny:llama" in page
    assert all(problem_id in page for problem_id in problem_ids), problem_ids


def test_killed_run_resumes_to_the_same_records(uninterrupted, tmp_path):
    out = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "measure.cli", "run", *TINY, "--out", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples = out / "samples.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (samples.exists() and samples.read_text().count("\n") >= 12):
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    partial = by_key(out)
    # One problem per group: records arrive 12 at a time, so the kill lands between groups.
    assert 0 < len(partial) < len(by_key(uninterrupted)), "the kill should land mid-run"
    with open(samples, "a") as handle:  # what a crash mid-write leaves behind
        handle.write('{"schema": 1, "key": "builtin_02/flu')
    result = measure(*TINY, "--out", str(out), "--resume")
    assert result.returncode == 0, result.stderr
    resumed, whole = by_key(out), by_key(uninterrupted)
    assert set(resumed) == set(whole)
    for key in whole:
        assert comparable(resumed[key]) == comparable(whole[key]), key
    assert "truncated last record" in " ".join(json.loads((out / "run.json").read_text())["warnings"])
    assert read_store(samples)[1] == []  # the torn line was removed, not kept


def test_rerendered_report_keeps_the_points_the_engine_skipped(tmp_path, monkeypatch):
    """`measure report DIR` on a folder of `measure run`: the runner writes skipped points to
    skipped.jsonl only (run.json has none), and re-rendering must keep them.

    A point is skipped on a problem whose ignore run ends at or before it. Which problems the tiny
    random model ends early depends on its weights and the problem texts, so the test decides:
    for one problem every token counts as end of sequence (its runs stop after 1 token), the
    others run to --max-new-tokens, past the late point 20.
    """
    problems = runner.load_pairs("builtin", None, limit=3)
    ends_early = problems[1].id

    class EndsEarlyOnOneProblem(runner.Engine):
        def run_problems(self, group):
            if ends_early not in {problem.id for problem in group}:
                return super().run_problems(group)
            kept, self.eos_ids = self.eos_ids, set(range(len(self.tokenizer)))
            try:
                return super().run_problems(group)
            finally:
                self.eos_ids = kept

    monkeypatch.setattr(runner, "Engine", EndsEarlyOnOneProblem)
    settings = RunSettings(model="tiny:llama", dataset="builtin", limit=3, max_new_tokens=24, points=["20"], group_size=1,
                           semantic=False, out=str(tmp_path / "run"))
    out = runner.run_measurement(settings, show_progress=False)
    written, warnings = read_store(out / SKIPPED_FILE)
    assert warnings == [] and [(s["problem_id"], s["point"]) for s in written] == [(ends_early, "t20")]
    assert "skipped" not in json.loads((out / "run.json").read_text())
    first = json.loads((out / "metrics.json").read_text())
    assert first["counts"]["skipped_points"] == 1 and first["skipped"] == written

    for _ in range(2):  # a second re-render reads the first one's metrics.json too: still kept
        metrics = render_from_dir(out, n_resamples=50)
        assert metrics["counts"]["skipped_points"] == 1
        assert metrics["skipped"] == written
        assert json.loads((out / "metrics.json").read_text())["skipped"] == written
    assert not any(SKIPPED_FILE in warning for warning in metrics["warnings"])
    page = (out / "report.html").read_text()
    assert written[0]["reason"] in page  # the skipped point and its reason are listed

    # --resume reads skipped.jsonl back (every line has a key) and has nothing left to measure.
    samples_before = (out / "samples.jsonl").read_text()
    runner.run_measurement(RunSettings(**{**settings.as_dict(), "resume": True}), show_progress=False)
    assert (out / "samples.jsonl").read_text() == samples_before
    assert read_store(out / SKIPPED_FILE)[0] == written
    assert json.loads((out / "metrics.json").read_text())["skipped"] == written


def test_condition_the_model_cannot_run_is_a_clear_error(tmp_path):
    """The default conditions include 'partial', which needs rotary positions: GPT-2 has none."""
    result = measure("--model", "tiny:gpt2", "--limit", "1", "--max-new-tokens", "12", "--points", "3",
                     "--no-semantic", "--quiet", "--out", str(tmp_path / "o"))
    assert result.returncode == 2, result.stderr
    assert "measure run: error: condition 'partial' needs rotary position embeddings" in result.stderr
    assert "--conditions" in result.stderr and "Traceback" not in result.stderr


def test_existing_output_needs_resume(uninterrupted):
    result = measure(*TINY, "--out", str(uninterrupted))
    assert result.returncode == 2
    assert "--resume" in result.stderr


@pytest.mark.parametrize("flags, message", [
    (["--conditions", "ignore,teleport"], "unknown condition"),
    (["--points", "40"], (r"--points: injection point t40 lies at or beyond the generation length "
                          r"\(--max-new-tokens 12\)")),
    (["--points", "0"], "--points: injection point 0 must be a positive whole number"),
    (["--max-new-tokens", "1", "--points", "0.5"], "--max-new-tokens must be at least 2"),
    (["--update-form", "shout"], "--update-form 'shout': unknown update form"),
    (["--dataset", "nope"], "--dataset"),
    (["--variation-types", "sideways"], "unknown variation type"),
    (["--out", "{tmp}/a-file/run"], "not a writable folder"),
])
def test_bad_settings_fail_before_the_model_loads(flags, message, monkeypatch, tmp_path):
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the settings were checked")

    monkeypatch.setattr(runner, "load_model", no_model)
    values = {"model": "tiny:llama", "limit": 2, "max_new_tokens": 12, "points": ["3"], "out": str(tmp_path / "o")}
    from measure.cli import build_parser
    (tmp_path / "a-file").write_text("a file, not a folder")
    args = build_parser().parse_args(["run", *[flag.format(tmp=tmp_path) for flag in flags]])
    values.update({k: v for k, v in vars(args).items() if k in RunSettings.__dataclass_fields__})
    with pytest.raises(SettingsError, match=message):
        runner.run_measurement(RunSettings(**values), show_progress=False)


def test_empty_dataset_is_an_error_before_the_model_loads(monkeypatch, tmp_path):
    monkeypatch.setattr(runner, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(SettingsError, match="no problems"):
        runner.run_measurement(RunSettings(dataset=str(empty), out=str(tmp_path / "o")), show_progress=False)


def test_settings_from_toml_and_unknown_keys(tmp_path):
    from measure.settings import from_toml

    good = tmp_path / "run.toml"
    good.write_text('[run]\nmodel = "tiny:llama"\npoints = ["4", "0.3"]\nmax-new-tokens = 20\n')
    assert from_toml(good) == {"model": "tiny:llama", "points": ["4", "0.3"], "max_new_tokens": 20}
    bad = tmp_path / "bad.toml"
    bad.write_text("[run]\nmodle = 'x'\n")
    with pytest.raises(SettingsError, match="unknown setting 'modle'"):
        from_toml(bad)
