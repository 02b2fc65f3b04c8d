"""``metrics.json``: the machine-readable summary of one run, and the entry points that write it.

:func:`build_metrics` turns sample records (see :mod:`measure.report.records`) into one dict:

- ``provenance``: passed in by the caller (model, dataset, versions, git hash, settings), kept as is;
- ``settings``: how the statistics below were computed (confidence, resamples, test method);
- ``counts``: records (after keeping the last record per key), replaced duplicates, problems,
  records per condition x point, problems per variation type, skipped points;
- ``skipped``: the injection points that produced no runs, with the reason (from the caller);
- ``checks``: per invariant check (``record["checks"]``), the largest value over the records and
  the key of the record that holds it, so a reader sees the worst case at a glance;
- ``aggregate``: :func:`measure.stats.aggregate` rows, one per condition x variation_type x point
  x metric (mean with bootstrap CI, Kaplan-Meier median for censored latencies, rates);
  ``aggregate_pooled``: the same per condition x point, variation types pooled;
- ``paired``: :func:`measure.stats.paired_comparisons` of each intervention condition against each
  baseline condition in :data:`PAIRED_BASELINES` for the metrics in :data:`PAIRED_METRICS`, per
  variation type x point; ``paired_pooled``: the same per point, variation types pooled
  (Holm / BH corrections are applied within each table);
- ``warnings``: anything the reader should know (e.g. a torn last line dropped from the store).

Everything is JSON-safe: NaN and infinities become null, and the file is written with
``allow_nan=False`` so a stray NaN fails loudly instead of producing invalid JSON.

:func:`write_reports` writes ``metrics.json`` and ``report.html``; :func:`render_from_dir`
re-renders both from ``samples.jsonl`` and the provenance saved earlier (``run.json`` when present,
else the previous ``metrics.json``).
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path

import pandas as pd

from measure import stats
from measure.report.store import latest_by_key, read_records

METRICS_SCHEMA = "measure.metrics/1"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"
SAMPLES_FILE = "samples.jsonl"
RUN_FILE = "run.json"

#: Conditions that are references (run once per problem, point "-"), not interventions.
REFERENCE_CONDITIONS = ("ignore", "oracle")
#: Conditions every intervention is compared against, when the run has them.
PAIRED_BASELINES = ("noise", "flush")
#: Metrics compared pairwise (same problems) against each baseline.
PAIRED_METRICS = (
    "adaptation_latency",
    "kl_oracle_immediate", "kl_oracle_short", "kl_oracle_long",
    "kl_matched_immediate", "kl_matched_short", "kl_matched_long",
)
#: ``scipy.stats.wilcoxon`` method for the paired tests. "auto" runs an exact permutation test
#: for n <= 13 with ties (about a second per test on a slow CPU; a report holds hundreds of
#: tests), so the report uses the normal approximation; pass ``wilcoxon_method="auto"`` for
#: exact p-values on small tables.
DEFAULT_WILCOXON = "asymptotic"


def records_frame(records: list[dict]) -> pd.DataFrame:
    """One row per record: its flat ``metrics`` row, identifiers taken from the record itself."""
    rows = []
    for record in records:
        row = dict(record.get("metrics") or {})
        for key in ("problem_id", "condition", "point", "variation_type"):
            row[key] = record.get(key, row.get(key))
        rows.append(row)
    df = pd.DataFrame(rows)
    for key in ("problem_id", "condition", "point", "variation_type"):
        if key not in df:
            df[key] = None
    return df


def check_maxima(records: list[dict]) -> dict[str, dict]:
    """``{check: {max, key, n, n_missing}}`` over every record's ``checks``."""
    out: dict[str, dict] = {}
    for record in records:
        for name, value in (record.get("checks") or {}).items():
            entry = out.setdefault(name, {"max": None, "key": None, "n": 0, "n_missing": 0})
            if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
                entry["n_missing"] += 1
                continue
            entry["n"] += 1
            if entry["max"] is None or value > entry["max"]:
                entry["max"], entry["key"] = float(value), record.get("key")
    return dict(sorted(out.items()))


def _counts(raw: int, records: list[dict], skipped: list[dict]) -> dict:
    per_cp = Counter(f"{r.get('condition')}/{r.get('point')}" for r in records)
    problems: dict[str, object] = {}
    for r in records:
        problems.setdefault(r.get("problem_id"), r.get("variation_type"))
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
    baselines=PAIRED_BASELINES,
    wilcoxon_method: str = DEFAULT_WILCOXON,
    by=("variation_type", "point"),
) -> list[dict]:
    """Each intervention condition vs each baseline present, per ``by`` stratum."""
    if df.empty:
        return []
    present = set(df["condition"].dropna())
    rows: list[dict] = []
    for baseline in baselines:
        if baseline not in present:
            continue
        conditions = sorted(present - {baseline, *REFERENCE_CONDITIONS})
        if not conditions:
            continue
        for metric in metrics:
            if metric not in df:
                continue
            # only the columns the pairing needs: merging the full ~200-column frame costs 10x
            cols = [c for c in ("problem_id", "condition", *stats.GROUP_COLUMNS, metric, f"{metric}_censored")
                    if c in df]
            narrow = df.loc[:, list(dict.fromkeys(cols))]
            table = stats.paired_comparisons(narrow, metric, baseline, conditions=conditions, by=by,
                                             wilcoxon_method=wilcoxon_method)
            rows.extend(stats.to_records(table))
    return rows


