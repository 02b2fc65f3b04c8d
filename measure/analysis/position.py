"""When the update arrives: per-point summaries of a position sweep, a trend test across points,
and the split by the model's notes (:mod:`measure.metrics.notes`).

The literature disagrees on the direction: "Are Large Reasoning Models Interruptible?" (arXiv
2510.11713) finds late updates worse, "Are Reasoning LLMs Robust to Interventions on Their CoT?"
(arXiv 2602.07470) finds early interventions recovered from less. A run measured at
:data:`MIN_POINTS` or more numeric points of one kind (fractions ``f0.3`` of the ignore run, or
token counts ``t16``) gets the ``by_position`` section of ``metrics.json``
(:func:`position_section`): per non-reference condition and point,

- the outcome shares (adapted / stale / other / unfinished) over the problems solved
  uninterrupted (oracle right on B, ignore right on A: :mod:`measure.analysis.outcomes`);
- the lead event (:data:`LEAD_EVENT`, a calibrated latency column of the records): its rate within
  ``tau`` tokens of the change and its restricted mean latency up to ``tau`` (Kaplan-Meier,
  lifelines), over the changed problems;
- the adaptation gap (mean, bootstrap CI), over the changed problems;

and per condition a trend test across points of "stale" and of "event within tau" that respects
the clustering by problem (the same problem appears at every point): a within-problem permutation
test (exact whatever the number of problems; Holm-adjusted over the section's tests; it decides
the direction), and for the size of the effect a GEE logistic regression (statsmodels,
exchangeable working correlation, bias-reduced sandwich covariance for few clusters) on the
position, alone and with the notes flag as a covariate. Problems measured at only some points stay
in and are listed with the reasons.

Why one horizon ``tau`` (:data:`HORIZON`, the adaptation gap's 20 tokens): a late change leaves
fewer tokens of the budget, so "an event anywhere in the run" would fall with position by
construction. A run that ended by itself (end of sequence) with no event has no event, ever: it
counts as none by ``tau`` and stays at risk to ``tau`` in the Kaplan-Meier curve. Only a run cut by
the token limit before ``tau`` with no event is unknown: it is left out of the rate (counted as
``n_unknown``) and censored where it was cut. The restricted mean latency is the expected
min(latency, tau): the Kaplan-Meier curve's area up to ``tau``.

:func:`notes_split` gives, for any run (one point or many), the outcomes and event rates split by
the notes flag per condition and point, with Fisher exact tests. Per condition it pools the points
with a Mantel-Haenszel odds ratio stratified by point (:func:`mantel_haenszel`). The flag is a
covariate, never a filter: runs whose flag is unknown (records written before it existed) are
counted apart.
"""

from __future__ import annotations

import math
import re
import warnings
from collections import defaultdict

import numpy as np
import pandas as pd
import statsmodels.api as sm
from lifelines import KaplanMeierFitter
from lifelines.utils import restricted_mean_survival_time
from scipy import stats as scipy_stats
from statsmodels.stats.contingency_tables import StratifiedTable

from measure.analysis.calibrated import LEAD
from measure.analysis.outcomes import outcome_summary
from measure.analysis.stats import holm, json_safe, mean_ci, rate_ci
from measure.engine.results import REFERENCE_RUNS
from measure.metrics.answers import OUTCOMES
from measure.metrics.latency import DEFAULT_GAP_TOKENS
from measure.records.record import Record

#: The event of the section: the run's pre-registered lead event (docs/METHOD.md, "The lead event").
#: A record's calibrated metrics carry ``<event>`` (1-based tokens after the change) and
#: ``<event>_censored``.
LEAD_EVENT = LEAD
GAP = "adaptation_gap"
MIN_POINTS = 3  # a trend needs three points at least
HORIZON = DEFAULT_GAP_TOKENS  # tau: the tokens after the change the event is looked for in
CONFIDENCE = 0.95
#: A fitted log-odds change across a covariate's range beyond this is separation (an estimate
#: running off to infinity), not an effect: the fit is reported as having no estimate.
MAX_LOG_ODDS = 10.0
MIN_EACH = 3  # runs with and without the response a GEE fit needs at least (else: no estimate)
N_PERMUTATIONS = 4999
_POINT_LABEL = re.compile(r"([tf])([0-9.]+)")


