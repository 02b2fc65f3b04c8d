"""``metrics.json``: the machine-readable summary of one run, and the entry points that write it.

:func:`build_metrics` turns sample records (see :mod:`measure.records.samples`) into one dict:

- ``provenance``: passed in by the caller (model, dataset, versions, git hash, settings), kept as is;
- ``settings``: how the statistics below were computed (confidence, resamples, test method);
- ``counts``: records (after keeping the last record per key), replaced duplicates, problems,
  records per condition x point, problems per variation type, skipped points;
- ``skipped``: the injection points that produced no runs, with the reason (from the caller);
- ``checks``: per invariant check (``record["checks"]``), the largest value over the records and
  the key of the record that holds it, so a reader sees the worst case at a glance;
- ``aggregate``: :func:`measure.analysis.stats.aggregate` rows, one per condition x variation_type x point
  x metric (mean with bootstrap CI, Kaplan-Meier median for censored latencies, rates);
  ``aggregate_pooled``: the same per condition x point, variation types pooled;
- ``calibration``: the control-calibrated latency events (:mod:`measure.analysis.calibrated`):
  thresholds, windows, the control runs they rest on, held-out false-event rates, sensitivity
  beside the positive control (``positive_control``: flush) and the runs with no observable
  difference; ``calibration["lead"]``: the lead event (chosen per fold on the fitting fold's
  flush runs), its rule and its held-out rates; the calibrated latencies themselves are columns
  of ``aggregate`` like every other metric;
- ``outcomes``: oracle and ignore accuracy and outcome rates over the problems solved
  uninterrupted, or why they are uninformative (:mod:`measure.analysis.outcomes`);
- ``paired``: :func:`measure.analysis.stats.paired_comparisons` for each (condition, baseline) of
  :data:`PAIRED_COMPARISONS` and each metric of :data:`PAIRED_METRICS`, per variation type x
  point; ``paired_pooled``: the same per point, variation types pooled (Holm / BH corrections
  over all rows of one metric in one table);
- ``aggregate_changed`` and ``paired_changed``: the same per condition x point over the changed
  problems only (identical-problem controls left out), for :data:`FINDINGS_METRICS`: what the
  findings cite;
- ``survival``: per point and condition (changed problems), the lead event's cumulative incidence
  by 4, 8, 16 and 32 tokens, restricted mean time to it up to the horizon with a bootstrap CI
  resampled by problem, and its Kaplan-Meier median (:func:`measure.analysis.lead.lead_survival`);
- ``paired_events``: exact McNemar tests of the lead event's indicators, injection vs noise and
  injection vs flush per point, Holm-adjusted over the rows (:func:`measure.analysis.lead.paired_event_tests`);
- ``strategies``: per injection strategy with several updates (records with a ``schedule``), the
  updates delivered, curves aligned at each update, gaps and calibrated latencies from the first
  and the last update (:mod:`measure.report.strategies`); empty when the run has none;
- ``by_position``: with three or more numeric injection points, per condition and point the outcome
  shares, lead-event rate and restricted mean latency, adaptation gap, and trend tests across
  points clustered by problem; ``notes``: outcomes and events split by the notes flag
  (:mod:`measure.analysis.position`);
- ``findings``: what the run found, in sentences (:mod:`measure.report.findings`);
- ``warnings``: anything the reader should know (e.g. a torn last line dropped from the store).

Everything is JSON-safe: NaN and infinities become null, and the file is written with
``allow_nan=False`` so a stray NaN fails loudly instead of producing invalid JSON.

:func:`write_reports` writes ``metrics.json`` and ``report.html``; :func:`render_from_dir`
re-renders both from ``samples.jsonl`` and the provenance saved earlier (``run.json`` when present,
else the previous ``metrics.json``).
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pandas as pd

from measure.analysis import stats
from measure.analysis.calibrated import calibrated_records
from measure.analysis.calibration import DEFAULT_ALPHA
from measure.analysis.lead import lead_survival, paired_event_tests
from measure.analysis.outcomes import outcome_summary
from measure.analysis.position import notes_split, position_section
from measure.records import (
    METRICS_FILE,
    REPORT_FILE,
    RUN_FILE,
    RUN_MARKERS,
    SAMPLES_FILE,
    SKIPPED_FILE,
)
from measure.records.atomic import write_json
from measure.records.record import Record, as_records
from measure.records.run_folder import RunFolderError, is_run_folder, read_json_object
from measure.records.store import StoreError, latest_by_key, read_store
from measure.report.findings import build_findings
from measure.report.inputs import read_report_records
from measure.report.strategies import strategies_section

METRICS_SCHEMA = "measure.metrics/1"

#: The paired comparisons of a run, (condition, baseline), on the same problems: the seed's
#: injection vs oracle (B from the start), injection vs the other ways to take a change in
#: (flush, partial), and every condition vs the content-free noise control.
PAIRED_COMPARISONS = (
    ("injection", "oracle"), ("injection", "flush"), ("injection", "partial"),
    ("injection", "noise"), ("flush", "noise"), ("partial", "noise"), ("repeat", "noise"),
)
#: Metrics compared pairwise. Holm and BH corrections run over every comparison x stratum of
#: one metric (one family per metric and table).
PAIRED_METRICS = ("adaptation_gap", "adaptation_latency", "detection_latency", "kl_matched_short")
#: Metrics aggregated over the changed problems only (``aggregate_changed``), for the findings.
FINDINGS_METRICS = ("adaptation_latency", "detection_latency", "adaptation_latency_kl", "cusum_latency",
                    "cusum_latency_kl", "cumulative_llr_latency", "lead_latency", "lead_fired", "lead_observable",
                    "observability", "adaptation_gap")
#: ``scipy.stats.wilcoxon`` method for the paired tests. "auto" runs an exact permutation test
#: for n <= 13 with ties (about a second per test on a slow CPU; a report holds hundreds of
#: tests), so the report uses the normal approximation; pass ``wilcoxon_method="auto"`` for
#: exact p-values on small tables.
DEFAULT_WILCOXON = "asymptotic"


def records_frame(records: list[Record]) -> pd.DataFrame:
    """One row per record: its flat ``metrics`` row, identifiers taken from the record itself."""
    # Built column by column: a list of per-record row dicts held every record's metrics twice
    # at once (about 8 KB a record), the largest transient of a report on a study-sized run.
    identifiers = {"problem_id": [r.problem_id for r in records], "condition": [r.condition for r in records],
                   "point": [r.point for r in records], "variation_type": [r.variation_type for r in records]}
    metrics = [record.metrics for record in records]
    names = list(dict.fromkeys([*(name for row in metrics for name in row), *identifiers]))  # the rows' order
    columns = {name: identifiers[name] if name in identifiers else [row.get(name) for row in metrics]
               for name in names}
    df = pd.DataFrame(columns) if records else pd.DataFrame()
    for key in ("problem_id", "condition", "point", "variation_type"):
        if key not in df:
            df[key] = None
    # Rows in a fixed order, not the file's: records arrive in completion order (another worker,
    # a resumed group), and bootstrap resamples pick rows by position.
    return df.sort_values(["problem_id", "condition", "point"], kind="mergesort", ignore_index=True) if len(df) else df


def check_maxima(records: list[Record]) -> dict[str, dict]:
    """``{check: {max, key, n, n_missing}}`` over every record's ``checks``."""
    out: dict[str, dict] = {}
    for record in records:
        for name, value in record.checks.items():
            entry = out.setdefault(name, {"max": None, "key": None, "n": 0, "n_missing": 0})
            if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
                entry["n_missing"] += 1
                continue
            entry["n"] += 1
            if entry["max"] is None or value > entry["max"]:
                entry["max"], entry["key"] = float(value), record.key
    return dict(sorted(out.items()))