def build_metrics(
    records: list[dict],
    provenance: dict | None = None,
    skipped: list[dict] | None = None,
    *,
    warnings: list[str] | None = None,
    confidence: float = 0.95,
    n_resamples: int = stats.DEFAULT_RESAMPLES,
    seed: int = 0,
    wilcoxon_method: str = DEFAULT_WILCOXON,
) -> dict:
    """The ``metrics.json`` dict of a run (see the module docstring for its sections)."""
    skipped = list(skipped or [])
    unique = list(latest_by_key(records).values())
    df = records_frame(unique)
    kw = dict(confidence=confidence, n_resamples=n_resamples, seed=seed)
    aggregate = stats.aggregate(df, **kw) if unique else pd.DataFrame()
    pooled = stats.aggregate(df, by=("condition", "point"), **kw) if unique else pd.DataFrame()
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
            "paired_baselines": list(PAIRED_BASELINES),
        },
        "counts": _counts(len(records), unique, skipped),
        "skipped": skipped,
        "checks": check_maxima(unique),
        "aggregate": stats.to_records(aggregate),
        "aggregate_pooled": stats.to_records(pooled),
        "paired": paired_tables(df, wilcoxon_method=wilcoxon_method),
        "paired_pooled": paired_tables(df, wilcoxon_method=wilcoxon_method, by=("point",)),
        "warnings": list(warnings or []),
    }
    return stats.json_safe(metrics)


def write_json(path: Path, obj) -> None:
    """Write ``obj`` as JSON atomically (temp file + rename); NaN is an error, not output."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, allow_nan=False, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_reports(out_dir: Path, records: list[dict], provenance: dict, skipped: list[dict], **options) -> dict:
    """Write ``metrics.json`` and ``report.html`` into ``out_dir``; return the metrics dict.

    ``options`` go to :func:`build_metrics` (``confidence``, ``n_resamples``, ``seed``,
    ``wilcoxon_method``, ``warnings``).
    """
    from measure.report.html import write_html  # matplotlib is imported only when rendering

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    skipped = [normalize_skipped(s) for s in skipped or []]
    metrics = build_metrics(records, provenance, skipped, **options)
    write_json(out_dir / METRICS_FILE, metrics)
    write_html(out_dir / REPORT_FILE, list(latest_by_key(records).values()), metrics)
    return metrics


def normalize_skipped(item) -> dict:
    """A skipped point as a dict: dicts pass; ``(point, reason)`` and ``(problem_id, point, reason)``
    tuples (as :class:`measure.engine.ProblemResult` holds them) are named."""
    if isinstance(item, dict):
        return item
    if isinstance(item, (list, tuple)) and len(item) == 2:
        return {"point": item[0], "reason": item[1]}
    if isinstance(item, (list, tuple)) and len(item) == 3:
        return {"problem_id": item[0], "point": item[1], "reason": item[2]}
    return {"item": item}


def saved_provenance(out_dir: Path) -> tuple[dict, list[dict], list[str]]:
    """Provenance and skipped points saved by the run: ``run.json`` first, then ``metrics.json``."""
    out_dir = Path(out_dir)
    notes: list[str] = []
    for name in (RUN_FILE, METRICS_FILE):
        path = out_dir / name
        if not path.exists():
            continue
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as error:
            notes.append(f"{path}: unreadable ({error}); provenance not taken from it")
            continue
        if not isinstance(saved, dict):
            continue
        if name == RUN_FILE and "provenance" not in saved:
            return saved, list(saved.get("skipped") or []), notes
        return dict(saved.get("provenance") or {}), list(saved.get("skipped") or []), notes
    notes.append(f"no {RUN_FILE} or {METRICS_FILE} in {out_dir}: provenance unknown")
    return {}, [], notes


def render_from_dir(out_dir: Path, **options) -> dict:
    """Re-render ``metrics.json`` and ``report.html`` from ``samples.jsonl`` + saved provenance."""
    out_dir = Path(out_dir)
    samples = out_dir / SAMPLES_FILE
    if not samples.exists():
        raise FileNotFoundError(f"{samples} not found: `measure report` needs the run's {SAMPLES_FILE}")
    records, store_warnings = read_records(samples)
    provenance, skipped, notes = saved_provenance(out_dir)
    options["warnings"] = [*options.get("warnings", []), *store_warnings, *notes]
    return write_reports(out_dir, records, provenance, skipped, **options)
