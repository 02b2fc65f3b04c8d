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

from measure.analysis.calibration import CHANGE_CONDITIONS, POSITIVE_CONTROL
from measure.analysis.stats import detectable_effect
from measure.analysis.survival import INCIDENCE_TOKENS
from measure.metrics.latency import DEFAULT_GAP_TOKENS as GAP_TOKENS
from measure.report.format import fmt, fmt_pct, point_sort_key
from measure.report.position import position_findings, position_text

#: Fewer changed problems than this at a point: paired comparisons have little power (with 5
#: pairs a two-sided Wilcoxon test cannot reach p < 0.05 at all).
MIN_PROBLEMS = 10
#: Above this share of right-censored latencies, medians are unreached or rest on a few runs.
MAX_CENSORED_SHARE = 0.5
#: Conditions described, in this order; references (ignore, oracle) have no point of their own.
FINDING_CONDITIONS = ("injection", "flush", "partial", "repeat", "noise")
LATENCY = "lead_latency"
#: The strategies' latency, from their first and their last update (no lead event is chosen for them).
STRATEGY_LATENCY = "adaptation_latency"
GAP = "adaptation_gap"
#: The cumulative incidence the findings quote: by this many tokens after the change (or by the
#: largest of INCIDENCE_TOKENS within the horizon when it is shorter).
QUOTED_INCIDENCE = 16
#: Below this event rate of the positive control, the lead event has too little power for a low
#: rate of another condition to mean that it did not adapt.
MIN_FLUSH_RATE = 0.5
#: Holm-adjusted p below which a paired difference counts as shown.
SIGNIFICANCE = 0.05
#: Plain names of the events, for sentences.
EVENT_WORDS = {
    "detection_latency": "the first token with r(t) above the calibrated level",
    "adaptation_latency": "r(t) above the calibrated margin for w tokens in a row",
    "adaptation_latency_kl": "g(t) above the calibrated margin for w tokens in a row",
    "cusum_latency": "Page's CUSUM of r(t)",
    "cusum_latency_kl": "Page's CUSUM of g(t)",
    "cumulative_llr_latency": "the cumulative log-likelihood ratio",
}
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


def _quoted_k(horizon: float | None) -> int | None:
    within = [k for k in INCIDENCE_TOKENS if horizon is not None and k <= horizon]
    return QUOTED_INCIDENCE if QUOTED_INCIDENCE in within else (max(within) if within else None)


def _survival_clause(condition: str, survival: dict | None) -> tuple[str, dict]:
    """"adapted within 16 tokens in 31% of runs (flush 55%); restricted mean 71 of 88 tokens (95%
    CI ..); median ..." from the ``survival`` section of the point."""
    if not survival or condition not in survival.get("conditions", {}):
        return "", {}
    horizon = survival.get("horizon")
    entry = survival["conditions"][condition]
    flush = survival["conditions"].get(POSITIVE_CONTROL)
    k = _quoted_k(horizon)
    parts, cites = [], {"horizon": horizon}
    if k is not None and entry["incidence"].get(str(k)) is not None:
        value = entry["incidence"][str(k)]
        beside = (f" ({POSITIVE_CONTROL} {fmt_pct(flush['incidence'][str(k)])})"
                  if flush and condition != POSITIVE_CONTROL and flush["incidence"].get(str(k)) is not None else "")
        verb = "adapted" if condition in CHANGE_CONDITIONS else "the lead event fired"
        parts.append(f"{verb} within {k} tokens in {fmt_pct(value)} of runs{beside}")
        cites.update({"incidence_k": k, "incidence": value})
    rmst = entry.get("rmst") or {}
    if rmst.get("estimate") is not None:
        interval = (f" (95% CI {rmst['ci_low']:.0f}–{rmst['ci_high']:.0f})" if rmst.get("ci_low") is not None else "")
        parts.append(f"restricted mean time to the event {rmst['estimate']:.0f} of {horizon:.0f} tokens{interval}")
        cites.update({"rmst": rmst["estimate"], "rmst_ci_low": rmst.get("ci_low"), "rmst_ci_high": rmst.get("ci_high")})
    median = entry.get("median") or {}
    if median.get("estimate") is not None:
        parts.append(f"median {fmt(median['estimate'])} tokens{_interval(median)}")
    elif median.get("n"):
        parts.append("median not reached (fewer than half of the runs adapted)")
    cites.update({"latency_median": median.get("estimate"), "latency_n": median.get("n"),
                  "latency_n_censored": median.get("n_censored")})
    return "; ".join(parts), cites


