"""measure.records.run_folder without a model: which folders a run may write into, reading the
saved settings back, which settings must agree on resume, and the lock (messages exact)."""

from __future__ import annotations

import fcntl
import json
import os
import re

import pytest

from measure.records import RUN_FILE, SAMPLES_FILE
from measure.records import run_folder as rf
from measure.settings import RunSettings


def saved_run(folder, **settings):
    folder.mkdir(exist_ok=True)
    (folder / RUN_FILE).write_text(json.dumps({"settings": {"model": "tiny:llama", "limit": 2, **settings}}))
    return folder


def test_new_empty_and_run_folders_are_accepted(tmp_path):
    rf.check_out_folder(tmp_path / "new", resume=False)
    (tmp_path / "empty").mkdir()
    rf.check_out_folder(tmp_path / "empty", resume=False)
    (tmp_path / "empty" / rf.LOCK_FILE).write_text("")  # a lock left behind is not content
    rf.check_out_folder(tmp_path / "empty", resume=False)
    rf.check_out_folder(saved_run(tmp_path / "run"), resume=False)
    assert rf.is_run_folder(tmp_path / "run") and not rf.is_run_folder(tmp_path / "empty")


def test_refusals_name_the_folder_and_what_to_do(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(rf.RunFolderError, match=rf"^--out {re.escape(str(tmp_path / 'file'))}: a file, not a folder$"):
        rf.check_out_folder(tmp_path / "file", resume=False)
    mine = tmp_path / "mine"
    mine.mkdir()
    for i in range(6):
        (mine / f"n{i}.txt").write_text("x")
    with pytest.raises(rf.RunFolderError, match=r"not empty \(n0.txt, n1.txt, n2.txt, n3.txt, n4.txt, \.\.\.\) and "
                                                r"holds no run of this tool .* pass --force to write into it$"):
        rf.check_out_folder(mine, resume=False)
    rf.check_out_folder(mine, resume=False, force=True)
    (mine / SAMPLES_FILE).write_text("")
    with pytest.raises(rf.RunFolderError, match=r"samples.jsonl already exists: pass --resume"):
        rf.check_out_folder(mine, resume=False, force=True)
    with pytest.raises(rf.RunFolderError, match=r"^--resume: .*new holds no run to resume; start it without --resume$"):
        rf.check_out_folder(tmp_path / "new", resume=True)
    with pytest.raises(rf.RunFolderError, match=r"has no run.json, so the settings its records were measured with"):
        rf.check_out_folder(mine, resume=True)
    rf.check_out_folder(saved_run(tmp_path / "run"), resume=True)


def test_saved_settings_are_read_back_typed_and_bad_files_named(tmp_path):
    run = saved_run(tmp_path / "run", points=["3", "0.5"], unknown_field=1)
    assert rf.saved_settings(run) == {"model": "tiny:llama", "limit": 2, "points": ["3", "0.5"]}
    (run / RUN_FILE).write_text('{"settings": ')
    corrupt = r"run.json is corrupt \(line 1: Expecting value\): not valid JSON; .* another --out$"
    with pytest.raises(rf.RunFolderError, match=corrupt):
        rf.saved_settings(run)
    (run / RUN_FILE).write_bytes(b'{"settings": "\xff"}')
    with pytest.raises(rf.RunFolderError, match=r"is corrupt \(not UTF-8 text\)"):
        rf.saved_settings(run)
    for text, message in (('{"settings": 3}', r"run.json has no 'settings' object; it cannot be resumed$"),
                          ("[1]", r"run.json: holds a JSON list, not an object; .* cannot be resumed")):
        (run / RUN_FILE).write_text(text)
        with pytest.raises(rf.RunFolderError, match=message):
            rf.saved_settings(run)
    with pytest.raises(rf.RunFolderError, match=r"^--resume: .*other has no run.json \(the settings of the run"):
        rf.saved_settings(tmp_path / "other")


def test_only_what_is_measured_must_agree_on_resume(tmp_path):
    saved = {"model": "tiny:llama", "limit": 2}
    assert rf.differing_settings(saved, {"model": "tiny:llama", "limit": 3, "out": "x", "resume": True,
                                         "executor": "ray", "workers": 4, "not_a_field": 1}) == ["limit"]
    assert rf.differing_settings(saved, {"seed": RunSettings().seed}) == []  # missing from run.json: the default
    assert rf.differing_settings(saved, {"seed": RunSettings().seed + 1, "dataset": "gsm8k"}) == ["dataset", "seed"]


def test_resume_settings_keep_the_saved_ones_and_refuse_other_values(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    whole = RunSettings(model="tiny:llama", limit=2, points=["3"]).as_dict()  # as a run saves them: every field
    (run / RUN_FILE).write_text(json.dumps({"settings": whole}))
    (run / SAMPLES_FILE).write_text("")
    settings, notes = rf.resume_settings(run, {"limit": 2, "workers": 3, "executor": "ray"})
    assert (settings.model, settings.limit, settings.points, settings.workers, settings.executor) == (
        "tiny:llama", 2, ["3"], 3, "ray")
    assert settings.resume is True and settings.out == str(run) and notes == []
    with pytest.raises(rf.RunFolderError, match=r"settings differ from the interrupted run in --limit 5 \(saved 2\); "
                                                r"resume with the saved settings"):
        rf.resume_settings(run, {"limit": 5})
    rf.check_resume_matches(run, RunSettings(**settings.as_dict()))
    with pytest.raises(rf.RunFolderError, match=r"settings differ from the interrupted run in limit, seed; "):
        rf.check_resume_matches(run, RunSettings(**{**settings.as_dict(), "limit": 5, "seed": 9}))


def test_the_lock_refuses_a_second_holder_naming_it_and_leaves_nothing_when_unused(tmp_path):
    out = tmp_path / "run"
    with rf.locked(out):
        text = (out / rf.LOCK_FILE).read_text()
        assert text.startswith(f"pid {os.getpid()}, started ")
        # another process's view: the lock is held
        with open(out / rf.LOCK_FILE) as other, pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_SH | fcntl.LOCK_NB)
        (out / "kept.txt").write_text("x")
    rf.check_not_locked(out)  # released
    assert (out / rf.LOCK_FILE).exists()  # the lock file stays once the folder holds something
    fresh = tmp_path / "fresh"
    with rf.locked(fresh):
        pass
    assert not fresh.exists()  # created for a run that wrote nothing: removed again


def test_a_held_lock_is_refused_with_the_holders_line(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "kept.txt").write_text("x")
    with open(out / rf.LOCK_FILE, "w") as holder:
        holder.write("pid 4242, started 2026-01-01 00:00:00\n")
        holder.flush()
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        message = r"in use by a running measurement \(pid 4242, started 2026-01-01 00:00:00\); wait for it"
        with pytest.raises(rf.RunFolderError, match=message):
            rf.check_not_locked(out)
        with pytest.raises(rf.RunFolderError, match=message), rf.locked(out):
            pass
    assert (out / "kept.txt").exists()
