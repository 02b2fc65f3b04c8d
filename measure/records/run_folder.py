"""The run folder: what one is, its ``run.json``, its lock, what may be written into it, resuming it.

This module is the run folder's one owner: ``measure run``, the pytest plugin, the reports and the
live page ask it whether a folder is a run folder (:func:`is_run_folder`) and read and write
``run.json`` through it (:func:`read_run_info`, :func:`write_run_info`, atomically).

Rules, checked before any model is loaded:

- ``--out`` may be a new or empty folder, or a run folder of this tool (one holding ``run.json``,
  ``samples.jsonl`` or a pytest session's ``workers/``). A non-empty folder that
  is not a run is the user's and is refused, since the run would replace its ``metrics.json`` and
  ``report.html``; ``--force`` allows it.
- A run folder that holds records is continued only with ``--resume``, and ``--resume`` needs
  the folder's ``run.json``: without the settings the records were measured with, new records
  could not be told apart from old ones.
- While a run writes into a folder, the folder is locked (an exclusive ``flock`` on
  ``.measure.lock``, which the kernel releases when the process ends, however it ends), so a
  second ``measure run`` on it is refused with the holder's process id.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from measure.records import METRICS_FILE, RUN_FILE, RUN_MARKERS, SAMPLES_FILE
from measure.records.atomic import write_json
from measure.settings import EXECUTION_FIELDS, FIELDS, RunSettings, SettingsError, coerce, merge_duplicates

LOCK_FILE = ".measure.lock"
#: Settings that say where and how to run, not what is measured: they may differ on resume.
NOT_COMPARED = ("resume", "out", *EXECUTION_FIELDS)


class RunFolderError(SettingsError):
    """The output folder cannot be used as asked; the message says why and what to do."""


def is_run_folder(run_folder: str | Path) -> bool:
    """Whether ``run_folder`` is a folder this tool wrote: it holds any of :data:`RUN_MARKERS`."""
    run_folder = Path(run_folder)
    return run_folder.is_dir() and any((run_folder / name).exists() for name in RUN_MARKERS)


def read_json_object(path: Path) -> dict | None:
    """A JSON object saved in a run folder; None when the file does not exist; RunFileError
    (a RunFolderError) naming the file and line when it is not UTF-8 JSON or not an object."""
    try:
        return _read_json_object(Path(path))
    except FileNotFoundError:
        return None


def read_run_info(run_folder: str | Path) -> dict | None:
    """The run's ``run.json`` (provenance, settings, and when it finished); None when it has none."""
    return read_json_object(Path(run_folder) / RUN_FILE)


def write_run_info(run_folder: str | Path, info: dict) -> None:
    """Write the run's ``run.json`` atomically (what JSON cannot hold is saved as text)."""
    write_json(Path(run_folder) / RUN_FILE, info, default=str)


def run_finished(run_folder: str | Path) -> bool:
    """Whether the run's ``run.json`` says it finished (False when it is missing or unreadable)."""
    try:
        info = read_run_info(run_folder)
    except (OSError, RunFolderError):
        return False
    return bool(info and info.get("finished"))


class RunFileError(RunFolderError):
    """A run folder's ``run.json`` or ``metrics.json`` is there but cannot be read as a JSON
    object; the message names the file and what is wrong."""


_JSON_TYPES = {list: "list", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


def _read_json_object(path: Path) -> dict:
    """The JSON object in ``path``; FileNotFoundError when it is absent, RunFileError otherwise."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as error:
        raise RunFileError(f"{path}: cannot be read ({error.strerror or error})") from None
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise RunFileError(f"{path} is corrupt (not UTF-8 text)") from None
    except json.JSONDecodeError as error:
        raise RunFileError(f"{path} is corrupt (line {error.lineno}: {error.msg}): not valid JSON") from None
    except RecursionError:
        raise RunFileError(f"{path}: JSON nested too deeply to read") from None
    if not isinstance(value, dict):
        raise RunFileError(f"{path}: holds a JSON {_JSON_TYPES.get(type(value), 'value')}, not an object")
    return value


def read_run_json(folder: Path) -> dict:
    """The run's ``run.json`` (provenance, settings, ``finished``) as a dict."""
    return _read_json_object(Path(folder) / RUN_FILE)


def read_metrics_json(folder: Path) -> dict:
    """The run's ``metrics.json`` (:mod:`measure.report.summary`) as a dict."""
    return _read_json_object(Path(folder) / METRICS_FILE)


def _contents(out: Path) -> list[str]:
    return sorted(entry.name for entry in out.iterdir() if entry.name != LOCK_FILE)


def check_out_folder(out: Path, resume: bool, force: bool = False) -> None:
    """Refuse an ``--out`` that the run must not write into (see the module docstring)."""
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out}: a file, not a folder")
    check_not_locked(out)
    contents = _contents(out) if out.is_dir() else []
    if resume:
        if not contents:
            raise RunFolderError(f"--resume: {out} holds no run to resume; start it without --resume")
        if not (out / RUN_FILE).exists():
            raise RunFolderError(
                f"--resume: {out} has no {RUN_FILE}, so the settings its records were measured with are unknown "
                "and new records could not be matched to them; start a new run in another --out")
        return
    if (out / SAMPLES_FILE).exists():
        raise RunFolderError(f"{out / SAMPLES_FILE} already exists: pass --resume to complete that run, "
                             "or choose another --out")
    if contents and not is_run_folder(out) and not force:
        shown = ", ".join(contents[:5]) + (", ..." if len(contents) > 5 else "")
        raise RunFolderError(
            f"--out {out}: the folder is not empty ({shown}) and holds no run of this tool (no {RUN_FILE} or "
            f"{SAMPLES_FILE}); a run writes samples.jsonl, run.json, metrics.json and report.html there. "
            "Choose another --out, or pass --force to write into it")