def _rate_clause(condition: str, lead: dict) -> tuple[str, dict]:
    """The lead event's rate on the condition: beside flush's and as a share of it for change
    conditions; a false-event rate for controls."""
    if condition in CHANGE_CONDITIONS:
        entry = (lead.get("event_rate") or {}).get(condition)
    else:
        entry = (lead.get("false_event_rate") or {}).get(condition)
    if not entry or not entry.get("n"):
        return "", {}
    text = (f"the lead event fired in {entry['k']} of {entry['n']} runs ({fmt_pct(entry['estimate'])}, 95% CI "
            f"{fmt_pct(entry['ci_low'])}–{fmt_pct(entry['ci_high'])})")
    cites = {"event_k": entry["k"], "event_n": entry["n"], "event_rate": entry["estimate"],
             "event_ci_low": entry["ci_low"], "event_ci_high": entry["ci_high"]}
    share = (lead.get("share_of_flush") or {}).get(condition)
    if condition in CHANGE_CONDITIONS and condition != POSITIVE_CONTROL and share is not None:
        text += f", {share:.2f} of {POSITIVE_CONTROL}'s rate"
        cites["share_of_flush"] = share
    if condition not in CHANGE_CONDITIONS:
        text += " (a control: these are false events)"
    return text, cites


def _observability_clause(condition: str, lead: dict) -> tuple[str, dict]:
    counts = (lead.get("observability") or {}).get(condition)
    if not counts or not counts.get("n"):
        return "", {}
    if counts["unknown"] == counts["n"]:
        return ("whether these runs could show adaptation at all is unknown (records without KL(P_oracle || "
                "P_ignore))"), {}
    text = (f"{counts['observable']} of {counts['n']} runs could show adaptation at all and {counts['observable_events']}"
            f" of those did; {counts['unobservable']} had no observable difference")
    if counts["unobservable_events"]:
        text += f" ({counts['unobservable_events']} of them fired anyway)"
    if counts["observable"] == 0:
        text += ", so this run cannot tell whether they adapted"
    return text, {f"observability_{key}": value for key, value in counts.items()}


def _events_clause(paired_events: list[dict], condition: str, point: str) -> tuple[str, dict]:
    """Exact McNemar on the lead event's paired indicators, with words when nothing is shown."""
    parts, cites = [], {}
    for row in paired_events:
        if row.get("condition") != condition or row.get("point") != point:
            continue
        baseline = row["baseline"]
        shown = row.get("p_holm") is not None and row["p_holm"] < SIGNIFICANCE
        verdict = "" if shown else "; no difference shown at this number of problems"
        parts.append(f"events vs {baseline}: {row['both'] + row['only_condition']} vs "
                     f"{row['both'] + row['only_baseline']} of {row['n']} paired runs (exact McNemar "
                     f"{_p(row['p_exact'])}, Holm {_p(row['p_holm'])}{verdict})")
        cites[f"mcnemar_{baseline}_p"] = row["p_exact"]
        cites[f"mcnemar_{baseline}_p_holm"] = row["p_holm"]
    return "; ".join(parts), cites


def _latency_clause(condition: str, point: str, lead: dict | None, survival: dict | None,
                    paired_events: list[dict]) -> tuple[str, dict]:
    if lead is not None and not lead.get("calibrated"):
        return "lead event uncalibrated (see below)", {"latency_calibrated": False}
    if lead is None:
        return "no calibrated event", {}
    parts, cites = [], {}
    for text, found in (_survival_clause(condition, survival), _rate_clause(condition, lead),
                        _observability_clause(condition, lead), _events_clause(paired_events, condition, point)):
        if text:
            parts.append(text)
            cites.update(found)
    return "; ".join(parts), cites


