"""``measure compare-models RUN_DIR RUN_DIR ... --out DIR``: runs of different models side by side.

Each run folder (``measure run``'s output: ``run.json`` + ``samples.jsonl``) is one model. The
runs must measure the same thing, so that a problem's numbers pair up across models: the same
problems (ids and answers) and the same settings in :data:`PAIRING_FIELDS`; otherwise the
comparison is refused naming the field. Settings that do not change what is measured (model,
device, dtype, batch and group sizes, prompt style, output folder) may differ.

Per model, condition and injection point the report gives the calibrated latencies (each run's
own calibration, :func:`measure.analysis.calibrated.calibrated_records`: events are calibrated on
that model's controls, so latencies are comparable in tokens), the adaptation gap with its CI, the
mean KL(run || P_matched) curve after the change (overlaid per model), and the attention onto the
inserted text by relative layer depth (layer / (layers - 1), so models of different depths share
an axis). Between every two models, paired Wilcoxon tests over the problems both measured
(scipy.stats via :func:`measure.analysis.stats.paired_test`), Holm-adjusted over the whole table.

Output: ``DIR/compare-models.json`` and ``DIR/compare-models.html`` (self-contained: inline CSS and
SVG, no scripts, nothing fetched).
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from measure.analysis import calibration as cal
from measure.analysis.calibrated import calibrated_records
from measure.analysis.position import position_section
from measure.analysis.stats import holm, json_safe, km_median, mean_ci, paired_test
from measure.records import RUN_FILE, SAMPLES_FILE
from measure.records.curves import as_curve, as_grid
from measure.records.record import Record
from measure.records.run_folder import RunFolderError, is_run_folder, read_run_info
from measure.records.store import latest_by_key
from measure.report.format import condition_sort_key, point_sort_key
from measure.report.inputs import COMPARE_MODELS_COLUMNS, read_report_records
from measure.report.position import compare_position

JSON_FILE = "compare-models.json"
HTML_FILE = "compare-models.html"
#: Settings that define what was measured: runs that differ in one cannot be paired.
PAIRING_FIELDS = ("dataset", "limit", "variation_types", "conditions", "points", "max_new_tokens", "temperature",
                  "seed", "update_form", "partial_recompute_last", "alpha")
#: Per-problem fields that must agree between runs for a shared problem id.
PROBLEM_FIELDS = ("variation_type", "answer_a", "answer_b", "kind")
#: Metrics compared between models, problem by problem (lower is closer to the matched reference).
PAIRED_METRICS = (("adaptation_gap", "adaptation gap (nats)"), ("kl_matched_immediate", "KL matched, tokens 1-5"),
                  ("attention_inserted_all", "attention onto inserted text"))
INSERTED_CONDITIONS = ("injection", "noise", "repeat")


class CompareModelsError(ValueError):
    """The runs cannot be compared; the message names the run folder and the field."""


# ------------------------------------------------------------------------ loading


def load_run(folder: str | Path) -> dict:
    """A run folder's provenance and its latest record per key (calibrated by :func:`calibrate`)."""
    folder = Path(folder)
    samples = folder / SAMPLES_FILE
    if not is_run_folder(folder):
        raise CompareModelsError(f"{folder}: not a run folder (is it a folder written by measure run?)")
    try:
        provenance = read_run_info(folder)
    except RunFolderError as error:
        raise CompareModelsError(str(error)) from None
    for name, present in ((RUN_FILE, provenance is not None), (SAMPLES_FILE, samples.is_file())):
        if not present:
            raise CompareModelsError(f"{folder}: no {name} (is it a folder written by measure run?)")
    records, _ = read_report_records(samples, COMPARE_MODELS_COLUMNS)
    records = list(latest_by_key(records).values())
    if not records:
        raise CompareModelsError(f"{samples}: no records")
    return {"folder": str(folder), "provenance": provenance, "settings": provenance.get("settings") or {},
            "model": provenance.get("model") or {}, "records": records}


def calibrate(run: dict) -> dict:
    """The run with its records' latencies calibrated on its own controls, as its report does."""
    records, section = calibrated_records(run["records"], alpha=run["settings"].get("alpha", cal.DEFAULT_ALPHA))
    return {**run, "records": records, "calibration": section}


