"""``report.html``: one self-contained page (inline CSS and SVG, no scripts, no external fetches).

The page shows the run's provenance and settings, summary tables per condition x variation type
x injection point (window means with bootstrap CIs, Kaplan-Meier median latencies with CI and the
censored share, adapted/stale/other rates), paired comparisons against the baselines, adaptation
curves, latency survival curves, attention onto the inserted text per layer x position, the
injection strategies with several updates (curves aligned at each update, only when the run has
any; :mod:`measure.report.strategies`), and token strips of individual runs coloured by attribution.

Every string that comes from the data or the model goes through Jinja2 autoescaping; the only
markup inserted unescaped is the SVG that :mod:`measure.report.plots` draws (matplotlib escapes
the text it writes).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from measure.analysis.calibration import CHANGE_CONDITIONS, IDENTICAL
from measure.analysis.survival import INCIDENCE_TOKENS
from measure.engine.results import REFERENCE_RUNS
from measure.metrics.answers import OUTCOMES
from measure.metrics.attribution import DEFAULT_LIKELY, LABELS, attribute_tokens
from measure.metrics.latency import DEFAULT_GAP_TOKENS
from measure.records.atomic import write_atomic
from measure.records.curves import as_curve, as_grid
from measure.records.record import Record
from measure.report import plots
from measure.report.format import fmt, fmt_pct, point_sort_key
from measure.report.inputs import MAX_STRIPS, strip_order
from measure.report.position import position_html
from measure.report.strategies import LATENCIES as STRATEGY_LATENCIES
from measure.report.strategies import strategies_section

TEMPLATES = Path(__file__).parent / "templates"
#: Token strips shown at most (runs); the rest are counted in a note.
#: Tokens shown per strip at most (before + after the change).
MAX_STRIP_TOKENS = 160

DIVERGENCE_COLUMNS = (
    ("kl_oracle_immediate", "KL oracle 1-5"), ("kl_oracle_short", "KL oracle 6-20"), ("kl_oracle_long", "KL oracle 21+"),
    ("kl_matched_immediate", "KL matched 1-5"), ("kl_matched_short", "KL matched 6-20"),
    ("kl_matched_long", "KL matched 21+"),
    ("kl_ignore_immediate", "KL ignore 1-5"), ("kl_ignore_short", "KL ignore 6-20"),
    ("log_ratio_immediate", "r(t) 1-5"), ("log_ratio_short", "r(t) 6-20"), ("log_ratio_long", "r(t) 21+"),
)
LATENCY_COLUMNS = (
    ("adaptation_latency", "adaptation latency"), ("adaptation_latency_kl", "adaptation latency (KL)"),
    ("detection_latency", "detection latency"), ("stabilization_latency", "stabilization latency"),
    ("outcome_adapted", "adapted"), ("outcome_stale", "stale"), ("outcome_other", "other"),
    ("attr_injected_share", "injected share"), ("attr_original_share", "original share"),
)
PAIRED_COLUMNS = ("n", "mean_diff", "median_diff", "wilcoxon_p", "wilcoxon_p_holm", "rank_biserial", "cohen_dz",
                  "n_censored_pairs")


# ------------------------------------------------------------------------ formatting


def cell(row: dict | None) -> dict:
    """Display pieces of one aggregate row: ``{main, ci, note, title}``."""
    if not row or row.get("n", 0) == 0:
        return {"main": "–", "ci": "", "note": "", "title": "no values"}
    agg = row.get("aggregation")
    lo, hi = row.get("ci_low"), row.get("ci_high")
    if agg == "km_median":
        share = row.get("share_censored")
        if not row.get("median_reached"):
            main = "not reached"
        else:
            main = fmt(row.get("estimate"))
        ci = "" if lo is None and hi is None else f"[{fmt(lo)}, {'open' if hi is None else fmt(hi)}]"
        note = f"{fmt_pct(share)} censored"
        title = f"Kaplan-Meier median, n={row.get('n')}, events={row.get('n_events')}, censored={row.get('n_censored')}"
    elif agg == "rate":
        main = fmt_pct(row.get("estimate"))
        ci = "" if lo is None else f"[{fmt_pct(lo)}, {fmt_pct(hi)}]"
        note = f"{row.get('k', '?')}/{row.get('n')}"
        title = "share with Wilson CI"
    else:
        main = fmt(row.get("estimate"))
        ci = "" if lo is None else f"[{fmt(lo)}, {fmt(hi)}]"
        note = f"n={row.get('n')}"
        title = "mean with bootstrap CI"
    return {"main": main, "ci": ci, "note": note, "title": title}


def flatten(obj, prefix: str = "") -> list[tuple[str, str]]:
    """Nested dicts as ``(dotted.key, text)`` rows; lists and scalars rendered as JSON text."""
    if isinstance(obj, dict):
        rows = []
        for key, value in obj.items():
            rows.extend(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return rows
    text = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False, allow_nan=False, default=str)
    return [(prefix, text)]


# ------------------------------------------------------------------------ tables


POOLED = "all"


def _vt_label(vt) -> str:
    return "null" if vt is None else str(vt)


def _group_key(row: dict) -> tuple:
    vt = row.get("variation_type")
    return (plots.condition_sort_key(row.get("condition")), plots.point_sort_key(row.get("point")),
            (0, "") if vt == POOLED else (1, _vt_label(vt)))


def summary_tables(aggregate: list[dict], pooled: list[dict] = ()) -> dict:
    """Rows per condition x point x variation type (pooled "all" first) with display cells."""
    index: dict[tuple, dict[str, dict]] = {}
    for row in [*({**r, "variation_type": POOLED} for r in pooled), *aggregate]:
        ident = (row.get("condition"), row.get("variation_type"), row.get("point"))
        index.setdefault(ident, {})[row.get("metric")] = row
    idents = sorted(index, key=lambda i: _group_key({"condition": i[0], "variation_type": i[1], "point": i[2]}))
    present = {m for metrics in index.values() for m in metrics}

    def table(columns):
        cols = [(m, label) for m, label in columns if m in present]
        rows = []
        for ident in idents:
            metrics = index[ident]
            n = max((r.get("n") or 0 for r in metrics.values()), default=0)
            rows.append({"condition": ident[0], "variation_type": _vt_label(ident[1]), "pooled": ident[1] == POOLED,
                         "point": ident[2], "n": n, "cells": [cell(metrics.get(m)) for m, _ in cols]})
        return {"columns": [label for _, label in cols], "rows": rows}

    return {"divergence": table(DIVERGENCE_COLUMNS), "latency": table(LATENCY_COLUMNS)}


def paired_rows(paired: list[dict]) -> list[dict]:
    """Display rows of a paired table, comparisons without any pair left out."""
    rows = sorted(paired, key=lambda r: (str(r.get("baseline")), str(r.get("metric")), _group_key(r)))
    out = []
    for r in rows:
        if not r.get("n"):
            continue
        p = r.get("wilcoxon_p_holm")
        out.append({
            "baseline": r.get("baseline"), "metric": r.get("metric"), "condition": r.get("condition"),
            "variation_type": POOLED if "variation_type" not in r else _vt_label(r.get("variation_type")),
            "point": r.get("point"), "values": [fmt(r.get(c)) for c in PAIRED_COLUMNS],
            "significant": p is not None and p < 0.05,
        })
    return out


# ------------------------------------------------------------------------ token strips




def one_line(text: str) -> str:
    """Whitespace runs (newlines included) as single spaces, for inline display."""
    return " ".join(str(text).split())


def show_piece(piece: str) -> str:
    """A token's text with newlines and tabs made visible."""
    return str(piece).replace("\n", "⏎").replace("\t", "⇥") or "∅"