def _counts(raw: int, records: list[Record], skipped: list[dict]) -> dict:
    per_cp = Counter(f"{r.condition}/{r.point}" for r in records)
    problems: dict[str, object] = {}
    for r in records:
        problems.setdefault(r.problem_id, r.variation_type)
    per_vt = Counter("null" if vt is None else str(vt) for vt in problems.values())
    return {
        "records": len(records),
        "records_read": raw,
        "duplicates_replaced": raw - len(records),
        "problems": len(problems),
        "per_condition_point": dict(sorted(per_cp.items())),
        "problems_per_variation_type": dict(sorted(per_vt.items())),
        "skipped_points": len(skipped),
    }


def paired_tables(
    df: pd.DataFrame,
    metrics=PAIRED_METRICS,
    comparisons=PAIRED_COMPARISONS,
    wilcoxon_method: str = DEFAULT_WILCOXON,
    by=("variation_type", "point"),
) -> list[dict]:
    """Each (condition, baseline) of ``comparisons`` present in ``df``, per ``by`` stratum, with
    Holm and BH adjusted p-values over all rows of one metric (``*_holm``, ``*_bh``)."""
    if df.empty:
        return []
    present = set(df["condition"].dropna())
    rows: list[dict] = []
    for metric in metrics:
        if metric not in df:
            continue
        # only the columns the pairing needs: merging the full ~200-column frame costs 10x
        cols = [c for c in ("problem_id", "condition", *stats.GROUP_COLUMNS, metric, f"{metric}_censored") if c in df]
        narrow = df.loc[:, list(dict.fromkeys(cols))]
        tables = [stats.paired_comparisons(narrow, metric, baseline, conditions=[condition], by=by,
                                           wilcoxon_method=wilcoxon_method)
                  for condition, baseline in comparisons if {condition, baseline} <= present]
        tables = [t[t["n"] > 0] for t in tables if len(t)]
        tables = [t for t in tables if len(t)]
        if not tables:
            continue
        # all-NA columns (a test with no value on any pair of one table) are dropped before the
        # concatenation and restored after it, so they do not decide the columns' dtypes
        columns = list(dict.fromkeys(c for t in tables for c in t.columns))
        table = pd.concat([t.dropna(axis=1, how="all") for t in tables], ignore_index=True).reindex(columns=columns)
        for col in ("wilcoxon_p", "t_p"):
            table[f"{col}_holm"] = stats.holm(table[col])
            table[f"{col}_bh"] = stats.benjamini_hochberg(table[col])
        rows.extend(stats.to_records(table))
    return rows