def check_pairing(runs: list[dict]) -> None:
    """Refuse runs that measured different things, naming the first field that differs."""
    first = runs[0]
    for run in runs[1:]:
        for name in PAIRING_FIELDS:
            a, b = first["settings"].get(name), run["settings"].get(name)
            if a != b:
                raise CompareModelsError(
                    f"setting {name!r} differs: {a!r} in {first['folder']}, {b!r} in {run['folder']}; "
                    "runs can only be compared problem by problem when they measured the same thing")
        mine, theirs = problems_of(first), problems_of(run)
        if set(mine) != set(theirs):
            only_a, only_b = sorted(set(mine) - set(theirs)), sorted(set(theirs) - set(mine))
            raise CompareModelsError(
                f"problem_id sets differ: {len(only_a)} only in {first['folder']} ({', '.join(only_a[:3])}), "
                f"{len(only_b)} only in {run['folder']} ({', '.join(only_b[:3])})")
        for problem_id in sorted(mine):
            for name in PROBLEM_FIELDS:
                a, b = getattr(mine[problem_id], name), getattr(theirs[problem_id], name)
                if a != b:
                    raise CompareModelsError(
                        f"problem {problem_id}: field {name!r} is {a!r} in {first['folder']} "
                        f"but {b!r} in {run['folder']} (not the same problem)")


def problems_of(run: dict) -> dict[str, Record]:
    """Each problem's ignore record: what a problem is, as its runs recorded it."""
    return {r.problem_id: r for r in run["records"] if r.condition == "ignore"}


def labels_for(runs: list[dict]) -> list[str]:
    """Model names, made unique with the folder name where two runs share a model."""
    names = [run["model"].get("name") or Path(run["folder"]).name for run in runs]
    return [f"{name} ({Path(run['folder']).name})" if names.count(name) > 1 else name
            for name, run in zip(names, runs)]


# ------------------------------------------------------------------------ summaries


def _by_condition_point(records: list[Record]) -> dict[tuple[str, str], list[Record]]:
    table: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for record in records:
        if record.point != "-":
            table[(record.condition, record.point)].append(record)
    return table


def _curve(record: Record, ref: str = "matched") -> np.ndarray:
    values = None if record.arrays is None else record.arrays.kl.get(ref)
    return as_curve(values)[record.t0 or 0:]


def mean_curve(records: list[Record], max_positions: int) -> list[float | None]:
    curves = [_curve(r)[:max_positions] for r in records]
    length = max((len(c) for c in curves), default=0)
    grid = np.full((len(curves), length), np.nan)
    for row, curve in enumerate(curves):
        grid[row, :len(curve)] = curve
    with np.errstate(all="ignore"):
        means = [float(np.nanmean(column)) if np.isfinite(column).any() else None for column in grid.T]
    return means


def attention_depth_profile(records: list[Record]) -> dict | None:
    """Mean attention mass onto the inserted text per layer (heads and positions averaged), with
    each layer's relative depth; None when the runs carry no attention."""
    profiles = []
    for record in records:
        grid = as_grid(((record.arrays.attention_layers_heads if record.arrays else None) or {}).get("inserted"))
        if grid.size:
            profiles.append(np.nanmean(grid, axis=1))
    if not profiles:
        return None
    layers = len(profiles[0])
    mass = np.nanmean(np.stack([p for p in profiles if len(p) == layers]), axis=0)
    depth = np.linspace(0.0, 1.0, layers) if layers > 1 else np.zeros(1)
    return {"depth": [float(d) for d in depth], "mass": [float(m) for m in mass], "n_runs": len(profiles)}


def model_cell(records: list[Record], max_positions: int, calibration: dict | None = None) -> dict:
    """One model's numbers at one condition and point; a latency event this run could not
    calibrate at the point carries ``calibrated: false`` and the reason (too few controls)."""
    metrics = [r.metrics for r in records]
    point = records[0].point if records else None
    latencies = {}
    for event in cal.EVENT_NAMES:
        values = [m.get(event) for m in metrics]
        censored = [m.get(f"{event}_censored") for m in metrics]
        status = (((calibration or {}).get("events") or {}).get(event) or {}).get("points", {}).get(point) or {}
        latencies[event] = {**km_median(values, censored), "calibrated": bool(status.get("calibrated")),
                            "reason": status.get("reason")}
    return {
        "n": len(records),
        "latencies": latencies,
        "adaptation_gap": mean_ci([m.get("adaptation_gap") for m in metrics]),
        "kl_matched_immediate": mean_ci([m.get("kl_matched_immediate") for m in metrics]),
        "curve_kl_matched": mean_curve(records, max_positions),
        "attention_inserted_by_depth": attention_depth_profile(records),
    }


