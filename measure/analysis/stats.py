"""Statistics over per-run summary rows: CIs, survival of censored latencies, paired tests.

Everything here is built on scipy.stats:

- :func:`mean_ci`: mean with a seeded ``scipy.stats.bootstrap`` CI (BCa by default; percentile
  on request). Fewer than 2 values: no CI. Constant values: the CI is the point itself.
- :func:`rate_ci`: share of True with the Wilson score CI of ``scipy.stats.binomtest``.
- :func:`km_median`: Kaplan-Meier median of right-censored latencies via
  ``scipy.stats.CensoredData`` + ``scipy.stats.ecdf``. Median = smallest t with S(t) <= 0.5
  (for uncensored data the lower sample median, ``np.quantile(method="inverted_cdf")``); None
  when S never drops to 0.5 (``median_reached=False``: most runs never adapt). CI: inversion of
  the pointwise confidence band of S(t) from ``ecdf(...).sf.confidence_interval`` (``log-log``
  by default), i.e. [first t with S_low(t) <= 0.5, first t with S_high(t) <= 0.5], the
  Brookmeyer-Crowley construction R's ``survfit`` prints; an upper bound of None means the CI
  is open (not reached within follow-up).
- :func:`paired_test`: paired t-test (``ttest_rel``) and Wilcoxon signed-rank (``wilcoxon``)
  with Cohen's dz and the matched-pairs rank-biserial correlation.
- :func:`mcnemar_exact`: exact McNemar test of paired event indicators (``binomtest`` on the
  discordant pairs).
- :func:`holm`, :func:`benjamini_hochberg` (``false_discovery_control``) multiple-testing
  corrections; None p-values pass through as None.
- :func:`calibrate_threshold`: a quantile of control values (e.g. the 95th percentile of KL(run
  || ignore) under the ``noise`` condition) to use as a detection threshold.
- :func:`aggregate` and :func:`paired_comparisons` take the DataFrame of ``summarize_run`` rows.

Every dict returned here is JSON-safe (NaN and inf become None; numpy scalars become Python).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from measure.metrics.registry import MetricSpec, spec_for

GROUP_COLUMNS = ("condition", "variation_type", "point")
DEFAULT_RESAMPLES = 2000


# ------------------------------------------------------------------------ JSON safety


def json_safe(obj):
    """Recursively convert numpy scalars/arrays to Python and NaN/inf to None."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [json_safe(v) for v in obj.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    if obj is pd.NA or obj is pd.NaT:
        return None
    return obj


def to_records(df: pd.DataFrame) -> list[dict]:
    """DataFrame rows as JSON-safe dicts."""
    return [json_safe(r) for r in df.to_dict(orient="records")]


def _finite(values) -> np.ndarray:
    x = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype=np.float64)
    return x[np.isfinite(x)]


# ------------------------------------------------------------------------ means and rates


#: Above this many values a mean's CI is the percentile bootstrap's, not BCa's: BCa's acceleration
#: comes from a jackknife that scipy computes as n resamples of n - 1 values (n squared numbers;
#: 225 MB and most of the report's time for 5,300 runs of one condition), and with that many values
#: the two intervals agree closely. Resamples are then drawn in batches of about a million numbers.
BCA_MAX_N = 1000
_BATCH_NUMBERS = 1_000_000


