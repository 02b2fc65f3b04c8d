"""`measure run` end to end on a tiny model: outputs, bad settings, interruption and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from measure import runner
from measure.report.store import read_records
from measure.settings import RunSettings, SettingsError

TINY = ["--model", "tiny:llama", "--limit", "3", "--group-size", "1", "--max-new-tokens", "12", "--points", "3,0.5",
        "--no-semantic", "--quiet"]


def measure(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "measure.cli", "run", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def by_key(folder: Path) -> dict[str, dict]:
    records, warnings = read_records(folder / "samples.jsonl")
    return {r["key"]: r for r in records}


def comparable(record: dict) -> dict:
    return {k: record[k] for k in ("tokens", "arrays", "metrics", "texts", "spans")}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "whole"
    result = measure(*TINY, "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


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
    assert (uninterrupted / "report.html").stat().st_size > 1000


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
    assert read_records(samples)[1] == []  # the torn line was removed, not kept


def test_existing_output_needs_resume(uninterrupted):
    result = measure(*TINY, "--out", str(uninterrupted))
    assert result.returncode == 2
    assert "--resume" in result.stderr


@pytest.mark.parametrize("flags, message", [
    (["--conditions", "ignore,teleport"], "unknown condition"),
    (["--points", "40"], "beyond the generation length"),
    (["--dataset", "nope"], "--dataset"),
    (["--variation-types", "sideways"], "unknown variation type"),
    (["--out", "{tmp}/a-file/run"], "not a writable folder"),
])
def test_bad_settings_fail_before_the_model_loads(flags, message, monkeypatch, tmp_path):
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the settings were checked")

    monkeypatch.setattr(runner, "load_model", no_model)
    values = dict(model="tiny:llama", limit=2, max_new_tokens=12, points=["3"], out=str(tmp_path / "o"))
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