def token_strip(record: Record, max_tokens: int = MAX_STRIP_TOKENS) -> dict:
    """Tokens of one run: before the change (grey), the change marker, after it by attribution."""
    tokens = None if record.tokens is None else record.tokens.generated
    tokens = [] if tokens is None else [int(t) for t in tokens]  # a list, or the compact reader's array
    texts = record.texts
    pieces = None if texts is None else texts.generated_pieces
    if not (isinstance(pieces, list) and len(pieces) == len(tokens)):
        pieces = None
    t0 = record.t0 or 0
    refs = {} if record.arrays is None else record.arrays.logprob_ref
    oracle, ignore = as_curve(refs.get("oracle")), as_curve(refs.get("ignore"))
    n = len(tokens)
    if oracle.size == n and ignore.size == n:
        labels = list(attribute_tokens(oracle, ignore, t0, DEFAULT_LIKELY))
    else:
        labels = ["neither"] * (n - t0)
    start = max(0, min(t0 - 8, n - max_tokens))  # keep a little context before the change
    end = min(n, start + max_tokens)
    cells = []
    for i in range(start, end):
        text = show_piece(pieces[i]) if pieces else f"#{tokens[i]}"
        if i < t0:
            cells.append({"text": text, "cls": "pre", "title": f"before the change, index {i}, id {tokens[i]}"})
            continue
        lab = labels[i - t0]
        pb = math.exp(oracle[i]) if i < oracle.size and math.isfinite(oracle[i]) else None
        pa = math.exp(ignore[i]) if i < ignore.size and math.isfinite(ignore[i]) else None
        cells.append({"text": text, "cls": lab,
                      "title": f"k={i - t0 + 1} {lab}: p_B={fmt(pb)} p_A={fmt(pa)} id {tokens[i]}"})
    counts = {lab: labels.count(lab) for lab in LABELS}
    inserted = "" if texts is None else texts.inserted
    return {
        "key": record.key, "condition": record.condition, "point": record.point,
        "problem_id": record.problem_id, "variation_type": record.variation_type, "t0": t0,
        "n": n, "cells": cells, "marker_at": max(0, t0 - start), "truncated_before": start, "truncated_after": n - end,
        "inserted": inserted, "inserted_line": one_line(inserted),
        "continuation": "" if texts is None else texts.continuation,
        "generated": "" if texts is None else texts.generated, "prompt": "" if texts is None else texts.prompt,
        "counts": counts, "outcome": record.metrics.get("outcome"), "has_pieces": pieces is not None,
    }