def saved_settings(out: Path) -> dict:
    """The settings stored in ``out/run.json``, each checked against its type."""
    path = out / RUN_FILE
    try:
        info = read_run_info(out)
    except RunFolderError as error:
        raise RunFolderError(f"--resume: {error}; the run's settings cannot be read back, "
                             "so it cannot be resumed: start a new run in another --out") from None
    if info is None:
        raise RunFolderError(f"--resume: {out} has no {RUN_FILE} (the settings of the run to resume)")
    settings = info.get("settings")
    if not isinstance(settings, dict):
        raise RunFolderError(f"--resume: {path} has no 'settings' object; it cannot be resumed")
    return {name: coerce(name, value, f"{path}: settings") for name, value in settings.items() if name in FIELDS}


def differing_settings(saved: dict, settings: dict) -> list[str]:
    return sorted(name for name, value in settings.items()
                  if name not in NOT_COMPARED and name in FIELDS and saved.get(name, FIELDS[name].default) != value)


def resume_settings(out: str | Path, given: dict) -> tuple[RunSettings, list[str]]:
    """The settings to continue the run in ``out`` with: those stored in its run.json; settings
    ``given`` (flags, TOML) must agree with them. Returns the settings and notes for the user."""
    out = Path(out)
    check_out_folder(out, resume=True)
    saved = saved_settings(out)
    # Compare what the user typed, merged and typed as a run would store it.
    asked = RunSettings(**{**saved, **given})
    notes = merge_duplicates(asked)
    asked_values = asked.as_dict()
    differing = differing_settings(saved, {name: asked_values[name] for name in given})
    if differing:
        shown = "; ".join(f"--{name.replace('_', '-')} {asked_values[name]!r} (saved {saved.get(name)!r})"
                          for name in differing)
        raise RunFolderError(f"--resume: settings differ from the interrupted run in {shown}; resume with "
                             f"the saved settings (drop these flags; they are in {out / RUN_FILE})")
    # Where to measure may change (another executor, more workers); what to measure may not.
    execution = {name: value for name, value in given.items() if name in EXECUTION_FIELDS}
    return RunSettings(**{**saved, **execution, "resume": True, "out": str(out)}), notes


def check_resume_matches(out: Path, settings: RunSettings) -> None:
    """A resumed run's full settings (built in code, defaults included) equal the saved ones."""
    saved = saved_settings(out)
    differing = differing_settings(saved, settings.as_dict())
    if differing:
        raise RunFolderError(f"--resume: settings differ from the interrupted run in {', '.join(differing)}; "
                             f"resume with the same settings (saved in {out / RUN_FILE})")


def _in_use(out: Path, holder: str) -> RunFolderError:
    return RunFolderError(f"--out {out} is in use by a running measurement ({holder or 'another process'}); "
                          "wait for it to finish or stop it, or choose another --out")


def check_not_locked(out: Path) -> None:
    """Refuse a folder another process holds, without creating anything in it."""
    path = out / LOCK_FILE
    if not path.is_file():
        return
    with open(path, encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _in_use(out, handle.read().strip()) from None
        fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def locked(out: Path) -> Iterator[None]:
    """Hold the folder's lock for the block; RunFolderError when another process holds it."""
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_FILE
    try:
        with _held(out, path):
            yield
    finally:
        if created and _contents(out) == [] and path.exists():  # refused before writing: leave nothing
            path.unlink()
            out.rmdir()


@contextlib.contextmanager
def _held(out: Path, path: Path) -> Iterator[None]:
    with open(path, "a+", encoding="utf-8") as handle:  # closing releases the lock; the file stays
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise _in_use(out, handle.read().strip()) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        yield
