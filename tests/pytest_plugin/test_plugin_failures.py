"""A pytest session that cannot measure does not pass, and a crashed one leaves a report folder.

Runs go through ``runpytest_subprocess`` where the model code (torch) is imported or a process is
killed; see tests/pytest_plugin/test_plugin.py for how the plugin is tested otherwise.
"""

from __future__ import annotations

import json

import pytest
import torch

import measure.report.html
import measure.report.summary

# In-process pytester runs restore sys.modules afterwards; modules with C extensions (torch,
# numpy.fft under matplotlib) must be imported before one, or the next import fails.
import measure.run.provenance
import measure.settings  # noqa: F401
from measure import cli

pytest_plugins = ("pytester",)

CASE_TEST = '''
def test_case(measure_case, measure_suite, measurement):
    measurement.record(measure_suite.measure(measure_case).record)
'''

FAKE = '''
import os
import signal

import pytest


def fake(key, value):
    problem, condition, point = key.split("/")
    return {"key": key, "problem_id": problem, "condition": condition, "point": point,
            "variation_type": "single_number", "metrics": {"kl_oracle_immediate": value}}


@pytest.mark.parametrize("i", range(2))
def test_records(measurement, i):
    measurement.record(fake(f"p{i}/injection/t6", 0.1 * i))


def test_killed(measurement):
    os.kill(os.getpid(), signal.SIGKILL)


def test_never_runs(measurement):
    measurement.record(fake("p9/injection/t6", 0.9))
'''

SKIPPING = '''
import pytest


@pytest.mark.parametrize("i", range(2))
def test_nothing_recorded(measurement, i):
    pytest.skip("no model here")
'''


def test_a_model_path_that_does_not_exist_is_a_usage_error(pytester):
    pytester.makepyfile(test_cases=CASE_TEST)
    result = pytester.runpytest_subprocess("--measure-model", "/path/that/is/not/a/model", "-k", "injection")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*measure: --measure-model /path/that/is/not/a/model: no such model file or folder*"])


def test_a_model_that_fails_to_load_fails_the_session(pytester):
    empty = pytester.mkdir("empty-model")  # exists, so it passes the path check; holds no weights
    pytester.makepyfile(test_cases=CASE_TEST)
    result = pytester.runpytest_subprocess("--measure-model", str(empty), "--measure-limit", "1", "-k", "injection",
                                           "--measure-out", "out")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*--measure-model*cannot be loaded*holds no *.safetensors*",
                                 "*none of the 1 selected measurement tests recorded anything; the session fails*"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_a_device_the_machine_lacks_is_a_usage_error(pytester):
    pytester.makepyfile(test_cases=CASE_TEST)
    result = pytester.runpytest_subprocess("--measure-model", "tiny:llama", "--measure-device", "cuda", "-k", "injection")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--measure-device cuda*torch sees no CUDA GPU*"])


def test_a_session_that_recorded_nothing_fails(pytester):
    pytester.makepyfile(test_skip=SKIPPING)
    result = pytester.runpytest("--measure-out", "out")
    result.assert_outcomes(skipped=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*none of the 2 selected measurement tests recorded anything; the session fails*"])


def test_an_out_folder_of_the_users_is_refused(pytester):
    (pytester.mkdir("mine") / "notes.txt").write_text("the user's")
    pytester.makepyfile(test_skip=SKIPPING)
    result = pytester.runpytest("--measure-out", "mine")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--measure-out*the folder is not empty and holds no measurement run*"])
    assert [p.name for p in (pytester.path / "mine").iterdir()] == ["notes.txt"]


def test_a_crashed_serial_session_leaves_a_folder_measure_report_renders(pytester, capsys):
    pytester.makepyfile(test_crash=FAKE)
    result = pytester.runpytest_subprocess("--measure-out", "out", "-p", "no:cacheprovider")
    assert result.ret != 0  # the process was killed
    out = pytester.path / "out"
    assert not (out / "metrics.json").exists()  # the session never reached its end
    assert cli.main(["report", str(out)]) == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["counts"]["records"] == 2
    assert sorted(r["key"] for r in map(json.loads, (out / "samples.jsonl").read_text().splitlines())) == [
        "p0/injection/t6", "p1/injection/t6"]
    assert (out / "report.html").stat().st_size > 1000