def select_strips(records: list[Record], limit: int = MAX_STRIPS) -> tuple[list[Record], int]:
    """Runs with a change (not the references), problem by problem; and how many there were."""
    runs = [r for r in records if r.condition not in REFERENCE_RUNS]
    runs.sort(key=strip_order)
    return runs[:limit], len(runs)


# ------------------------------------------------------------------------ page


def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = fmt
    env.filters["pct"] = fmt_pct
    env.filters["piece"] = show_piece
    return env


def _inline(svg: str | None) -> Markup | None:
    return Markup(svg) if svg else None


def _rate(entry: dict | None) -> str:
    if not entry or not entry.get("n"):
        return "–"
    return f"{entry['k']}/{entry['n']} ({fmt_pct(entry['estimate'])}, {fmt_pct(entry['ci_low'])}–{fmt_pct(entry['ci_high'])})"


def _distinct(values) -> str:
    """The folds' values of one parameter, each distinct value once (folds mostly agree)."""
    shown = list(dict.fromkeys(values))
    return " / ".join(shown) if shown else "–"


def _spread(values) -> str:
    """The folds' values of a number as its range (one value when they agree)."""
    numbers = sorted(v for v in values if v is not None)
    if not numbers:
        return "–"
    return fmt(numbers[0]) if numbers[0] == numbers[-1] else f"{fmt(numbers[0])}–{fmt(numbers[-1])}"


