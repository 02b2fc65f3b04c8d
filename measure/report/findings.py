"""What a run found, in sentences computed from its ``metrics.json`` (never written by hand).

:func:`build_findings` reads the sections of the metrics dict (``aggregate_changed`` and
``paired_changed``: changed problems only, variation types pooled; ``calibration``,
``outcomes``) and returns the ``findings`` section:

- ``points``: for each injection point, one sentence per condition with its calibrated adaptation
  latency (Kaplan-Meier median and CI, or why there is none), its adaptation gap (mean and CI),
  and its paired differences against flush and against the noise control with Holm-adjusted
  p-values. Each sentence keeps the numbers it cites under ``cites``, so a test (or a reader)
  can check them against the tables;
- ``points[].power``: the smallest standardized difference the main comparison
  (:data:`MAIN_COMPARISON`) can detect with 80% power at the point's number of problems, beside
  the observed one;
- ``strategies``: one sentence per injection strategy (several updates per run; from the
  ``strategies`` section): its adaptation gap and calibrated adaptation latency counted from the
  first update and from the last, or why a latency has no number;
- ``calibration``: one sentence per point on the calibration the latencies rest on (alpha, the
  control runs, the held-out false-event rate);
- ``by_position`` and ``notes``: the position sweep's sentences and the notes split
  (:mod:`measure.report.position`);
- ``cannot_say``: what this run cannot support, each item with a ``code`` and a sentence:
  ``too_few_problems``, ``latencies_uncalibrated``, ``censored_share_high``,
  ``false_events_above_alpha``, ``outcomes_uninformative``.

The report shows this section first; ``measure run`` prints it at the end (:func:`findings_text`).
"""

from __future__ import annotations

from measure.analysis.calibration import CHANGE_CONDITIONS
from measure.analysis.stats import detectable_effect
from measure.metrics.latency import DEFAULT_GAP_TOKENS as GAP_TOKENS
from measure.report.format import fmt, point_sort_key
from measure.report.position import position_findings, position_text

#: Fewer changed problems than this at a point: paired comparisons have little power (with 5
#: pairs a two-sided Wilcoxon test cannot reach p < 0.05 at all).
MIN_PROBLEMS = 10
#: Above this share of right-censored latencies, medians are unreached or rest on a few runs.
MAX_CENSORED_SHARE = 0.5
#: Conditions described, in this order; references (ignore, oracle) have no point of their own.
FINDING_CONDITIONS = ("injection", "flush", "partial", "repeat", "noise")
LATENCY = "adaptation_latency"
GAP = "adaptation_gap"
BASELINES = ("flush", "noise")
#: The run's main paired comparison, whose power the findings state: does an injected update
#: take the change in more than a content-free insertion of the same length?
MAIN_COMPARISON = ("injection", "noise")


def _row(rows: list[dict], **match) -> dict | None:
    for row in rows:
        if all(row.get(k) == v for k, v in match.items()):
            return row
    return None


def _interval(row: dict, unit: str = "") -> str:
    low, high = row.get("ci_low"), row.get("ci_high")
    if low is None and high is None:
        return ""
    return f" (95% CI {fmt(low)}–{'open' if high is None else fmt(high)}{unit})"


def _p(value) -> str:
    if value is None:
        return "p n/a"
    return "p < 0.001" if value < 0.001 else f"p = {value:.3f}"


def _latency_clause(row: dict | None, calibration: dict | None) -> tuple[str, dict]:
    if calibration is not None and not calibration.get("calibrated"):
        return "adaptation latency uncalibrated (see below)", {"latency_calibrated": False}
    if not row or not row.get("n"):
        return "no adaptation latency", {}
    cites = {"latency_median": row.get("estimate"), "latency_ci_low": row.get("ci_low"),
             "latency_ci_high": row.get("ci_high"), "latency_n": row.get("n"),
             "latency_n_censored": row.get("n_censored")}
    never = f"{int(row['n_censored'])} of {int(row['n'])} runs never adapted within their tokens"
    if row.get("estimate") is None:
        return f"median adaptation latency not reached ({never})", cites
    return (f"adapts after a median of {fmt(row['estimate'])} tokens{_interval(row)}; {never}"), cites


def _gap_clause(row: dict | None) -> tuple[str, dict]:
    if not row or row.get("estimate") is None:
        return "", {}
    return (f"adaptation gap {fmt(row['estimate'])} nats{_interval(row)}",
            {"gap_mean": row["estimate"], "gap_ci_low": row.get("ci_low"), "gap_ci_high": row.get("ci_high")})


