"""Nothing of the user's is overwritten: --out refusal and --force, the run-folder lock, resuming
from just --out (settings from run.json), repeated points measured once, atomic outputs."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

from measure import cli
from measure.data import load_builtin
from measure.data.pair_files import write_pairs
from measure.records.run_folder import LOCK_FILE
from measure.records.store import read_store
from measure.settings import RunSettings, SettingsError, from_toml, merge_duplicates

TINY = ["--model", "tiny:llama", "--dataset", "builtin", "--limit", "2", "--group-size", "1", "--max-new-tokens", "10",
        "--conditions", "injection,noise", "--no-semantic", "--quiet"]


def run(*argv: str) -> tuple[int, str]:
    logging.root.handlers = []  # main() binds logging to the stream of the moment; see test_user_errors
    import io
    from contextlib import redirect_stderr

    err = io.StringIO()
    with redirect_stderr(err):
        try:
            code = cli.main(list(argv))
        except SystemExit as exit:
            code = exit.code
    return code, err.getvalue()


def keys(out: Path) -> list[str]:
    return [record["key"] for record in read_store(out / "samples.jsonl")[0]]


@pytest.fixture(scope="module")
def forced(tmp_path_factory) -> Path:
    """A run written with --force into a folder of the user's, with the point 3 given twice."""
    out = tmp_path_factory.mktemp("user") / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("the user's notes")
    code, err = run("run", *TINY, "--points", "3,3", "--out", str(out), "--force")
    assert code == 0, err
    assert "injection point '3' repeats '3' (t3): measured once" in err
    return out


def test_a_folder_of_the_users_is_refused_and_left_as_it_was(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "metrics.json").write_text("the user's own metrics")
    code, err = run("run", *TINY, "--points", "3", "--out", str(out))
    assert code == 2 and "pass --force" in err and "metrics.json" in err
    assert (out / "metrics.json").read_text() == "the user's own metrics"
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]  # no lock file left either


def test_force_writes_a_run_beside_the_users_files_and_repeated_points_are_measured_once(forced):
    assert (forced / "notes.txt").read_text() == "the user's notes"
    found = keys(forced)
    assert len(found) == len(set(found)) == 2 * 2  # 2 problems x (injection, noise), once each at t3
    assert {key.split("/")[-1] for key in found} == {"t3"}
    saved = json.loads((forced / "run.json").read_text())["settings"]
    assert saved["points"] == ["3"]


def test_resume_with_just_out_continues_with_the_saved_settings(forced, tmp_path):
    import shutil

    out = tmp_path / "resumed"
    shutil.copytree(forced, out)
    lines = (out / "samples.jsonl").read_text().splitlines(keepends=True)
    (out / "samples.jsonl").write_text("".join(lines[:3]))  # as if killed after three records
    code, err = run("run", "--out", str(out), "--resume", "--quiet")
    assert code == 0, err
    assert keys(out)[:3] == keys(forced)[:3] and sorted(keys(out)) == sorted(keys(forced))
    whole = {r["key"]: r for r in read_store(forced / "samples.jsonl")[0]}
    for record in read_store(out / "samples.jsonl")[0]:  # the same settings, so the same tokens
        assert record["tokens"] == whole[record["key"]]["tokens"], record["key"]


def test_resume_flags_must_agree_with_the_saved_settings(forced):
    before = (forced / "samples.jsonl").read_text()
    code, err = run("run", "--out", str(forced), "--resume", "--max-new-tokens", "12")
    assert code == 2 and "--max-new-tokens 12 (saved 10)" in err
    code, err = run("run", "--out", str(forced), "--resume", "--max-new-tokens", "10", "--points", "3,3", "--quiet")
    assert code == 0, err  # agreeing flags (a repeat merged) are fine; nothing is left to measure
    assert (forced / "samples.jsonl").read_text() == before


def test_resume_without_run_json_is_refused(forced, tmp_path):
    import shutil

    out = tmp_path / "lost"
    shutil.copytree(forced, out)
    (out / "run.json").unlink()
    before = (out / "samples.jsonl").read_text()
    code, err = run("run", *TINY, "--points", "3", "--out", str(out), "--resume")
    assert code == 2 and "has no run.json" in err
    assert (out / "samples.jsonl").read_text() == before  # not relabelled with new settings


HOLD = """
import sys, time
from pathlib import Path
from measure.records.run_folder import locked
with locked(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_folder_in_use_is_refused_naming_the_process(forced):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(forced)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for extra in ([], ["--resume"]):
            code, err = run("run", *TINY, "--points", "3", "--out", str(forced), *extra)
            assert code == 2, err
            assert f"is in use by a running measurement (pid {holder.pid}" in err
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    code, err = run("run", "--out", str(forced), "--resume", "--quiet")  # the kernel released the lock
    assert code == 0, err
    assert (forced / LOCK_FILE).exists()


def test_toml_text_for_a_list_is_one_comma_list_and_types_are_kept(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[run]\nconditions = "injection"\npoints = [8, 0.5]\nattention = false\ntemperature = 0\n')
    values = from_toml(path)
    assert values == {"conditions": ["injection"], "points": ["8", "0.5"], "attention": False, "temperature": 0.0}
    assert isinstance(values["temperature"], float)


def test_duplicates_are_merged_once_with_one_note_each():
    settings = RunSettings(points=["4", "04", "0.5", "4"], conditions=["injection", "flush", "injection"])
    notes = merge_duplicates(settings)
    assert settings.points == ["4", "0.5"] and settings.conditions == ["injection", "flush"]
    assert len(notes) == 3 and "'04' repeats '4' (t4)" in notes[0]
    with pytest.raises(SettingsError, match="'inf' is not a finite number"):
        merge_duplicates(RunSettings(points=["inf"]))


def test_a_failed_pairs_write_keeps_the_existing_file(tmp_path):
    out = tmp_path / "pairs.jsonl"
    out.write_text("the user's pairs\n")

    def failing():
        yield load_builtin()[0]
        raise RuntimeError("generator failed half way")

    with pytest.raises(RuntimeError):
        write_pairs(failing(), out)
    assert out.read_text() == "the user's pairs\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.jsonl"]  # no temporary file left
    assert write_pairs(load_builtin()[:2], out) == 2 and len(out.read_text().splitlines()) == 2