def build_metrics(
    records: list[Record] | list[dict],
    provenance: dict | None = None,
    skipped: list[dict] | None = None,
    *,
    warnings: list[str] | None = None,
    confidence: float = 0.95,
    n_resamples: int = stats.DEFAULT_RESAMPLES,
    seed: int = 0,
    wilcoxon_method: str = DEFAULT_WILCOXON,
    alpha: float = DEFAULT_ALPHA,
    calibrated: tuple[list[dict], dict] | None = None,
) -> dict:
    """The ``metrics.json`` dict of a run (see the module docstring for its sections).

    ``records``: typed records, or stored lines (dicts), each validated here (a RecordError names
    the record and the field). ``calibrated``: :func:`measure.analysis.calibrated.calibrated_records`
    of ``records`` at ``alpha`` and ``seed`` when the caller already has it (the report renders the
    same records).
    """
    records = as_records(records)
    skipped = list(skipped or [])
    unique, calibration = calibrated or calibrated_records(list(latest_by_key(records).values()), alpha, seed)
    df = records_frame(unique)
    kw = dict(confidence=confidence, n_resamples=n_resamples, seed=seed)
    aggregate = stats.aggregate(df, **kw) if unique else pd.DataFrame()
    pooled = stats.aggregate(df, by=("condition", "point"), **kw) if unique else pd.DataFrame()
    # The findings speak of changed problems: identical-problem controls (variation type None)
    # never adapt by construction and would dilute every latency and gap of a change condition.
    changed = df[df["variation_type"].notna()] if unique else df
    changed_table = (stats.aggregate(changed, by=("condition", "point"), metrics=FINDINGS_METRICS, **kw)
                     if len(changed) else pd.DataFrame())
    metrics = {
        "schema": METRICS_SCHEMA,
        "provenance": provenance or {},
        "settings": {
            "group_by": list(stats.GROUP_COLUMNS),
            "confidence": confidence,
            "n_resamples": n_resamples,
            "seed": seed,
            "wilcoxon_method": wilcoxon_method,
            "paired_metrics": list(PAIRED_METRICS),
            "paired_comparisons": [list(pair) for pair in PAIRED_COMPARISONS],
            "alpha": alpha,
        },
        "counts": _counts(len(records), unique, skipped),
        "skipped": skipped,
        "checks": check_maxima(unique),
        "calibration": calibration,
        "outcomes": outcome_summary(df),
        "aggregate": stats.to_records(aggregate),
        "aggregate_pooled": stats.to_records(pooled),
        "paired": paired_tables(df, wilcoxon_method=wilcoxon_method),
        "paired_pooled": paired_tables(df, wilcoxon_method=wilcoxon_method, by=("point",)),
        "aggregate_changed": stats.to_records(changed_table),
        "paired_changed": paired_tables(changed, wilcoxon_method=wilcoxon_method, by=("point",)),
        "survival": lead_survival(changed, **kw),
        "paired_events": paired_event_tests(changed),
        "strategies": strategies_section(unique, calibration, **kw),
        # Position sweep and notes split (measure.analysis.position): the lead event is chosen there.
        "by_position": position_section(unique, skipped, seed=seed, n_resamples=n_resamples),
        "notes": notes_split(unique),
        "warnings": list(warnings or []),
    }
    metrics = stats.json_safe(metrics)
    metrics["findings"] = build_findings(metrics)
    return metrics