def _lead_sentence(point: str, lead: dict, alpha: float | None) -> dict:
    """Which event leads at the point, why, and its held-out false-event rate."""
    if not lead.get("calibrated"):
        return {"point": point, "calibrated": False, "text": f"At {point} no lead event: {lead.get('reason')}."}
    folds = lead.get("folds") or []
    names = [fold["event"] for fold in folds]
    chosen = sorted(set(names))
    if len(chosen) == 1:
        which = f"{chosen[0]} ({EVENT_WORDS.get(chosen[0], chosen[0])}), chosen on every fold's fitting set"
    else:
        which = " or ".join(f"{n} ({EVENT_WORDS.get(n, n)}, {names.count(n)} of {len(names)} folds)" for n in chosen)
    rates = sorted(fold["flush_event_rate"].get(fold["event"]) for fold in folds
                   if fold["flush_event_rate"].get(fold["event"]) is not None)
    flush_rates = (f"{fmt_pct(rates[0])} to {fmt_pct(rates[-1])} of the fitting sets' {POSITIVE_CONTROL} runs"
                   if rates and rates[0] != rates[-1] else
                   f"{fmt_pct(rates[0]) if rates else '-'} of the fitting sets' {POSITIVE_CONTROL} runs")
    fer = (lead.get("false_event_rate") or {}).get("controls") or {}
    within = fer.get("estimate") is not None and alpha is not None and fer["estimate"] <= alpha
    if within:
        verdict = f"within alpha = {alpha}"
    elif fer.get("ci_low") is not None and alpha is not None and fer["ci_low"] > alpha:
        verdict = f"above alpha = {alpha}, its whole interval too"
    else:
        verdict = f"above alpha = {alpha}, though its interval includes alpha"
    text = (f"At {point} the findings lead with {which}: on each fold's fitting set (the other folds' problems) "
            f"it fired on the most {POSITIVE_CONTROL} runs, the positive control ({flush_rates}). "
            f"On held-out controls it fired in {fer.get('k')} of "
            f"{fer.get('n')} runs ({fmt_pct(fer.get('estimate'))}, Wilson 95% CI {fmt_pct(fer.get('ci_low'))}–"
            f"{fmt_pct(fer.get('ci_high'))}), {verdict}.")
    return {"point": point, "calibrated": True, "events": names, "text": text,
            "cites": {"false_event_k": fer.get("k"), "false_event_n": fer.get("n"),
                      "false_event_rate": fer.get("estimate"), "false_event_ci_low": fer.get("ci_low"),
                      "false_event_ci_high": fer.get("ci_high"), "within_alpha": within}}


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
    counts = sorted(f["n_controls"] for f in folds)
    on = f"{counts[0]}" if counts[0] == counts[-1] else f"{counts[0]} to {counts[-1]}"
    text = (f"At {point}, adaptation events are calibrated at alpha = {alpha} on "
            f"{on} control runs per fold's fitting set ({len(folds)} folds, each fold's runs scored with thresholds "
            f"fitted on the other folds' controls; window "
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
    first, last = latencies.get(STRATEGY_LATENCY) or {}, latencies.get(f"{STRATEGY_LATENCY}_since_last") or {}
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
    latency_points = (calibration.get("lead") or {}).get("points", {})
    survival = (metrics.get("survival") or {}).get("points", {})
    paired_events = metrics.get("paired_events") or []
    points = sorted({r["point"] for r in pooled if r.get("point") not in (None, "-")}, key=point_sort_key)
    out_points, calibration_sentences, cannot = [], [], []

    for point in points:
        sentences = []
        for condition in FINDING_CONDITIONS:
            gap = _row(pooled, condition=condition, point=point, metric=GAP)
            if gap is None:
                continue
            lat_text, cites = _latency_clause(condition, point, latency_points.get(point), survival.get(point),
                                              paired_events)
            gap_text, gap_cites = _gap_clause(gap)
            pair_text, pair_cites = _paired_clause(paired, condition, point)
            text = f"{condition} at {point}: " + "; ".join(t for t in (lat_text, gap_text, pair_text) if t) + "."
            sentences.append({"condition": condition, "text": text, "cites": {**cites, **gap_cites, **pair_cites}})
        out_points.append({"point": point, "sentences": sentences})
        if point in latency_points:
            out_points[-1]["lead"] = _lead_sentence(point, latency_points[point], alpha)
        window_points = (calibration.get("events", {}).get("adaptation_latency") or {}).get("points", {})
        if point in window_points:
            calibration_sentences.append(_calibration_sentence(point, window_points[point], alpha))

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
        window_entry = (calibration.get("events", {}).get("adaptation_latency") or {}).get("points", {}).get(point)
        if entry is not None and not entry.get("calibrated"):
            reason = (window_entry or {}).get("reason") or entry.get("reason")
            cannot.append({"code": "latencies_uncalibrated", "point": point,
                           "text": f"At {point} detection and adaptation latencies are not reported: {reason}."})
        elif entry is not None:
            fer = (entry.get("false_event_rate") or {}).get("controls") or {}
            if fer.get("ci_low") is not None and alpha is not None and fer["ci_low"] > alpha:
                cannot.append({"code": "false_events_above_alpha", "point": point,
                               "text": f"At {point} held-out controls fired more often than alpha = {alpha} "
                                       f"({fmt(fer['estimate'])}, CI from {fmt(fer['ci_low'])}): the calibration "
                                       "does not transfer between the two halves of the problems."})
            flush = (entry.get("event_rate") or {}).get(POSITIVE_CONTROL) or {}
            if flush.get("estimate") is not None and flush["estimate"] < MIN_FLUSH_RATE:
                cannot.append({"code": "low_power", "point": point,
                               "text": f"At {point} the lead event fired on only {flush['k']} of {flush['n']} "
                                       f"{POSITIVE_CONTROL} runs, the positive control ({fmt_pct(flush['estimate'])}): "
                                       "a low event rate of another condition does not show that it did not adapt."})
        for condition in CHANGE_CONDITIONS:  # controls are meant not to adapt: censoring is their result
            row = _row(pooled, condition=condition, point=point, metric=LATENCY)
            share = (row or {}).get("share_censored")
            if share is not None and share > MAX_CENSORED_SHARE:
                cannot.append({"code": "censored_share_high", "point": point, "condition": condition,
                               "text": f"At {point}, {int(row['n_censored'])} of {int(row['n'])} {condition} runs never "
                                       f"adapted within their tokens ({share:.0%}): the median latency is "
                                       "unreached or rests on a few runs; read the incidence and restricted mean "
                                       "instead."})

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
        if point.get("lead"):
            lines.append(f"  * {point['lead']['text']}")
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