def calibration_rows(calibration: dict) -> list[dict]:
    """One display row per calibrated event x injection point of the ``calibration`` section."""
    rows = []
    for event, spec in (calibration.get("events") or {}).items():
        for point, entry in sorted(spec.get("points", {}).items(), key=lambda kv: point_sort_key(kv[0])):
            folds = entry.get("folds") or []
            rows.append({
                "event": event, "point": point, "calibrated": fmt(bool(entry.get("calibrated"))),
                "reason": entry.get("reason") or "",
                "windows": _distinct(fmt(f.get("window")) if f.get("window") is not None
                                     else ("drift " + fmt(f.get("drift")) if f.get("drift") is not None else "–")
                                     for f in folds),
                "thresholds": _spread(f.get("threshold") for f in folds),
                "controls": _spread(f.get("n_controls") for f in folds),
                "false": _rate(entry.get("false_event_rate", {}).get("controls")),
                "changes": [_rate(entry.get("event_rate", {}).get(c)) for c in CHANGE_CONDITIONS],
                "identical": _rate(entry.get("false_event_rate", {}).get(IDENTICAL)),
            })
    return rows


def _mcnemar(rows: list[dict], condition: str, baseline: str, point: str) -> str:
    row = next((r for r in rows if (r.get("condition"), r.get("baseline"), r.get("point")) == (condition, baseline, point)),
               None)
    if row is None or row.get("p_exact") is None:
        return "–"
    return f"{row['only_condition']} vs {row['only_baseline']} discordant, p {fmt(row['p_exact'])} (Holm {fmt(row['p_holm'])})"


def lead_rows(metrics: dict) -> list[dict]:
    """One display row per injection point x condition of the lead event: its rate (beside the
    positive control's), observability, survival summaries and paired event tests."""
    lead = (metrics.get("calibration") or {}).get("lead") or {}
    survival = (metrics.get("survival") or {}).get("points") or {}
    paired = metrics.get("paired_events") or []
    rows = []
    for point, entry in sorted((lead.get("points") or {}).items(), key=lambda kv: point_sort_key(kv[0])):
        if not entry.get("calibrated"):
            continue
        conditions = (survival.get(point) or {}).get("conditions") or {}
        horizon = (survival.get(point) or {}).get("horizon")
        for condition, summary in conditions.items():
            is_change = condition in CHANGE_CONDITIONS
            rate = ((entry.get("event_rate") if is_change else entry.get("false_event_rate")) or {}).get(condition)
            counts = (entry.get("observability") or {}).get(condition) or {}
            share = (entry.get("share_of_flush") or {}).get(condition)
            rmst = summary.get("rmst") or {}
            median = summary.get("median") or {}
            rows.append({
                "point": point, "condition": condition,
                "events": _distinct(str(fold.get("event")) for fold in entry.get("folds") or []),
                "rate": _rate(rate), "share": "–" if share is None else f"{share:.2f}",
                "observable": (f"{counts['observable_events']} of {counts['observable']}" if counts.get("n")
                               and counts.get("unknown") != counts.get("n") else "–"),
                "unobservable": (str(counts["unobservable"]) if counts.get("n") and counts.get("unknown") != counts.get("n")
                                 else "–"),
                "incidence": [fmt_pct(summary["incidence"].get(str(k))) for k in INCIDENCE_TOKENS],
                "rmst": ("–" if rmst.get("estimate") is None else
                         f"{rmst['estimate']:.1f} of {horizon:.0f}" + (f" ({rmst['ci_low']:.1f}–{rmst['ci_high']:.1f})"
                                                                        if rmst.get("ci_low") is not None else "")),
                "median": fmt(median.get("estimate")) if median.get("estimate") is not None else "not reached",
                "vs_noise": _mcnemar(paired, condition, "noise", point),
                "vs_flush": _mcnemar(paired, condition, "flush", point),
            })
    return rows