def paired_rows(runs: list[dict], labels: list[str], cells: dict) -> list[dict]:
    """Model vs model, per condition x point x metric, over the problems both measured there."""
    rows = []
    for (i, a), (j, b) in itertools.combinations(enumerate(runs), 2):
        tables = [_by_condition_point(a["records"]), _by_condition_point(b["records"])]
        for key in sorted(set(tables[0]) & set(tables[1]), key=lambda k: (point_sort_key(k[1]), condition_sort_key(k[0]))):
            left = {r.problem_id: r.metrics for r in tables[0][key]}
            right = {r.problem_id: r.metrics for r in tables[1][key]}
            shared = sorted(set(left) & set(right))
            for metric, title in PAIRED_METRICS:
                if metric.startswith("attention") and key[0] not in INSERTED_CONDITIONS:
                    continue
                x = [left[p].get(metric) for p in shared]
                y = [right[p].get(metric) for p in shared]
                if all(v is None for v in x + y):
                    continue
                test = paired_test(x, y)
                rows.append({"condition": key[0], "point": key[1], "metric": metric, "metric_title": title,
                             "model_a": labels[i], "model_b": labels[j], "n_shared_problems": len(shared), **test})
    for row, adjusted in zip(rows, holm([row["wilcoxon_p"] for row in rows])):
        row["wilcoxon_p_holm"] = adjusted
    return rows


def compare_models(folders: list[str | Path], max_positions: int = 40) -> dict:
    """The comparison as a JSON-ready dict (what ``compare-models.json`` holds)."""
    if len(folders) < 2:
        raise CompareModelsError("compare-models needs at least two run folders")
    runs = [load_run(folder) for folder in folders]
    check_pairing(runs)  # before the calibration, which takes seconds per run
    runs = [calibrate(run) for run in runs]
    labels = labels_for(runs)
    cells: dict[str, dict[str, dict]] = {}
    keys = set()
    for run in runs:
        keys |= set(_by_condition_point(run["records"]))
    for condition, point in sorted(keys, key=lambda k: (point_sort_key(k[1]), condition_sort_key(k[0]))):
        row = {}
        for label, run in zip(labels, runs):
            records = _by_condition_point(run["records"]).get((condition, point), [])
            row[label] = model_cell(records, max_positions, run["calibration"]) if records else None
        cells[f"{condition} @ {point}"] = {"condition": condition, "point": point, "models": row}
    models = []
    for label, run in zip(labels, runs):
        model = run["model"]
        models.append({"label": label, "folder": run["folder"], "name": model.get("name"),
                       "architecture": model.get("architecture"), "kind": model.get("kind"),
                       "weights_sha256": model.get("weights_sha256"), "dtype": model.get("dtype"),
                       "device": model.get("device"),
                       "prompt_style": run["provenance"].get("prompt_style") or run["settings"].get("prompt_style"),
                       "n_problems": len(problems_of(run)), "n_records": len(run["records"])})
    settings = {name: runs[0]["settings"].get(name) for name in PAIRING_FIELDS}
    return json_safe({
        "models": models,
        "settings": settings,
        "cells": cells,
        "paired": paired_rows(runs, labels, cells),
        # Side by side when every run is a position sweep (measure.report.position); else None.
        "by_position": compare_position({label: position_section(run["records"]) for label, run in zip(labels, runs)}),
        "max_positions": max_positions,
        "method": {
            "latencies": "Kaplan-Meier median (95% CI) of each model's own calibrated latency events",
            "adaptation_gap": "mean KL(run || P_matched) over the first 20 tokens after the change, bootstrap 95% CI",
            "paired": "Wilcoxon signed-rank over the problems both models measured at that condition and point; "
                      "Holm-adjusted over every row of the table",
            "attention_depth": "attention mass onto the inserted text per layer, averaged over heads, positions and "
                               "runs; layer index / (layers - 1) on the x axis",
        },
    })


# ------------------------------------------------------------------------ output


def write_comparison(folders: list[str | Path], out: str | Path) -> tuple[Path, Path]:
    from measure.report.compare_models_html import render_comparison  # matplotlib: only when rendering

    result = compare_models(folders)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out / JSON_FILE, out / HTML_FILE
    json_path.write_text(json.dumps(result, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    html_path.write_text(render_comparison(result), encoding="utf-8")
    return json_path, html_path


def headline(result: dict) -> list[str]:
    """A few lines for the terminal: adaptation gap and latency per model for each change condition."""
    lines = []
    for cell in result["cells"].values():
        if cell["condition"] not in cal.CHANGE_CONDITIONS:
            continue
        parts = []
        for label, numbers in cell["models"].items():
            if numbers is None:
                continue
            gap = numbers["adaptation_gap"]
            latency = numbers["latencies"].get("adaptation_latency") or {}
            median = latency.get("estimate")
            if not latency.get("calibrated"):
                said = "latency not calibrated (too few control runs)"
            else:
                said = (f"latency median {median if median is not None else 'not reached'} "
                        f"({latency.get('n_censored', 0)}/{latency.get('n', 0)} censored)")
            parts.append(f"{label}: gap {_num(gap.get('estimate'))} [{_num(gap.get('ci_low'))}, {_num(gap.get('ci_high'))}], "
                         + said)
        lines.append(f"{cell['condition']} @ {cell['point']}: " + "; ".join(parts))
    return lines


def _num(value) -> str:
    return "-" if value is None else f"{value:.3f}"
