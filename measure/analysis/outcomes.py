"""Outcome rates that mean something: conditional on problems the model solves uninterrupted.

A run's outcome (``adapted``, ``stale``, ``other``, ``unfinished``) only says something about
adaptation when the model can solve both problems without any change mid-way: if the oracle (B
from the start) gets B wrong, an injection run that gets B wrong says nothing about the
injection. Following the protocol of interrupt-lrm (Wu et al. 2025), :func:`outcome_summary`
reports

- the oracle's accuracy on B and the ignore run's accuracy on A (changed problems only: on an
  identical pair both are one number),
- the *solved* problems: oracle right on B and ignore right on A,
- per condition and point, the outcome rates over the solved problems only, with Wilson CIs;

and marks the whole section *uninformative*, printing no rates, when the oracle accuracy is
below :data:`ORACLE_ACCURACY_FLOOR` or fewer than :data:`MIN_SOLVED` problems are solved.
"""

from __future__ import annotations

import pandas as pd

from measure.analysis.stats import rate_ci
from measure.engine.results import REFERENCE_RUNS
from measure.metrics.answers import OUTCOMES

ORACLE_ACCURACY_FLOOR = 0.3  # below this the model mostly cannot solve B even with no change
MIN_SOLVED = 10  # fewer solved problems than this give intervals too wide to read


def outcome_summary(df: pd.DataFrame, reference_conditions=REFERENCE_RUNS) -> dict:
    """The ``outcomes`` section of ``metrics.json`` from the records frame (one row per record)."""
    if df.empty or "outcome" not in df:
        return {"informative": False, "reasons": ["no outcomes were recorded"], "n_problems": 0}
    changed = df[df["variation_type"].notna()]
    ignore_name, oracle_name = reference_conditions
    oracle = changed[changed["condition"] == oracle_name].set_index("problem_id")["outcome"]
    ignore = changed[changed["condition"] == ignore_name].set_index("problem_id")["outcome"]
    problems = sorted(set(oracle.index) & set(ignore.index))
    solved = [p for p in problems if oracle[p] == "adapted" and ignore[p] == "stale"]
    oracle_acc = rate_ci([oracle[p] == "adapted" for p in problems])
    ignore_acc = rate_ci([ignore[p] == "stale" for p in problems])
    unfinished = rate_ci(list(df["outcome"] == "unfinished"))
    reasons = []
    if not problems:
        reasons.append("no changed problem has both an oracle and an ignore run")
    elif oracle_acc["estimate"] < ORACLE_ACCURACY_FLOOR:
        reasons.append(f"the oracle answers B correctly on {oracle_acc['k']} of {oracle_acc['n']} changed problems "
                       f"({oracle_acc['estimate']:.0%}, below the {ORACLE_ACCURACY_FLOOR:.0%} floor): the model "
                       "cannot solve these problems even without a change, so outcomes say nothing about adaptation")
    if problems and len(solved) < MIN_SOLVED:
        reasons.append(f"only {len(solved)} problems are solved uninterrupted (oracle right on B and ignore right "
                       f"on A); at least {MIN_SOLVED} are needed for outcome rates")
    out = {
        "informative": not reasons,
        "reasons": reasons,
        "n_problems": len(problems),
        "oracle_accuracy_b": oracle_acc,
        "ignore_accuracy_a": ignore_acc,
        "unfinished_share": unfinished,
        "n_solved": len(solved),
        "solved_problems": solved,
        "floor": ORACLE_ACCURACY_FLOOR,
        "min_solved": MIN_SOLVED,
        "rates": [],
    }
    if reasons:
        return out
    runs = changed[changed["problem_id"].isin(solved) & ~changed["condition"].isin(reference_conditions)]
    for (condition, point), part in runs.groupby(["condition", "point"], sort=True):
        row = {"condition": condition, "point": point, "n": int(len(part))}
        for outcome in OUTCOMES:
            row[outcome] = rate_ci(list(part["outcome"] == outcome))
        out["rates"].append(row)
    return out
