"""The Python API: docs/python-api.md's example runs as written, on the committed baseline in both
layouts; the frames hold what the records hold; `import measure` stays cheap; measure.Experiment(...).run() measures."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import measure
from measure.records.upgrade import upgrade_run

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / "reports" / "baselines" / "smollm2"
DOC = ROOT / "docs" / "python-api.md"


def example() -> str:
    """The first ```python block of docs/python-api.md."""
    return re.search(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL).group(1)


@pytest.fixture(scope="module")
def upgraded(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("api") / "smollm2"
    shutil.copytree(BASELINE, run)
    upgrade_run(run)
    return run


@pytest.mark.parametrize("layout", [1, 2])
def test_the_documented_example_runs_and_plots_a_curve(layout, upgraded, tmp_path, monkeypatch):
    folder = BASELINE if layout == 1 else upgraded
    code = example().replace('"reports/baselines/smollm2"', repr(str(folder)))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)  # the documentation's own code
    assert (tmp_path / "kl_oracle.png").stat().st_size > 1000
    mean = namespace["mean"]
    assert list(mean.columns) == ["flush", "injection"] and mean.index.min() == 0
    plt = namespace["plt"]
    plt.close("all")


def test_frames_hold_what_the_records_hold(upgraded):
    run = measure.open_run(upgraded)
    records = list(run.records())
    assert len(records) == 280 and all(isinstance(r, measure.Record) for r in records)
    runs = run.runs_frame()
    assert len(runs) == 280 and runs.columns[:4].tolist() == ["key", "problem_id", "condition", "point"]
    record = next(r for r in records if r.condition == "partial" and r.problem_id == "builtin_07")
    row = runs.set_index("key").loc[record.key]
    assert row["kl_oracle_short"] == record.metrics["kl_oracle_short"]
    curves = run.curves_frame("kl:oracle", conditions=["partial"])
    assert set(curves.condition) == {"partial"} and len(curves) == sum(
        len(r.arrays.kl["oracle"]) for r in records if r.condition == "partial")
    one = curves[curves.problem == "builtin_07"].sort_values("k")
    assert one.k.tolist() == list(range(-record.t0, len(record.arrays.kl["oracle"]) - record.t0))
    np.testing.assert_array_equal(one.value.to_numpy(), np.array(record.arrays.kl["oracle"], dtype=float))
    layout_1 = measure.open_run(BASELINE).curves_frame("kl:oracle", conditions=["partial"])
    assert layout_1.equals(curves)  # the same frame from inline arrays and from the columnar files
    with pytest.raises(ValueError, match="no per-token curve"):
        run.curves_frame("attention_layers_tokens:inserted")
    assert run.settings.points == ["6"] and run.calibration["alpha"] == 0.05


def test_import_measure_imports_nothing_heavy():
    code = "import sys, measure; print(sorted(m for m in ('torch', 'pandas', 'pyarrow', 'pydantic') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
    assert set(measure.__all__) == {"Experiment", "Record", "Run", "RunSettings", "__version__", "open_run"}


def test_measure_run_measures_from_python_and_returns_the_run(tmp_path):
    settings = measure.RunSettings(model="tiny:llama", dataset="builtin", limit=1, max_new_tokens=8, points=["3"],
                                   conditions=["injection", "noise"], semantic=False, out=str(tmp_path / "run"))
    run = measure.Experiment(settings).run(show_progress=False)
    assert isinstance(run, measure.Run) and run.path == tmp_path / "run"
    assert sorted(run.runs_frame().condition) == ["injection", "noise"]
    assert run.settings.limit == 1 and run.settings.conditions == ["injection", "noise"]