def point_position(label) -> tuple[str, float] | None:
    """``("f", 0.3)`` for ``f0.3``, ``("t", 16.0)`` for ``t16``; None for a content-timed point or ``-``."""
    match = _POINT_LABEL.fullmatch(str(label))
    return (match.group(1), float(match.group(2))) if match else None


def _known(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def position_frame(records: list[Record], event: str = LEAD_EVENT) -> pd.DataFrame:
    """One row per non-reference run on a changed problem at a numeric point: ``problem_id``,
    ``condition``, ``point``, ``kind`` (``f``/``t``), ``position``, ``outcome``, ``latency``,
    ``censored``, ``ended`` (the run stopped by itself, not by the token limit), ``gap``, ``notes``
    (True / False / None: unknown)."""
    rows = []
    for record in records:
        located = point_position(record.point)
        if located is None or record.condition in REFERENCE_RUNS or record.variation_type is None:
            continue
        metrics = record.metrics
        rows.append({
            "problem_id": record.problem_id, "condition": record.condition, "point": record.point,
            "kind": located[0], "position": located[1], "outcome": metrics.get("outcome"),
            "latency": metrics.get(event), "censored": metrics.get(f"{event}_censored"),
            "ended": (metrics.get("stop_reason") or record.stop_reason) == "eos", "gap": metrics.get(GAP),
            "notes": record.notes_before_change,
        })
    columns = ["problem_id", "condition", "point", "kind", "position", "outcome", "latency", "censored",
               "ended", "gap", "notes"]
    return pd.DataFrame(rows, columns=columns)


def solved_problems(records: list[Record]) -> tuple[list[str], dict]:
    """The problems solved uninterrupted and the outcomes section they come from."""
    frame = pd.DataFrame([{"problem_id": r.problem_id, "condition": r.condition, "point": r.point,
                           "variation_type": r.variation_type, "outcome": r.metrics.get("outcome")} for r in records])
    summary = outcome_summary(frame) if len(frame) else {"solved_problems": [], "informative": False,
                                                         "reasons": ["no records"]}
    return list(summary.get("solved_problems", [])), summary


def event_by(latency, censored, tau: int, ended: bool = False):
    """True (an event at or before ``tau``), False (none by ``tau``: the run went on that long, or
    ended by itself) or None (no event, cut by the token limit before ``tau``; or unknown)."""
    if not (_known(latency) and _known(censored)):
        return None
    if not censored:
        return bool(latency <= tau)
    return False if ended or latency >= tau else None


def restricted_mean(latencies, censored, tau: int, ended=None, confidence: float = CONFIDENCE) -> dict:
    """Restricted mean latency up to ``tau`` (the area under lifelines' Kaplan-Meier curve) with a
    normal CI: ``{estimate, ci_low, ci_high, n, n_events, tau}``. A run with no event that ``ended``
    by itself never adapts: it stays at risk up to ``tau`` (censored at ``tau``, not where it stopped).

    The variance is the Greenwood-type sum sum_j A_j^2 d_j / (n_j (n_j - d_j)) over event times
    t_j <= tau, A_j the curve's area from t_j to tau (Klein & Moeschberger, section 4.5). Not
    lifelines' ``return_variance=True``: that is the variance of min(latency, tau) itself (a spread
    of the runs, not the estimate's uncertainty), and takes about ten seconds by quadrature."""
    ended = [False] * len(list(latencies)) if ended is None else list(ended)
    pairs = [(max(float(v), float(tau)) if c and stopped else float(v), bool(c))
             for v, c, stopped in zip(latencies, censored, ended) if _known(v) and _known(c)]
    out = {"estimate": None, "ci_low": None, "ci_high": None, "n": len(pairs),
           "n_events": sum(not c for _, c in pairs), "tau": tau}
    if not pairs or tau is None:
        return out
    durations, observed = zip(*[(v, not c) for v, c in pairs])
    fitter = KaplanMeierFitter().fit(durations, event_observed=observed)
    mean = float(restricted_mean_survival_time(fitter, t=tau))
    out.update(estimate=mean, ci_low=mean, ci_high=mean)
    table = fitter.event_table
    table = table[(table.index <= tau) & (table["observed"] > 0)]
    if len(table):
        times = np.asarray(table.index, dtype=float)
        area_after = [mean - _area_until(fitter, t) for t in times]
        at_risk, events = table["at_risk"].to_numpy(float), table["observed"].to_numpy(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(at_risk > events, np.square(area_after) * events / (at_risk * (at_risk - events)), 0.0)
        half = scipy_stats.norm.ppf(0.5 + confidence / 2) * math.sqrt(float(terms.sum()))
        out.update(ci_low=float(max(0.0, mean - half)), ci_high=float(min(float(tau), mean + half)))
    return out


def _area_until(fitter: KaplanMeierFitter, t: float) -> float:
    """The area under the fitted Kaplan-Meier step curve from 0 to ``t``."""
    curve = fitter.survival_function_.iloc[:, 0]
    steps = np.append(np.asarray(curve.index, dtype=float), np.inf)
    widths = np.clip(np.minimum(steps[1:], t) - steps[:-1], 0.0, None)
    return float(np.sum(curve.to_numpy(float) * widths))


def gee_logistic(frame: pd.DataFrame, response: str, covariates: tuple[str, ...] = ("position",),
                 confidence: float = CONFIDENCE) -> dict:
    """GEE logistic regression of the 0/1 column ``response`` on ``covariates``, clustered by
    ``problem_id`` with an exchangeable working correlation and the bias-reduced (Mancl-DeRouen)
    sandwich covariance. Per covariate: the log-odds slope, its CI and p; or ``reason`` when the
    data cannot support a fit (no variation in the response or a covariate, one cluster, no
    convergence)."""
    data = frame.dropna(subset=[response, *covariates])
    y = data[response].astype(float).to_numpy()
    out = {"response": response, "covariates": list(covariates), "n_runs": int(len(data)),
           "n_problems": int(data["problem_id"].nunique()), "n_positive": int(y.sum()) if len(y) else 0,
           "method": "GEE logistic, exchangeable working correlation, clustered by problem, bias-reduced sandwich SE",
           "terms": {}, "reason": None}
    if not len(data):
        out["reason"] = f"no run with a known {response}"
    elif out["n_problems"] < 2:
        out["reason"] = "fewer than two problems"
    elif min(y.sum(), len(y) - y.sum()) < MIN_EACH:
        out["reason"] = (f"too few runs on one side: {int(y.sum())} with {response} and {int(len(y) - y.sum())} "
                         f"without (a fit needs {MIN_EACH} of each)")
    elif constant := [c for c in covariates if data[c].astype(float).nunique() < 2]:
        out["reason"] = f"no variation in {', '.join(constant)}"
    if out["reason"]:
        return out
    exog = sm.add_constant(data[list(covariates)].astype(float).to_numpy(), has_constant="add")
    model = sm.GEE(y, exog, groups=data["problem_id"].to_numpy(), family=sm.families.Binomial(),
                   cov_struct=sm.cov_struct.Exchangeable())
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = model.fit(cov_type="bias_reduced")
    except (np.linalg.LinAlgError, ValueError, ZeroDivisionError) as error:
        out["reason"] = f"the fit failed: {error}"
        return out
    notes = sorted({str(w.message).splitlines()[0] for w in caught})
    params, bse = np.asarray(result.params), np.asarray(result.bse)
    if not (np.all(np.isfinite(params)) and np.all(np.isfinite(bse))):
        out["reason"] = "the fit did not converge (infinite or undefined estimates: separation)"
        return out
    spans = [float(np.ptp(data[c].astype(float).to_numpy())) for c in covariates]
    if any(abs(coef) * span > MAX_LOG_ODDS for coef, span in zip(params[1:], spans)):
        out["reason"] = ("separation: an odds ratio across a covariate's range beyond e^"
                         f"{MAX_LOG_ODDS} (one side of it is all 0 or all 1)")
        return out
    z = scipy_stats.norm.ppf(0.5 + confidence / 2)
    for index, name in enumerate(covariates, start=1):
        coef, se = float(params[index]), float(bse[index])
        out["terms"][name] = {"coef": coef, "se": se, "ci_low": coef - z * se, "ci_high": coef + z * se,
                              "p": float(2 * scipy_stats.norm.sf(abs(coef / se))) if se > 0 else None}
    out["fit_warnings"] = notes
    return out


def permutation_trend(frame: pd.DataFrame, response: str, seed: int = 0,
                      n_permutations: int = N_PERMUTATIONS) -> dict:
    """Within-problem permutation test of a trend of the 0/1 ``response`` in ``position``: the
    statistic is sum(position x response) centred on its expectation under permutation; each
    problem's positions are shuffled among its own runs (the problem is the unit that repeats, so
    problem effects cancel). Two-sided p = (1 + #|T_perm| >= |T_obs|) / (1 + permutations); the
    sign of ``statistic`` gives the direction (positive: more of ``response`` later). Exact under
    the null of no position effect within problems, whatever the number of problems."""
    data = frame.dropna(subset=[response, "position"])
    out = {"response": response, "statistic": None, "p": None, "n_permutations": n_permutations,
           "n_runs": int(len(data)), "n_problems": int(data["problem_id"].nunique())}
    groups = [(part["position"].astype(float).to_numpy(), part[response].astype(float).to_numpy())
              for _, part in data.groupby("problem_id") if len(part) > 1]
    if not groups:
        return out
    rng = np.random.default_rng(seed)
    observed, permuted = 0.0, np.zeros(n_permutations)
    for positions, values in groups:
        centred = positions - positions.mean()
        observed += float(centred @ values)
        shuffled = rng.permuted(np.tile(values, (n_permutations, 1)), axis=1)
        permuted += shuffled @ centred
    extreme = np.sum(np.abs(permuted) >= abs(observed) - 1e-12)
    out.update(statistic=observed, p=float((1 + extreme) / (1 + n_permutations)))
    return out


def _outcome_shares(part: pd.DataFrame) -> dict:
    return {outcome: rate_ci(list(part["outcome"] == outcome)) for outcome in OUTCOMES}


def _event_rate(part: pd.DataFrame, tau: int) -> dict:
    known = part["by_tau"].dropna()
    return {**rate_ci(list(known)), "n_unknown": int(len(part) - len(known)), "tau": tau}


def _with_event_column(frame: pd.DataFrame, tau: int) -> pd.DataFrame:
    frame = frame.copy()
    frame["by_tau"] = [event_by(v, c, tau, e) for v, c, e in zip(frame["latency"], frame["censored"], frame["ended"])]
    frame["stale"] = (frame["outcome"] == "stale").astype(float).where(frame["outcome"].notna())
    frame["event"] = frame["by_tau"].map(lambda v: None if v is None else float(v))
    frame["notes_known"] = frame["notes"].map(lambda v: None if v is None else float(bool(v)))
    return frame


def coverage(frame: pd.DataFrame, points: list[str], skipped: list[dict]) -> list[dict]:
    """Problems measured at only some of the section's points: which points they lack and why
    (the reasons of ``skipped.jsonl``, when the run recorded one)."""
    reasons: dict[tuple[str, str], str] = {}
    for entry in skipped or []:
        if entry.get("problem_id") is not None and entry.get("point") is not None:
            reasons.setdefault((entry["problem_id"], entry["point"]), entry.get("reason") or "")
    measured = {problem_id: set(part["point"]) for problem_id, part in frame.groupby("problem_id")}
    out = []
    for problem_id in sorted(set(measured) | {pid for pid, point in reasons if point in points}):
        missing = [p for p in points if p not in measured.get(problem_id, set())]
        if missing:
            out.append({"problem_id": problem_id, "missing_points": missing,
                        "reasons": {p: reasons.get((problem_id, p), "no record") for p in missing}})
    return out


def _section_points(frame: pd.DataFrame) -> tuple[str | None, list[str]]:
    """The kind of point (fractions first) with the most distinct points, and its points in order."""
    best: tuple[str | None, list[str]] = (None, [])
    for kind in ("f", "t"):
        part = frame[frame["kind"] == kind]
        points = sorted(set(part["point"]), key=lambda p: point_position(p)[1])
        if len(points) > len(best[1]):
            best = (kind, points)
    return best


def position_section(records: list[Record], skipped: list[dict] | None = None, event: str = LEAD_EVENT,
                     seed: int = 0, n_resamples: int = 2000, horizon: int = HORIZON) -> dict:
    """The ``by_position`` section of ``metrics.json`` from calibrated records (see the module
    docstring); ``{"available": False, "reason": ...}`` for a run with fewer than
    :data:`MIN_POINTS` numeric points of one kind."""
    frame = position_frame(records, event)
    kind, points = _section_points(frame)
    if len(points) < MIN_POINTS:
        return {"available": False, "event": event,
                "reason": f"{len(points)} numeric injection point(s) of one kind; a trend needs {MIN_POINTS} or more"}
    frame = frame[frame["kind"] == kind]
    tau = horizon
    frame = _with_event_column(frame, tau)
    solved, outcomes = solved_problems(records)
    on_solved = frame[frame["problem_id"].isin(solved)]
    rows, trends = [], []
    conditions = sorted(set(frame["condition"]), key=_condition_order)
    for condition in conditions:
        runs, solved_runs = frame[frame["condition"] == condition], on_solved[on_solved["condition"] == condition]
        for point in points:
            part, solved_part = runs[runs["point"] == point], solved_runs[solved_runs["point"] == point]
            rows.append({
                "condition": condition, "point": point, "position": point_position(point)[1],
                "n_changed": int(len(part)), "n_solved": int(len(solved_part)),
                "outcomes": _outcome_shares(solved_part), "event": _event_rate(part, tau),
                "restricted_mean_latency": restricted_mean(part["latency"], part["censored"], tau, part["ended"]),
                "gap": mean_ci(pd.to_numeric(part["gap"], errors="coerce"), CONFIDENCE, n_resamples, seed),
                "notes_share": rate_ci(list(part["notes"])),
            })
        for response, data in (("stale", solved_runs), ("event", runs)):
            trends.append({"condition": condition, "response": response, "position_range": _range(points),
                           "permutation": permutation_trend(data, response, seed),
                           "trend": gee_logistic(data, response),
                           "with_notes": gee_logistic(data, response, ("position", "notes_known"))})
    _adjust(trends)
    return json_safe({
        "available": True, "event": event, "point_kind": "fraction of the ignore run" if kind == "f" else "tokens",
        "points": points, "tau": tau, "conditions": conditions,
        "solved_problems": solved, "n_solved": len(solved), "outcomes_informative": outcomes.get("informative", False),
        "outcomes_reasons": outcomes.get("reasons", []),
        "n_changed_problems": int(frame["problem_id"].nunique()),
        "rows": rows, "trends": trends, "partial_problems": coverage(frame, points, skipped or []),
        "notes_unknown_runs": int(frame["notes"].isna().sum()),
    })


def _range(points: list[str]) -> float:
    positions = [point_position(p)[1] for p in points]
    return max(positions) - min(positions)


def _adjust(trends: list[dict]) -> None:
    """Holm over the section's permutation tests (conditions x responses)."""
    adjusted = holm([entry["permutation"]["p"] for entry in trends])
    for entry, p_holm in zip(trends, adjusted):
        entry["permutation"]["p_holm"] = p_holm


def _condition_order(name: str) -> tuple:
    order = ("injection", "flush", "partial", "repeat", "noise")
    return (order.index(name) if name in order else len(order), name)


def fisher(flags, values) -> dict:
    """Fisher's exact test of a 0/1 outcome against the notes flag (unknown flags left out):
    ``{with_notes: rate, without_notes: rate, odds_ratio, p}``."""
    table = defaultdict(list)
    for flag, value in zip(flags, values):
        if _known(flag) and _known(value):
            table[bool(flag)].append(bool(value))
    with_notes, without = rate_ci(table[True]), rate_ci(table[False])
    out = {"with_notes": with_notes, "without_notes": without, "odds_ratio": None, "p": None}
    if with_notes["n"] and without["n"]:
        counts = [[with_notes["k"], with_notes["n"] - with_notes["k"]], [without["k"], without["n"] - without["k"]]]
        result = scipy_stats.fisher_exact(counts)
        out.update(odds_ratio=float(result.statistic), p=float(result.pvalue))
    return out


def notes_split(records: list[Record], event: str = LEAD_EVENT) -> dict:
    """The ``notes`` section: per non-reference condition and point (any point), the runs on
    changed problems split by the notes flag: outcome counts over the problems solved
    uninterrupted, Fisher tests of adapted and of stale, and the event rate (an event anywhere in
    the run: a single point has no horizon to align) with its Fisher test."""
    rows = []
    solved, _ = solved_problems(records)
    for record_point, group in _by_condition_point(records):
        condition, point = record_point
        flags = [r.notes_before_change for r in group]
        on_solved = [r for r in group if r.problem_id in solved]
        solved_flags = [r.notes_before_change for r in on_solved]
        outcome = [r.metrics.get("outcome") for r in on_solved]
        censored = [r.metrics.get(f"{event}_censored") for r in group]
        counts = {str(flag): dict(sorted(pd.Series([o for f, o in zip(solved_flags, outcome) if _same(f, flag)],
                                                   dtype=object).value_counts().items()))
                  for flag in (True, False, None)}
        rows.append({
            "condition": condition, "point": point, "n_runs": len(group), "n_solved": len(on_solved),
            "n_notes": sum(1 for f in flags if f is True), "n_unknown": sum(1 for f in flags if f is None),
            "outcome_counts": counts,
            "adapted": fisher(solved_flags, [None if o is None else o == "adapted" for o in outcome]),
            "stale": fisher(solved_flags, [None if o is None else o == "stale" for o in outcome]),
            "event": fisher(flags, [None if c is None else not c for c in censored]),
        })
    pooled = [mantel_haenszel([r for r in rows if r["condition"] == condition], outcome)
              for condition in dict.fromkeys(r["condition"] for r in rows) for outcome in ("adapted", "stale")]
    return json_safe({"event": event, "rows": rows, "pooled": pooled, "solved_problems": len(solved),
                      "definition": ("notes: the text generated before the change already holds a quantity the "
                                     "change affects (a story: an answer to A); measure.metrics.notes")})


def mantel_haenszel(rows: list[dict], outcome: str) -> dict:
    """One condition's notes split of ``outcome`` pooled over its points, stratified by point
    (the flag rises with the position, so an unstratified table would mix the two): the
    Mantel-Haenszel odds ratio (with notes vs without) with its CI and the test of odds ratio 1.
    Points where every known flag is the same carry no information and are left out."""
    tables = []
    for row in rows:
        with_notes, without = row[outcome]["with_notes"], row[outcome]["without_notes"]
        if with_notes["n"] and without["n"]:
            tables.append(np.array([[with_notes["k"], with_notes["n"] - with_notes["k"]],
                                    [without["k"], without["n"] - without["k"]]], dtype=float))
    out = {"condition": rows[0]["condition"] if rows else None, "outcome": outcome, "n_points": len(tables),
           "n_runs": int(sum(t.sum() for t in tables)), "odds_ratio": None, "ci_low": None, "ci_high": None,
           "p": None, "with_notes": _pooled_rate(rows, outcome, "with_notes"),
           "without_notes": _pooled_rate(rows, outcome, "without_notes")}
    if not tables:
        return out
    table = StratifiedTable(tables)
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")
        low, high = table.oddsratio_pooled_confint()
        out.update(odds_ratio=float(table.oddsratio_pooled), ci_low=float(low), ci_high=float(high),
                   p=float(table.test_null_odds().pvalue))
    return out


def _pooled_rate(rows: list[dict], outcome: str, side: str) -> dict:
    k = sum(row[outcome][side]["k"] for row in rows)
    n = sum(row[outcome][side]["n"] for row in rows)
    return rate_ci([True] * k + [False] * (n - k))


def _same(flag, wanted) -> bool:
    return flag is None if wanted is None else flag is wanted


def _by_condition_point(records: list[Record]):
    groups: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for record in records:
        if record.condition in REFERENCE_RUNS or record.variation_type is None or record.point == "-":
            continue
        groups[(record.condition, record.point)].append(record)
    return sorted(groups.items(), key=lambda item: (_condition_order(item[0][0]), str(item[0][1])))
