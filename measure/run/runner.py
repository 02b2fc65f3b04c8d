"""`measure run`: problems -> engine -> metrics -> records -> reports, resumable.

Records are appended and flushed as each problem finishes, so an interrupted run keeps
everything it measured; rerun with ``resume`` and only the missing records are measured. The
engine is deterministic (greedy, or sampling seeded per run), so a resumed run's records equal an
uninterrupted run's.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from measure.data import load_pairs
from measure.data.errors import DataError
from measure.engine.engine import Engine
from measure.engine.results import REFERENCE_RUNS
from measure.model.load import load_model
from measure.records import SAMPLES_FILE, SKIPPED_FILE
from measure.records.columnar import remove_partial_writes, write_group_arrays
from measure.records.run_folder import check_out_folder, check_resume_matches, locked, write_run_info
from measure.records.samples import record_key
from measure.records.store import RecordStore, read_store
from measure.report.inputs import read_report_records
from measure.report.summary import write_reports
from measure.run.executors import GroupsFailed, make_executor
from measure.run.preflight import validate
from measure.run.provenance import now, provenance
from measure.settings import RunSettings, SettingsError, merge_duplicates

log = logging.getLogger(__name__)


def default_out() -> Path:
    return Path("reports") / time.strftime("run-%Y%m%d-%H%M%S")


def expected_keys(problem_id: str, settings: RunSettings) -> list[str]:
    keys = []
    for condition in settings.conditions:
        if condition in REFERENCE_RUNS:
            keys.append(record_key(problem_id, condition, "-"))
        else:
            keys.extend(record_key(problem_id, condition, point) for point in _labels(settings))
    return keys


def _labels(settings: RunSettings) -> list[str]:
    return [point.label for point in settings.injection_points()]


def prepare_out(settings: RunSettings, force: bool = False) -> Path:
    """The output folder, checked (measure.records.run_folder): not another process's, not a folder of
    the user's unless ``force``, records only with ``resume``, and a resume with the saved settings."""
    out = Path(settings.out) if settings.out else default_out()
    check_out_folder(out, settings.resume, force)
    if settings.resume:
        check_resume_matches(out, settings)
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_measurement(settings: RunSettings, show_progress: bool = True, force: bool = False) -> Path:
    """Measure ``settings`` into its folder; ``force`` lets it write into a non-empty folder that
    holds no run. Everything a user can get wrong is checked before the model loads, except the
    prompt lengths, which are checked against the model's context before decoding starts."""
    for note in merge_duplicates(settings):
        log.warning(note)
    validate(settings)
    try:
        problems = load_pairs(settings.dataset, settings.data_dir, limit=settings.limit,
                              variation_types=settings.variation_types, seed=settings.seed)
    except DataError as error:
        raise SettingsError(str(error)) from None
    if not problems:
        raise SettingsError(f"dataset {settings.dataset!r} gave no problems with these filters")
    out = prepare_out(settings, force)
    with locked(out):  # held until the reports are written; a second run on `out` is refused
        return _measure(settings, problems, out, show_progress)


def _measure(settings: RunSettings, problems: list, out: Path, show_progress: bool) -> Path:
    store = RecordStore(out / SAMPLES_FILE)
    repaired = store.repair()
    for warning in repaired:
        log.warning(warning)
    remove_partial_writes(out)  # a columnar file a kill cut short; its group is measured again
    done = {record.key for record in read_store(out / SAMPLES_FILE, typed=True)[0]}  # validated: a foreign line is an error
    skipped_store = RecordStore(out / SKIPPED_FILE)
    for warning in skipped_store.repair():  # a torn last line, so appends start on a fresh line
        repaired.append(warning)
        log.warning(warning)
    skipped = read_store(out / SKIPPED_FILE)[0] if settings.resume else []
    skipped_keys = {key for entry in skipped for key in entry["keys"]}

    # Groups are fixed chunks of the problem list, not of what is missing: a resumed group then
    # batches exactly the rows it batched before, so its numbers are bit-for-bit the same. Every
    # executor measures these same groups, so this holds for a run resumed with another executor.
    groups = []
    for start in range(0, len(problems), settings.group_size):
        group = [(p, [k for k in expected_keys(p.id, settings) if k not in done and k not in skipped_keys])
                 for p in problems[start:start + settings.group_size]]
        if any(missing for _, missing in group):
            groups.append(group)
    total = sum(len(missing) for group in groups for _, missing in group)
    failures = []
    # The executor measures the groups (in this process, or on Ray actors) and yields each one's
    # records as it completes; only this driver writes them, so the store is the same either way.
    with make_executor(settings, load_model, Engine) as executor:
        model = executor.start(len(groups))  # loads the model, once per worker
        executor.preflight(problems)
        info = provenance(settings.as_dict(), model)
        info["settings"]["out"] = str(out)
        info["executor"] = executor.describe()
        write_run_info(out, info)
        with tqdm(total=total, unit="record", desc="measuring", disable=not show_progress, dynamic_ncols=True) as bar:
            for outcome in executor.run([[problem for problem, _ in group] for group in groups]):
                group = groups[outcome.index]
                bar.set_postfix_str(f"{', '.join(problem.id for problem, _ in group)} on {outcome.worker or 'no worker'}")
                if outcome.error is not None:
                    failures.append({"problems": [problem.id for problem, _ in group], "error": outcome.error,
                                     "attempts": outcome.attempts})
                    continue
                missing = {key for _, keys in group for key in keys}
                for entry in outcome.skipped:
                    if any(key in missing for key in entry["keys"]):
                        skipped_store.append(entry)
                        skipped.append(entry)
                        bar.update(len([k for k in entry["keys"] if k in missing]))
                # The group's arrays are on disk, complete, before any of its records names them.
                for record in write_group_arrays(out, [r for r in outcome.records if r["key"] in missing]):
                    store.append(record)
                    bar.update(1)
        info["executor"] = executor.describe()  # now with the workers that replaced dead ones

    records, warnings = read_report_records(out / SAMPLES_FILE)
    info["finished"] = now()
    info["warnings"] = repaired + warnings
    info["executor"]["records_by_worker"] = dict(Counter(record.worker or "unknown" for record in records))
    if failures:
        info["failed_groups"] = failures
    write_run_info(out, info)
    write_reports(out, records, info, skipped, alpha=settings.alpha, seed=settings.seed)
    if failures:
        raise GroupsFailed(out, failures)
    return out