def _paired_clause(paired: list[dict], condition: str, point: str) -> tuple[str, dict]:
    parts, cites = [], {}
    for baseline in BASELINES:
        if baseline == condition:
            continue
        row = _row(paired, condition=condition, baseline=baseline, point=point, metric=GAP)
        if not row or row.get("mean_diff") is None:
            continue
        test = (f"Holm {_p(row['wilcoxon_p_holm'])}" if row.get("wilcoxon_p_holm") is not None
                else "no difference on any problem" if row["mean_diff"] == 0 else "no test")
        parts.append(f"vs {baseline} {row['mean_diff']:+.3g} nats (n={int(row['n'])}, {test})")
        cites[f"vs_{baseline}_mean_diff"] = row["mean_diff"]
        cites[f"vs_{baseline}_p_holm"] = row.get("wilcoxon_p_holm")
    return ("gap " + "; ".join(parts)) if parts else "", cites


def _calibration_sentence(point: str, entry: dict, alpha: float) -> dict:
    if not entry.get("calibrated"):
        return {"point": point, "calibrated": False, "text": f"At {point} the latencies are uncalibrated: {entry.get('reason')}."}
    fer = entry["false_event_rate"].get("controls") or {}
    folds = entry["folds"]
    windows = sorted({f["window"] for f in folds})
    text = (f"At {point}, adaptation events are calibrated at alpha = {alpha} on "
            f"{' and '.join(str(f['n_controls']) for f in folds)} control runs (two folds, window "
            f"{'/'.join(map(str, windows))} tokens); on held-out controls they fired in {fer.get('k')} of "
            f"{fer.get('n')} runs ({fmt(fer.get('estimate'))}, 95% CI {fmt(fer.get('ci_low'))}–{fmt(fer.get('ci_high'))}).")
    return {"point": point, "calibrated": True, "text": text,
            "cites": {"false_event_k": fer.get("k"), "false_event_n": fer.get("n"),
                      "false_event_rate": fer.get("estimate"), "windows": windows}}


def _strategy_sentence(entry: dict) -> dict:
    """One sentence on a strategy: gap and adaptation latency from its first and its last update;
    for a schedule that ends with problem A (a retraction), why those are no findings, and how far
    each update moves the run from A instead."""
    if entry.get("final_problems") == ["a"]:
        updates = entry.get("updates") or []
        moves = "; ".join(f"{(u.get('kl_ignore_since') or {}).get('text')} after update {u['index'] + 1}"
                          for u in updates)
        text = (f"{entry['condition']} ({entry.get('n_runs')} runs on changed problems) ends with the original problem "
                "A, so its P_oracle and P_matched are P_ignore and the run itself: its r(t), adaptation gap and "
                "calibrated latencies are 0 or censored by construction and say nothing. How far each update moves "
                f"the run from A, mean KL(run || P_ignore) over the {GAP_TOKENS} tokens after it: {moves} (any "
                f"inserted text moves it: noise, content-free text of the update's length, gives "
                f"{(entry.get('noise_kl_ignore') or {}).get('text')}).")
        return {"condition": entry["condition"], "text": text, "degenerate_references": True,
                "cites": {f"kl_ignore_since_update_{u['index'] + 1}": (u.get("kl_ignore_since") or {}).get("estimate")
                          for u in updates}}
    latencies = entry.get("latencies") or {}
    first, last = latencies.get(LATENCY) or {}, latencies.get(f"{LATENCY}_since_last") or {}
    gap_first, gap_last = entry.get("gap_first") or {}, entry.get("gap_last") or {}
    text = (f"{entry['condition']} ({entry.get('n_runs')} runs on changed problems, {entry.get('n_all_delivered')} got "
            f"every update): adaptation gap {gap_first.get('text')} from the first update and {gap_last.get('text')} "
            f"from the last; adaptation latency from the first update {first.get('text')}, from the last "
            f"{last.get('text')}.")
    return {"condition": entry["condition"], "text": text,
            "cites": {"gap_first": gap_first.get("estimate"), "gap_last": gap_last.get("estimate"),
                      "latency_first": first.get("estimate"), "latency_last": last.get("estimate")}}


def _changed_problems(pooled: list[dict], point: str) -> int:
    """Changed problems measured at ``point``: the most runs any condition has there."""
    return max((int(r.get("n") or 0) for r in pooled if r.get("point") == point and r.get("metric") == GAP), default=0)