def write_reports(run_folder: Path, records: list[Record] | list[dict], provenance: dict, skipped: list[dict],
                  **options) -> dict:
    """Write ``metrics.json`` and ``report.html`` into ``run_folder``; return the metrics dict.

    ``options`` go to :func:`build_metrics` (``confidence``, ``n_resamples``, ``seed``,
    ``wilcoxon_method``, ``warnings``, ``alpha``).
    """
    from measure.report.html import write_html  # matplotlib is imported only when rendering

    run_folder = Path(run_folder)
    run_folder.mkdir(parents=True, exist_ok=True)
    records = as_records(records)
    skipped = [normalize_skipped(s) for s in skipped or []]
    calibrated = calibrated_records(list(latest_by_key(records).values()), options.get("alpha", DEFAULT_ALPHA),
                                    options.get("seed", 0))
    metrics = build_metrics(records, provenance, skipped, calibrated=calibrated, **options)
    write_json(run_folder / METRICS_FILE, metrics)
    write_html(run_folder / REPORT_FILE, calibrated[0], metrics)
    return metrics


def normalize_skipped(item) -> dict:
    """A skipped point as a dict: dicts pass; ``(point, reason)`` and ``(problem_id, point, reason)``
    tuples (as :class:`measure.engine.engine.ProblemResult` holds them) are named."""
    if isinstance(item, dict):
        return item
    if isinstance(item, (list, tuple)) and len(item) == 2:
        return {"point": item[0], "reason": item[1]}
    if isinstance(item, (list, tuple)) and len(item) == 3:
        return {"problem_id": item[0], "point": item[1], "reason": item[2]}
    return {"item": item}


def saved_provenance(run_folder: Path) -> tuple[dict, list[dict], list[str]]:
    """Provenance and skipped points saved by the run, and notes on what could not be read.

    Provenance: ``run.json`` first, then ``metrics.json``. Skipped points: ``skipped.jsonl`` when
    present (``measure run`` appends every skipped point there as it measures and writes none into
    ``run.json``), else the ``skipped`` list of ``run.json`` (the pytest plugin keeps it there),
    else that of ``metrics.json``. A ``skipped.jsonl`` that reads with warnings (a torn last line)
    gives way to a saved list when there is one.
    """
    run_folder = Path(run_folder)
    notes: list[str] = []
    provenance: dict | None = None
    saved_lists: list[tuple[str, list]] = []  # (file, its skipped list), in order of preference
    for name in (RUN_FILE, METRICS_FILE):
        try:
            saved = read_json_object(run_folder / name)
        except RunFolderError as error:
            notes.append(f"{error}; provenance not taken from it")
            continue
        if saved is None:
            continue
        if "skipped" in saved:
            saved_lists.append((name, list(saved.get("skipped") or [])))
        if provenance is None:
            provenance = saved if name == RUN_FILE and "provenance" not in saved else dict(saved.get("provenance") or {})
    if provenance is None:
        notes.append(f"no {RUN_FILE} or {METRICS_FILE} in {run_folder}: provenance unknown")
    skipped_path = run_folder / SKIPPED_FILE
    if skipped_path.exists():
        try:
            entries, warnings = read_store(skipped_path)
        except StoreError as error:
            entries, warnings = [], [str(error)]
        if warnings and saved_lists:
            name, entries = saved_lists[0]
            warnings = [f"{warning}; skipped points taken from {name} instead" for warning in warnings]
        notes.extend(warnings)
        return provenance or {}, entries, notes
    return provenance or {}, saved_lists[0][1] if saved_lists else [], notes


def render_from_dir(run_folder: Path, **options) -> dict:
    """Re-render ``metrics.json`` and ``report.html`` from ``samples.jsonl``, the saved provenance
    and the skipped points (``skipped.jsonl`` of ``measure run``, else the saved lists; see
    :func:`saved_provenance`)."""
    run_folder = Path(run_folder)
    samples = run_folder / SAMPLES_FILE
    if run_folder.is_dir() and not is_run_folder(run_folder):
        raise FileNotFoundError(f"{run_folder}: not a run folder (it holds none of {', '.join(RUN_MARKERS)})")
    if not samples.exists():
        raise FileNotFoundError(f"{samples} not found: `measure report` needs the run's {SAMPLES_FILE}")
    records, store_warnings = read_report_records(samples)  # what the report reads, from either layout
    provenance, skipped, notes = saved_provenance(run_folder)
    settings = provenance.get("settings") or {}
    for name in ("alpha", "seed"):  # calibrate as the run did, unless told otherwise
        if name not in options and isinstance(settings.get(name), (int, float)):
            options[name] = settings[name]
    options["warnings"] = [*options.get("warnings", []), *store_warnings, *notes]
    return write_reports(run_folder, records, provenance, skipped, **options)
