"""The repository's conftest.py: under CI=true with the datasets present a skip for a missing
dependency fails; every run ends with one line counting the skips and their reasons."""

from __future__ import annotations

from pathlib import Path

pytest_plugins = ("pytester",)

ROOT_CONFTEST = (Path(__file__).resolve().parents[1] / "conftest.py").read_text()

SKIPPING = '''
import pytest


@pytest.mark.skipif(True, reason="real datasets not found at /nowhere (set MEASURE_DATA_DIR)")
def test_needs_data():
    pass


def test_needs_ray():
    pytest.importorskip("no_such_ray_module", reason="the Ray executor needs the optional extra")


def test_not_applicable():
    pytest.skip("this machine has a GPU; the no-GPU message cannot appear")


def test_plain():
    pass
'''


def run(pytester, monkeypatch, ci: str | None, data: bool):
    pytester.makeconftest(ROOT_CONFTEST)
    pytester.makepyfile(test_skips=SKIPPING)
    data_dir = pytester.mkdir("data") if data else pytester.path / "missing"
    monkeypatch.setenv("MEASURE_DATA_DIR", str(data_dir))
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    return pytester.runpytest("-p", "no:cacheprovider")


def test_skips_are_allowed_outside_ci_and_counted_on_one_line(pytester, monkeypatch):
    result = run(pytester, monkeypatch, None, data=True)
    result.assert_outcomes(passed=1, skipped=3)
    (line,) = [line for line in result.outlines if line.startswith("skips: ")]
    assert line.startswith("skips: 3 (1 ")
    for reason in ("real datasets not found at /nowhere", "the Ray executor needs the optional extra",
                   "this machine has a GPU"):
        assert reason in line


def test_ci_without_the_datasets_keeps_the_skips(pytester, monkeypatch):
    run(pytester, monkeypatch, "true", data=False).assert_outcomes(passed=1, skipped=3)


def test_ci_with_the_datasets_fails_skips_for_missing_dependencies(pytester, monkeypatch):
    result = run(pytester, monkeypatch, "true", data=True)
    result.assert_outcomes(passed=1, skipped=1, failed=1, errors=1)  # skipif fails in setup: an error
    result.stdout.fnmatch_lines(["*CI=true with the datasets present*real datasets not found*"])
    result.stdout.fnmatch_lines(["skips: 1 (1 this machine has a GPU*"])
