"""The lead event across a run's records: survival summaries per condition and point, and exact
McNemar tests of paired event indicators.

Both read the columns :func:`measure.analysis.calibrated.calibrated_records` adds to each record
of a changed problem (``lead_latency``, ``lead_latency_censored``, ``lead_fired``) from a
:func:`measure.report.summary.records_frame`-style DataFrame.
"""

from __future__ import annotations

import pandas as pd

from measure.analysis.calibrated import LEAD
from measure.analysis.stats import DEFAULT_RESAMPLES, holm, mcnemar_exact
from measure.analysis.survival import INCIDENCE_TOKENS, survival_summary

#: Conditions summarised, in this order (references have no point of their own).
SURVIVAL_CONDITIONS = ("injection", "flush", "partial", "repeat", "noise")
#: Paired comparisons on the lead event's indicators, (condition, baseline), on the same problems:
#: does an injected update take the change in more often than content-free text of its length,
#: and less often than recomputing B (the positive control)?
EVENT_COMPARISONS = (("injection", "noise"), ("injection", "flush"))


def _horizon(part: pd.DataFrame) -> float | None:
    """The token budget after the change at a point: the longest follow-up of its runs (a run
    that never fired is censored at its tokens after the change)."""
    values = pd.to_numeric(part.get(LEAD), errors="coerce").dropna()
    return float(values.max()) if len(values) else None


def lead_survival(df: pd.DataFrame, *, confidence: float = 0.95, n_resamples: int = DEFAULT_RESAMPLES,
                  seed: int = 0) -> dict:
    """``{"event", "incidence_tokens", "points": {point: {"horizon", "conditions": {condition:
    survival_summary}}}}`` over the rows of ``df`` (pass changed problems only)."""
    out = {"event": LEAD, "incidence_tokens": list(INCIDENCE_TOKENS), "points": {}}
    if df.empty or LEAD not in df:
        return out
    rows = df[df["point"].notna() & (df["point"] != "-")]
    for point in sorted(rows["point"].unique()):
        part = rows[rows["point"] == point]
        horizon = _horizon(part)
        if horizon is None:
            continue
        conditions = {}
        for condition in SURVIVAL_CONDITIONS:
            group = part[(part["condition"] == condition) & part[LEAD].notna()]
            if group.empty:
                continue
            conditions[condition] = survival_summary(
                group[LEAD].tolist(), [not bool(c) for c in group[f"{LEAD}_censored"]], horizon,
                group["problem_id"].tolist(), confidence=confidence, n_resamples=n_resamples, seed=seed)
        out["points"][point] = {"horizon": horizon, "conditions": conditions}
    return out


def paired_event_tests(df: pd.DataFrame, comparisons=EVENT_COMPARISONS) -> list[dict]:
    """Exact McNemar test of the lead event's indicators per (condition, baseline) and point, on
    the problems both were measured on; ``p_holm``: Holm over every row."""
    rows: list[dict] = []
    if df.empty or "lead_fired" not in df:
        return rows
    data = df[df["point"].notna() & (df["point"] != "-") & df["lead_fired"].notna()]
    for point in sorted(data["point"].unique()):
        part = data[data["point"] == point]
        for condition, baseline in comparisons:
            x = part[part["condition"] == condition][["problem_id", "lead_fired"]]
            y = part[part["condition"] == baseline][["problem_id", "lead_fired"]]
            merged = x.merge(y, on="problem_id", suffixes=("", "_base"))
            if merged.empty:
                continue
            rows.append({"condition": condition, "baseline": baseline, "point": point, "metric": "lead_fired",
                         **mcnemar_exact(merged["lead_fired"].tolist(), merged["lead_fired_base"].tolist())})
    for row, adjusted in zip(rows, holm([row["p_exact"] for row in rows])):
        row["p_holm"] = adjusted
    return rows