def mean_ci(values, confidence: float = 0.95, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0, method: str = "BCa") -> dict:
    """Mean and bootstrap CI of the finite values: ``{estimate, ci_low, ci_high, n}`` (BCa up to
    :data:`BCA_MAX_N` values, percentile above)."""
    x = _finite(values)
    out = {"estimate": float(x.mean()) if x.size else None, "ci_low": None, "ci_high": None, "n": int(x.size)}
    if x.size < 2:
        return out
    if np.ptp(x) == 0:
        out["ci_low"] = out["ci_high"] = float(x[0])
        return out
    large = x.size > BCA_MAX_N
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.bootstrap(
            (x,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
            method="percentile" if large else method, vectorized=True, rng=np.random.default_rng(seed),
            batch=max(1, _BATCH_NUMBERS // x.size) if large else None,
        )
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (math.isfinite(lo) and math.isfinite(hi)) and method != "percentile":
        return mean_ci(x, confidence, n_resamples, seed, "percentile")
    return json_safe({**out, "ci_low": lo, "ci_high": hi})


def rate_ci(values, confidence: float = 0.95) -> dict:
    """Share of True among non-missing values, Wilson CI: ``{estimate, ci_low, ci_high, n, k}``."""
    s = pd.Series(values, dtype=object).dropna()
    s = s[[not (isinstance(v, float) and math.isnan(v)) for v in s]]
    n = int(len(s))
    k = int(sum(bool(v) for v in s))
    if n == 0:
        return {"estimate": None, "ci_low": None, "ci_high": None, "n": 0, "k": 0}
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return {"estimate": k / n, "ci_low": float(ci.low), "ci_high": float(ci.high), "n": n, "k": k}


# ------------------------------------------------------------------------ survival


def _first_at_or_below(times: np.ndarray, surv: np.ndarray, level: float = 0.5) -> float | None:
    hit = np.flatnonzero(surv <= level + 1e-12)
    return float(times[hit[0]]) if hit.size else None


def km_median(values, censored, confidence: float = 0.95, ci_method: str = "log-log") -> dict:
    """Kaplan-Meier median of right-censored latencies with a CI (see module docstring).

    ``values``: latencies (censoring times where ``censored``); rows where either is missing
    are skipped. Returns ``{estimate, ci_low, ci_high, n, n_events, n_censored, share_censored,
    median_reached}``.
    """
    v = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype=np.float64)
    c = pd.Series(censored, dtype=object).to_numpy()
    keep = np.isfinite(v) & np.array([x is not None and not (isinstance(x, float) and math.isnan(x)) for x in c], dtype=bool)
    v, c = v[keep], c[keep].astype(bool)
    n, n_cens = int(v.size), int(c.sum())
    out = {
        "estimate": None, "ci_low": None, "ci_high": None, "n": n, "n_events": n - n_cens,
        "n_censored": n_cens, "share_censored": (n_cens / n) if n else None, "median_reached": False,
    }
    if n - n_cens == 0:
        return out
    data = stats.CensoredData(uncensored=v[~c], right=v[c]) if n_cens else v[~c]
    res = stats.ecdf(data)
    t, s = res.sf.quantiles, res.sf.probabilities
    out["estimate"] = _first_at_or_below(t, s)
    out["median_reached"] = out["estimate"] is not None
    if n >= 2:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            ci = res.sf.confidence_interval(confidence, method=ci_method)
            low = np.asarray(ci.low.probabilities, dtype=np.float64)
            high = np.asarray(ci.high.probabilities, dtype=np.float64)
        low = np.where(np.isnan(low), s, low)  # undefined band (S = 0 or 1): use the estimate
        high = np.where(np.isnan(high), s, high)
        out["ci_low"] = _first_at_or_below(t, low)
        out["ci_high"] = _first_at_or_below(t, high)
    return out


def censored_share(censored) -> float | None:
    """Share of runs whose event was never observed (e.g. never adapted)."""
    c = pd.Series(censored, dtype=object).dropna()
    return float(c.astype(bool).mean()) if len(c) else None


# ------------------------------------------------------------------------ paired tests


def cohen_dz(diff) -> float | None:
    """Mean of paired differences over their SD (ddof=1); None if undefined."""
    d = _finite(diff)
    if d.size < 2:
        return None
    sd = d.std(ddof=1)
    return float(d.mean() / sd) if sd > 0 else None


def rank_biserial(diff) -> float | None:
    """Matched-pairs rank-biserial r = (R+ - R-) / (R+ + R-), zero differences dropped."""
    d = _finite(diff)
    d = d[d != 0]
    if d.size == 0:
        return None
    ranks = stats.rankdata(np.abs(d))
    pos, neg = ranks[d > 0].sum(), ranks[d < 0].sum()
    return float((pos - neg) / (pos + neg))


def paired_test(x, y, wilcoxon_method: str = "auto") -> dict:
    """Paired comparison of ``x`` (condition) against ``y`` (baseline), same problems, same order.

    Pairs with a missing side are dropped. Returns ``{n, mean_diff, median_diff, t_stat, t_p,
    wilcoxon_stat, wilcoxon_p, cohen_dz, rank_biserial}``; diff = x - y. Tests that are
    undefined (n < 2, all differences zero) give None. ``wilcoxon_method`` goes to
    ``scipy.stats.wilcoxon``: its "auto" is exact without ties, an exact permutation test with
    ties for n <= 13 (about a second per call on a slow CPU), asymptotic otherwise; pass
    "asymptotic" for speed on large tables.
    """
    x = pd.to_numeric(pd.Series(x, dtype=object), errors="coerce").to_numpy(dtype=np.float64)
    y = pd.to_numeric(pd.Series(y, dtype=object), errors="coerce").to_numpy(dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    d = x - y
    out = {"n": int(d.size), "mean_diff": None, "median_diff": None, "t_stat": None, "t_p": None,
           "wilcoxon_stat": None, "wilcoxon_p": None, "cohen_dz": None, "rank_biserial": None}
    if d.size == 0:
        return out
    out["mean_diff"], out["median_diff"] = float(d.mean()), float(np.median(d))
    if d.size >= 2 and np.ptp(d) > 0:
        t = stats.ttest_rel(x, y)
        out["t_stat"], out["t_p"] = float(t.statistic), float(t.pvalue)
    if np.any(d != 0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            w = stats.wilcoxon(x, y, method=wilcoxon_method)
        out["wilcoxon_stat"], out["wilcoxon_p"] = float(w.statistic), float(w.pvalue)
    out["cohen_dz"] = cohen_dz(d)
    out["rank_biserial"] = rank_biserial(d)
    return json_safe(out)


def mcnemar_exact(x, y) -> dict:
    """Exact McNemar test of paired event indicators (``x``: the condition, ``y``: the baseline,
    same problems, same order; pairs with a missing side are dropped): the two-sided binomial test
    of the discordant pairs against 1/2 (``scipy.stats.binomtest``). Returns ``{n, both,
    only_condition, only_baseline, neither, rate_condition, rate_baseline, p_exact}``; p is 1 when
    no pair is discordant."""
    pairs = [(bool(a), bool(b)) for a, b in zip(x, y)
             if not (a is None or b is None or (isinstance(a, float) and math.isnan(a))
                     or (isinstance(b, float) and math.isnan(b)))]
    n = len(pairs)
    only_x = sum(a and not b for a, b in pairs)
    only_y = sum(b and not a for a, b in pairs)
    both = sum(a and b for a, b in pairs)
    discordant = only_x + only_y
    return {"n": n, "both": both, "only_condition": only_x, "only_baseline": only_y,
            "neither": n - both - discordant,
            "rate_condition": (both + only_x) / n if n else None, "rate_baseline": (both + only_y) / n if n else None,
            "p_exact": float(stats.binomtest(only_x, discordant, 0.5).pvalue) if discordant else (1.0 if n else None)}


def detectable_effect(n: int, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """Smallest standardized paired effect |dz| a two-sided Wilcoxon signed-rank test on ``n`` pairs
    detects with ``power`` at level ``alpha`` (normal approximation of the paired t-test, inflated by
    the Wilcoxon test's asymptotic relative efficiency 3/pi against normal data); None for n < 2."""
    if n < 2:
        return None
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return float(z / math.sqrt(n * 3 / math.pi))


def _split_p(pvalues) -> tuple[np.ndarray, np.ndarray]:
    p = pd.to_numeric(pd.Series(list(pvalues), dtype=object), errors="coerce").to_numpy(dtype=np.float64)
    return p, np.isfinite(p)


def holm(pvalues: Iterable[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1); None stays None."""
    p, ok = _split_p(pvalues)
    out = np.full(p.shape, np.nan)
    q = p[ok]
    m = q.size
    if m:
        order = np.argsort(q, kind="mergesort")
        adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * q[order]))
        res = np.empty(m)
        res[order] = adj
        out[ok] = res
    return [None if not math.isfinite(v) else float(v) for v in out]


def benjamini_hochberg(pvalues: Iterable[float | None]) -> list[float | None]:
    """Benjamini-Hochberg adjusted p-values via ``scipy.stats.false_discovery_control``."""
    p, ok = _split_p(pvalues)
    out = np.full(p.shape, np.nan)
    if ok.any():
        out[ok] = stats.false_discovery_control(p[ok], method="bh")
    return [None if not math.isfinite(v) else float(v) for v in out]


# ------------------------------------------------------------------------ calibration


def calibrate_threshold(values, q: float = 0.95) -> float | None:
    """The ``q`` quantile of the finite control values (e.g. per-token KL under ``noise``)."""
    x = _finite(np.ravel(np.asarray(values, dtype=object)))
    return float(np.quantile(x, q)) if x.size else None


def calibrate_from_runs(runs, curve: str = "kl_ignore", condition: str = "noise", q: float = 0.95) -> float | None:
    """Threshold from the post-t0 values of ``curve`` over the runs of one control condition.

    ``curve``: ``"kl_<ref>"``, ``"js_<ref>"`` or ``"log_ratio"``. Example: the detection
    threshold as the 95th percentile of per-token KL(run || ignore) under ``noise``; pass it as
    ``summarize_run(..., thresholds={"detection_kl": value})``.
    """
    values = []
    for run in runs:
        if run.condition != condition:
            continue
        if curve == "log_ratio":
            arr = run.log_ratio
        else:
            kind, ref = curve.split("_", 1)
            arr = {"kl": run.kl, "js": run.js}[kind][ref]
        values.append(np.asarray(arr, dtype=np.float64)[run.t0 :])
    return calibrate_threshold(np.concatenate(values), q) if values else None


# ------------------------------------------------------------------------ tables


def metric_columns(df: pd.DataFrame, include_layers: bool = False) -> list[str]:
    """Columns of ``df`` the registry knows how to aggregate (per-layer ones optional)."""
    cols = []
    for col in df.columns:
        spec = spec_for(col)
        if spec is None or spec.aggregation == "none" or col.endswith("_censored"):
            continue
        if not include_layers and "_L" in col and col.startswith("hidden_cos_"):
            continue
        cols.append(col)
    return cols


def summarize_column(df: pd.DataFrame, column: str, spec: MetricSpec | None = None, **kw) -> dict:
    """Aggregate one column of a group by its registry aggregation."""
    spec = spec or spec_for(column)
    agg = spec.aggregation if spec else "mean"
    if agg == "km_median":
        cens = spec.censor_column or f"{column}_censored"
        res = km_median(df[column], df[cens] if cens in df else [False] * len(df), kw.get("confidence", 0.95))
    elif agg == "rate":
        res = rate_ci(df[column], kw.get("confidence", 0.95))
    else:
        res = mean_ci(df[column], kw.get("confidence", 0.95), kw.get("n_resamples", DEFAULT_RESAMPLES), kw.get("seed", 0))
    return {"metric": column, "aggregation": agg, "direction": spec.direction if spec else "neutral", **res}


def aggregate(
    df: pd.DataFrame,
    by: Sequence[str] = GROUP_COLUMNS,
    metrics: Sequence[str] | None = None,
    *,
    include_layers: bool = False,
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per group x metric: ``by`` columns, metric, aggregation, direction, estimate,
    ci_low, ci_high, n, and for latencies n_events, n_censored, share_censored, median_reached.

    Groups keep missing keys (variation_type None for controls). ``metrics`` defaults to every
    registry-known column present (per-layer hidden columns only with ``include_layers``).
    """
    by = [b for b in by if b in df.columns]
    metrics = list(metrics) if metrics is not None else metric_columns(df, include_layers)
    rows = []
    groups = df.groupby(by, dropna=False, sort=True) if by else [((), df)]
    for key, part in groups:
        key = key if isinstance(key, tuple) else (key,)
        ident = {b: (None if pd.isna(k) else k) for b, k in zip(by, key)}
        for col in metrics:
            if col not in part:
                continue
            res = summarize_column(part, col, confidence=confidence, n_resamples=n_resamples, seed=seed)
            rows.append({**ident, **res})
    return pd.DataFrame(rows)


def paired_comparisons(
    df: pd.DataFrame,
    metric: str,
    baseline_condition: str,
    *,
    by: Sequence[str] = ("variation_type", "point"),
    conditions: Sequence[str] | None = None,
    wilcoxon_method: str = "auto",
) -> pd.DataFrame:
    """Each condition vs ``baseline_condition`` on the same problems, within each ``by`` stratum.

    Rows are paired on ``problem_id`` (and the stratum). Baseline rows whose ``point`` is "-"
    (the once-per-problem ignore/oracle runs) pair with every point of the stratum. Adds Holm and
    Benjamini-Hochberg adjusted Wilcoxon p-values across all rows of the table (``wilcoxon_p_holm``,
    ``wilcoxon_p_bh``) and of the t-test (``t_p_holm``, ``t_p_bh``). For censored latencies the
    recorded values (censoring times for censored runs) are compared as they are -- a
    conservative lower bound -- and ``n_censored_pairs`` says how many pairs involve censoring.
    """
    by = [b for b in by if b in df.columns]
    spec = spec_for(metric)
    cens_col = spec.censor_column if spec and spec.censor_column in df.columns else None
    base = df[df["condition"] == baseline_condition]
    others = df[df["condition"] != baseline_condition]
    conditions = list(conditions) if conditions is not None else sorted(others["condition"].dropna().unique())
    rows = []
    for cond in conditions:
        sub = others[others["condition"] == cond]
        groups = sub.groupby(by, dropna=False, sort=True) if by else [((), sub)]
        for key, part in groups:
            key = key if isinstance(key, tuple) else (key,)
            ident = {b: (None if pd.isna(k) else k) for b, k in zip(by, key)}
            mask = pd.Series(True, index=base.index)
            for b, k in ident.items():
                if b == "point" and "point" in base:
                    mask &= (base["point"] == k) | (base["point"] == "-")
                elif k is None:
                    mask &= base[b].isna()
                else:
                    mask &= base[b] == k
            bpart = base[mask].drop_duplicates("problem_id", keep="first")
            merged = part.merge(bpart, on="problem_id", suffixes=("", "_base"))
            res = paired_test(merged[metric], merged[f"{metric}_base"], wilcoxon_method)
            n_cens = None
            if cens_col:
                cc = merged[cens_col].eq(True) | merged[f"{cens_col}_base"].eq(True)  # missing counts as not censored
                n_cens = int(cc.sum())
            rows.append({"condition": cond, "baseline": baseline_condition, **ident, "metric": metric, **res,
                         "n_censored_pairs": n_cens})
    out = pd.DataFrame(rows)
    if len(out):
        for col in ("wilcoxon_p", "t_p"):
            out[f"{col}_holm"] = holm(out[col])
            out[f"{col}_bh"] = benjamini_hochberg(out[col])
    return out
