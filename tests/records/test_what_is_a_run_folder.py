"""One answer to "is this a run folder?" (measure.records.run_folder.is_run_folder), given alike by
``measure run`` (may it write into --out?), the pytest plugin (--measure-out), the reports
(``measure report``, ``measure compare-models``) and the live page's folder list."""

from __future__ import annotations

from pathlib import Path

import pytest

from measure.pytest_plugin import _check_out
from measure.records import RUN_MARKERS
from measure.records.run_folder import RunFolderError, check_out_folder, is_run_folder
from measure.report.compare_models import CompareModelsError, load_run
from measure.report.summary import render_from_dir
from measure.serve.watch import RunFolders

#: Folder name -> files in it ("name/" is a subfolder); every marker alone, and a folder of the user's.
LAYOUTS = {
    "run-json": {"run.json": "{}"},
    "samples": {"samples.jsonl": ""},
    "workers": {"workers/": None},
    "users": {"notes.txt": "mine", "data/": None},
    "users-metrics": {"metrics.json": "{}", "report.html": ""},
    "users-json": {"results.json": "{}"},
}


def make(root: Path, name: str) -> Path:
    folder = root / "runs" / name
    folder.mkdir(parents=True)
    for entry, text in LAYOUTS[name].items():
        if entry.endswith("/"):
            (folder / entry).mkdir()
        else:
            (folder / entry).write_text(text, encoding="utf-8")
    return folder


def accepts(call, folder: Path, refusal: type[Exception], words: str | None) -> bool:
    """Whether ``call(folder)`` takes the folder as a run folder: it does not raise ``refusal``
    with ``words`` in its message (any message when ``words`` is None)."""
    try:
        call(folder)
    except refusal as error:
        return words is not None and words not in str(error)
    return True


# Each asks measure.records whether the folder is a run; samples.jsonl without --resume is a run
# that `measure run` refuses for another reason, and the reports need records to render.
def runner_accepts(folder: Path) -> bool:
    return accepts(lambda path: check_out_folder(path, resume=False), folder, RunFolderError, "holds no run")


def plugin_accepts(folder: Path) -> bool:
    return accepts(_check_out, folder, pytest.UsageError, None)


def report_accepts(folder: Path) -> bool:
    return accepts(render_from_dir, folder, FileNotFoundError, "not a run folder")


def compare_models_accepts(folder: Path) -> bool:
    return accepts(load_run, folder, CompareModelsError, "not a run folder")


def test_every_marker_is_one_of_the_layouts():
    assert {next(iter(files)).rstrip("/") for name, files in LAYOUTS.items() if not name.startswith("users")} \
        == set(RUN_MARKERS)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_the_runner_the_plugin_the_reports_and_the_live_page_agree(tmp_path, name):
    folder = make(tmp_path, name)
    expected = not name.startswith("users")
    assert is_run_folder(folder) is expected
    listed = {entry["id"] for entry in RunFolders(tmp_path / "runs").listing()}
    assert {
        "runner": runner_accepts(folder), "plugin": plugin_accepts(folder), "report": report_accepts(folder),
        "compare-models": compare_models_accepts(folder), "live page": name in listed,
    } == dict.fromkeys(("runner", "plugin", "report", "compare-models", "live page"), expected)


def test_an_empty_folder_is_no_run_but_a_run_may_start_in_it(tmp_path):
    folder = tmp_path / "new"
    folder.mkdir()
    assert not is_run_folder(folder) and not is_run_folder(tmp_path / "missing")
    assert runner_accepts(folder) and plugin_accepts(folder)
    assert not report_accepts(folder) and not compare_models_accepts(folder)
    assert RunFolders(tmp_path).listing() == []
