"""`measure run`: problems -> engine -> metrics -> records -> reports, resumable.

Records are appended and flushed as each problem finishes, so an interrupted run keeps
everything it measured; rerun with ``resume`` and only the missing records are measured. The
engine is deterministic (greedy, or sampling seeded per run), so a resumed run's records equal an
uninterrupted run's.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from tqdm import tqdm

from measure.data import load_pairs
from measure.data.errors import DataError
from measure.engine import Engine, ProblemResult
from measure.model import load_model
from measure.provenance import now, provenance
from measure.records import RUN_FILE, SAMPLES_FILE, SKIPPED_FILE
from measure.records.samples import problem_records, record_key, skipped_key
from measure.records.store import RecordStore, read_store
from measure.results import REFERENCE_RUNS
from measure.settings import RunSettings, SettingsError, validate

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
    from measure.points import parse_points

    return [point.label for point in parse_points(settings.points)]


def skipped_records(result: ProblemResult, settings: RunSettings) -> list[dict]:
    """The lines of ``skipped.jsonl``: one per skipped point, with the record keys it stands for
    and its own ``key`` (``<problem>/<point>``), which the record store requires of every line."""
    return [{"key": skipped_key(result.problem_id, label), "problem_id": result.problem_id, "point": label, "reason": reason,
             "keys": [record_key(result.problem_id, c, label) for c in settings.conditions
                      if c not in REFERENCE_RUNS]}
            for label, reason in result.skipped]


def prepare_out(settings: RunSettings) -> Path:
    out = Path(settings.out) if settings.out else default_out()
    samples = out / SAMPLES_FILE
    if samples.exists() and not settings.resume:
        raise SettingsError(f"{samples} already exists: pass --resume to complete that run, or choose another --out")
    if settings.resume and (out / RUN_FILE).exists():
        saved = json.loads((out / RUN_FILE).read_text())["settings"]
        differing = {k for k, v in settings.as_dict().items() if k not in ("resume", "out") and saved.get(k) != v}
        if differing:
            raise SettingsError(f"--resume: settings differ from the interrupted run in {', '.join(sorted(differing))}; "
                                f"resume with the same settings (saved in {out / RUN_FILE})")
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_measurement(settings: RunSettings, show_progress: bool = True) -> Path:
    validate(settings)
    try:
        problems = load_pairs(settings.dataset, settings.data_dir, limit=settings.limit,
                              variation_types=settings.variation_types, seed=settings.seed)
    except DataError as error:
        raise SettingsError(str(error)) from None
    if not problems:
        raise SettingsError(f"dataset {settings.dataset!r} gave no problems with these filters")
    out = prepare_out(settings)
    store = RecordStore(out / SAMPLES_FILE)
    repaired = store.repair()
    for warning in repaired:
        log.warning(warning)
    done = {record["key"] for record in read_store(out / SAMPLES_FILE)[0]}
    skipped_store = RecordStore(out / SKIPPED_FILE)
    for warning in skipped_store.repair():  # a torn last line, so appends start on a fresh line
        repaired.append(warning)
        log.warning(warning)
    skipped = read_store(out / SKIPPED_FILE)[0] if settings.resume else []
    skipped_keys = {key for entry in skipped for key in entry["keys"]}

    loaded = load_model(settings.model, settings.device, settings.dtype, settings.trust_remote_code)
    engine = Engine(loaded, settings.engine_config())
    info = provenance(settings.as_dict(), loaded.info())
    info["settings"]["out"] = str(out)
    (out / RUN_FILE).write_text(json.dumps(info, indent=2))

    # Groups are fixed chunks of the problem list, not of what is missing: a resumed group then
    # batches exactly the rows it batched before, so its numbers are bit-for-bit the same.
    groups = []
    for start in range(0, len(problems), settings.group_size):
        group = [(p, [k for k in expected_keys(p.id, settings) if k not in done and k not in skipped_keys])
                 for p in problems[start:start + settings.group_size]]
        if any(missing for _, missing in group):
            groups.append(group)
    total = sum(len(missing) for group in groups for _, missing in group)
    with tqdm(total=total, unit="record", desc="measuring", disable=not show_progress, dynamic_ncols=True) as bar:
        for group in groups:
            bar.set_postfix_str(", ".join(problem.id for problem, _ in group))
            results = engine.run_problems([problem for problem, _ in group])
            for (problem, missing), result in zip(group, results):
                for entry in skipped_records(result, settings):
                    if any(key in missing for key in entry["keys"]):
                        skipped_store.append(entry)
                        skipped.append(entry)
                        bar.update(len([k for k in entry["keys"] if k in missing]))
                for record in problem_records(result, problem, loaded.tokenizer, settings.semantic):
                    if record["key"] in missing:
                        store.append(record)
                        bar.update(1)

    from measure.report.summary import write_reports

    records, warnings = read_store(out / SAMPLES_FILE)
    info["finished"] = now()
    info["warnings"] = repaired + warnings
    (out / RUN_FILE).write_text(json.dumps(info, indent=2))
    write_reports(out, records, info, skipped, alpha=settings.alpha, seed=settings.seed)
    return out