def build_findings(metrics: dict) -> dict:
    """The ``findings`` section of ``metrics.json`` (see the module docstring)."""
    pooled = metrics.get("aggregate_changed", [])
    paired = metrics.get("paired_changed", [])
    calibration = metrics.get("calibration") or {}
    alpha = calibration.get("alpha")
    latency_points = (calibration.get("events", {}).get(LATENCY) or {}).get("points", {})
    points = sorted({r["point"] for r in pooled if r.get("point") not in (None, "-")}, key=point_sort_key)
    out_points, calibration_sentences, cannot = [], [], []

    for point in points:
        sentences = []
        for condition in FINDING_CONDITIONS:
            gap = _row(pooled, condition=condition, point=point, metric=GAP)
            if gap is None:
                continue
            lat_text, cites = _latency_clause(_row(pooled, condition=condition, point=point, metric=LATENCY),
                                              latency_points.get(point))
            gap_text, gap_cites = _gap_clause(gap)
            pair_text, pair_cites = _paired_clause(paired, condition, point)
            text = f"{condition} at {point}: " + "; ".join(t for t in (lat_text, gap_text, pair_text) if t) + "."
            sentences.append({"condition": condition, "text": text, "cites": {**cites, **gap_cites, **pair_cites}})
        out_points.append({"point": point, "sentences": sentences})
        if point in latency_points:
            calibration_sentences.append(_calibration_sentence(point, latency_points[point], alpha))

        n_changed = _changed_problems(pooled, point)
        main = _row(paired, condition=MAIN_COMPARISON[0], baseline=MAIN_COMPARISON[1], point=point, metric=GAP)
        if main and main.get("n"):
            detectable = detectable_effect(int(main["n"]))
            observed = main.get("cohen_dz")
            out_points[-1]["power"] = {
                "comparison": f"{MAIN_COMPARISON[0]} vs {MAIN_COMPARISON[1]}", "metric": GAP, "n": int(main["n"]),
                "detectable_dz": detectable, "observed_dz": observed,
                "text": (f"Power at {point}: with {int(main['n'])} paired problems, {MAIN_COMPARISON[0]} vs "
                         f"{MAIN_COMPARISON[1]} on the adaptation gap detects a standardized difference |dz| of "
                         f"{fmt(detectable)} or more with 80% power (two-sided, 0.05); the observed dz is "
                         f"{fmt(observed)}.")}
        if n_changed < MIN_PROBLEMS:
            cannot.append({"code": "too_few_problems", "point": point,
                           "text": f"At {point} only {n_changed} changed problems were measured (fewer than "
                                   f"{MIN_PROBLEMS}): paired comparisons there have little power, and a "
                                   "non-significant difference is not evidence of no difference."})
        entry = latency_points.get(point)
        if entry is not None and not entry.get("calibrated"):
            cannot.append({"code": "latencies_uncalibrated", "point": point,
                           "text": f"At {point} detection and adaptation latencies are not reported: "
                                   f"{entry.get('reason')}."})
        elif entry is not None:
            fer = (entry.get("false_event_rate") or {}).get("controls") or {}
            if fer.get("ci_low") is not None and alpha is not None and fer["ci_low"] > alpha:
                cannot.append({"code": "false_events_above_alpha", "point": point,
                               "text": f"At {point} held-out controls fired more often than alpha = {alpha} "
                                       f"({fmt(fer['estimate'])}, CI from {fmt(fer['ci_low'])}): the calibration "
                                       "does not transfer between the two halves of the problems."})
        for condition in CHANGE_CONDITIONS:  # controls are meant not to adapt: censoring is their result
            row = _row(pooled, condition=condition, point=point, metric=LATENCY)
            share = (row or {}).get("share_censored")
            if share is not None and share > MAX_CENSORED_SHARE:
                cannot.append({"code": "censored_share_high", "point": point, "condition": condition,
                               "text": f"At {point}, {int(row['n_censored'])} of {int(row['n'])} {condition} runs never "
                                       f"adapted within their tokens ({share:.0%}): the median latency is "
                                       "unreached or rests on a few runs; read the event rate instead."})

    strategies = [_strategy_sentence(entry) for entry in (metrics.get("strategies") or {}).values()]
    outcomes = metrics.get("outcomes") or {}
    if outcomes and not outcomes.get("informative", False):
        cannot.append({"code": "outcomes_uninformative",
                       "text": "Outcome rates (adapted, stale) are not reported: "
                               + " ".join(r.rstrip(".") + "." for r in outcomes.get("reasons", []))})
    return {"points": out_points, "strategies": strategies, "calibration": calibration_sentences, "cannot_say": cannot,
            "min_problems": MIN_PROBLEMS, "max_censored_share": MAX_CENSORED_SHARE,
            **position_findings(metrics)}  # by_position and notes (measure.report.position)


def findings_text(findings: dict) -> str:
    """The findings as plain text, for the terminal at the end of ``measure run``."""
    lines = ["Findings"]
    for point in findings.get("points", []):
        for sentence in point["sentences"]:
            lines.append(f"  - {sentence['text']}")
        if point.get("power"):
            lines.append(f"  * {point['power']['text']}")
    for sentence in findings.get("strategies", []):
        lines.append(f"  - {sentence['text']}")
    for sentence in findings.get("calibration", []):
        lines.append(f"  * {sentence['text']}")
    lines.extend(position_text(findings))  # By position and the notes split (measure.report.position)
    if findings.get("cannot_say"):
        lines.append("What this run cannot say")
        lines.extend(f"  - {item['text']}" for item in findings["cannot_say"])
    return "\n".join(lines)