def strategy_views(records: list[Record], metrics: dict) -> list[dict]:
    """The Strategies section: each strategy entry of ``metrics["strategies"]`` (computed from the
    records when the metrics predate the section) with its figure; empty without strategy records."""
    section = metrics.get("strategies")
    if section is None:
        section = strategies_section(records, metrics.get("calibration"))
    return [{**entry, "figure": _inline(plots.strategy_curves_svg(entry)),
             "latency_rows": [(base, entry["latencies"][base], entry["latencies"][f"{base}_since_last"])
                              for base in STRATEGY_LATENCIES]}
            for entry in section.values()]


def render_html(records: list[Record], metrics: dict, *, max_strips: int = MAX_STRIPS) -> str:
    """The report page for the (deduplicated) records and their ``metrics.json`` dict."""
    strips, n_runs = select_strips(records, max_strips)
    figures = {
        # Strategies have their own figures, aligned at each update (the Strategies section).
        "findings": _inline(plots.findings_curves_svg([r for r in records if not r.schedule])),
        "curves": _inline(plots.adaptation_curves_svg(records)),
        "survival": _inline(plots.survival_svg(records, "lead_latency")),
        "survival_detection": _inline(plots.survival_svg(records, "adaptation_latency")),
        "attention": _inline(plots.attention_heatmap_svg(records)),
    }
    provenance = metrics.get("provenance") or {}
    context = {
        "title": f"measure report: {_run_title(provenance)}",
        "generated_at": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "provenance": flatten(provenance),
        "settings": flatten(metrics.get("settings") or {}),
        "counts": metrics.get("counts") or {},
        "per_condition_point": (metrics.get("counts") or {}).get("per_condition_point") or {},
        "skipped": [flatten(s) for s in metrics.get("skipped") or []],
        "checks": metrics.get("checks") or {},
        "warnings": metrics.get("warnings") or [],
        "tables": summary_tables(metrics.get("aggregate") or [], metrics.get("aggregate_pooled") or []),
        "paired_pooled": paired_rows(metrics.get("paired_pooled") or []),
        "paired": paired_rows(metrics.get("paired") or []),
        "paired_columns": PAIRED_COLUMNS,
        "figures": figures,
        "attention_captured": any(r.arrays is not None and as_grid((r.arrays.attention_layers_tokens or {})
                                                                   .get("inserted")).size for r in records),
        "strips": [token_strip(r) for r in strips],
        "n_strip_runs": n_runs,
        "labels": LABELS,
        "likely": DEFAULT_LIKELY,
        "findings": metrics.get("findings") or {"points": [], "calibration": [], "cannot_say": []},
        "calibration": metrics.get("calibration") or {},
        "calibration_method": (metrics.get("calibration") or {}).get("method", "no calibration in these metrics"),
        "calibration_rows": calibration_rows(metrics.get("calibration") or {}),
        "lead_rows": lead_rows(metrics),
        "lead": (metrics.get("calibration") or {}).get("lead") or {},
        "incidence_tokens": INCIDENCE_TOKENS,
        "change_conditions": CHANGE_CONDITIONS,
        "outcomes": metrics.get("outcomes") or {"informative": False, "reasons": ["no outcomes in these metrics"]},
        "outcome_names": OUTCOMES,
        "strategies": strategy_views(records, metrics),
        "gap_tokens": DEFAULT_GAP_TOKENS,
        "position_block": position_html(metrics),  # By position and the notes split (measure.report.position)
    }
    return environment().get_template("report.html.j2").render(**context)


def write_html(path: Path, records: list[Record], metrics: dict) -> Path:
    path = Path(path)
    text = render_html(records, metrics)
    write_atomic(path, lambda handle: handle.write(text))
    return path


def _run_title(provenance: dict) -> str:
    """Model name, dataset and output folder when known (the model entry may be a dict)."""
    model = provenance.get("model")
    if isinstance(model, dict):
        model = model.get("name")
    settings = provenance.get("settings") or {}
    parts = [provenance.get("run_name") or provenance.get("name") or model, settings.get("dataset"),
             settings.get("out")]
    return " · ".join(str(part) for part in parts if part) or "run"
