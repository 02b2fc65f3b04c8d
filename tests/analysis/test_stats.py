import json
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from measure.analysis import stats as S


def km_by_hand(values, censored):
    """Product-limit estimator: [(t, S(t))] at event times; censored at t are at risk at t."""
    out, s = [], 1.0
    for t in sorted({v for v, c in zip(values, censored) if not c}):
        at_risk = sum(v >= t for v in values)
        deaths = sum(v == t and not c for v, c in zip(values, censored))
        s *= 1 - deaths / at_risk
        out.append((t, s))
    return out


def km_median_by_hand(values, censored):
    """The first event time at which the hand product-limit curve reaches 0.5; None if it never does."""
    return next((float(t) for t, s in km_by_hand(values, censored) if s <= 0.5 + 1e-12), None)


def holm_by_definition(p):
    """Holm step-down by its definition, one p-value at a time: the i-th smallest gets
    min(1, max over j <= i of (m - j + 1) * p_(j)) (1-based ranks)."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out = [0.0] * m
    for rank, i in enumerate(order, start=1):
        out[i] = min(1.0, max((m - j + 1) * p[order[j - 1]] for j in range(1, rank + 1)))
    return out


def bh_by_definition(p):
    """Benjamini-Hochberg step-up by its definition: the i-th smallest gets
    min over j >= i of min(1, m * p_(j) / j) (1-based ranks)."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out = [0.0] * m
    for rank, i in enumerate(order, start=1):
        out[i] = min(min(1.0, m * p[order[j - 1]] / j) for j in range(rank, m + 1))
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=30))
def test_km_median_uncensored_is_ecdf_median(values):
    res = S.km_median(values, [False] * len(values))
    assert res["estimate"] == float(np.quantile(values, 0.5, method="inverted_cdf"))
    assert res["n_censored"] == 0 and res["median_reached"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 30), st.booleans()), min_size=1, max_size=30))
def test_km_median_matches_hand_product_limit(pairs):
    values, cens = [p[0] for p in pairs], [p[1] for p in pairs]
    res = S.km_median(values, cens)
    expected = km_median_by_hand(values, cens)
    assert res["estimate"] == expected
    assert res["n_censored"] == sum(cens) and res["share_censored"] == pytest.approx(sum(cens) / len(cens))
    if res["ci_low"] is not None and expected is not None:
        assert res["ci_low"] <= expected
    if res["ci_high"] is not None and expected is not None:
        assert res["ci_high"] >= expected


def test_km_known_example_and_not_reached():
    # events at 1, 3, 5; censored at 2, 4, 6: S = 5/6, 5/8, 5/16 -> median 5
    res = S.km_median([1, 2, 3, 4, 5, 6], [False, True, False, True, False, True])
    assert res["estimate"] == 5.0 and res["n_events"] == 3 and res["share_censored"] == 0.5
    never = S.km_median([10, 12, 3], [True, True, False])  # S(3) = 2/3 > 0.5
    assert never["estimate"] is None and not never["median_reached"]
    assert S.km_median([8, 9], [True, True])["estimate"] is None
    assert S.km_median([None, 4], [None, False])["n"] == 1
    assert S.censored_share([True, False, False, None]) == pytest.approx(1 / 3)


def test_mean_ci_equals_direct_scipy_bootstrap():
    x = np.array([0.3, 1.2, 2.2, 2.9, 4.1, 5.5, 7.0, 7.2])
    res = S.mean_ci(x, n_resamples=999, seed=3)
    direct = sps.bootstrap((x,), np.mean, n_resamples=999, vectorized=True, rng=np.random.default_rng(3))
    assert res["estimate"] == pytest.approx(x.mean())
    assert res["ci_low"] == pytest.approx(direct.confidence_interval.low)
    assert res["ci_high"] == pytest.approx(direct.confidence_interval.high)
    assert S.mean_ci([1.0, 1.0, 1.0]) == {"estimate": 1.0, "ci_low": 1.0, "ci_high": 1.0, "n": 3}
    assert S.mean_ci([np.nan, None, 2.0]) == {"estimate": 2.0, "ci_low": None, "ci_high": None, "n": 1}


def test_rate_ci_is_wilson():
    res = S.rate_ci([True, True, False, True, None])
    ci = sps.binomtest(3, 4).proportion_ci(method="wilson")
    assert res["estimate"] == 0.75 and res["ci_low"] == pytest.approx(ci.low) and res["ci_high"] == pytest.approx(ci.high)


def test_paired_test_against_scipy_and_closed_forms():
    x = np.array([5.0, 7.0, 3.0, 9.0, 6.0, 8.0, 4.0])
    y = np.array([4.0, 4.0, 3.5, 6.0, 6.5, 5.0, 2.0])
    res = S.paired_test(x, y)
    d = x - y
    assert res["t_p"] == pytest.approx(sps.ttest_rel(x, y).pvalue)
    assert res["wilcoxon_p"] == pytest.approx(sps.wilcoxon(x, y).pvalue)
    assert res["cohen_dz"] == pytest.approx(d.mean() / d.std(ddof=1))
    # d = [1, 3, -.5, 3, -.5, 3, 2]; ranks of |d| = [3, 6, 1.5, 6, 1.5, 6, 4] -> R+ = 25, R- = 3
    assert res["rank_biserial"] == pytest.approx((25 - 3) / 28)
    none = S.paired_test([1, 2], [1, 2])
    assert none["wilcoxon_p"] is None and none["t_p"] is None and none["n"] == 2


def test_holm_and_bh_closed_forms():
    p = [0.01, 0.04, 0.03, 0.005, None]
    assert S.holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02, None])
    # BH: sorted 0.005, 0.01, 0.03, 0.04 -> 0.02, 0.02, 0.04, 0.04
    assert S.benjamini_hochberg(p) == pytest.approx([0.02, 0.04, 0.04, 0.02, None])
    # Ties and capping: sorted 0.02, 0.02, 0.5, 0.9. Holm: x4, x3, x2, x1 = 0.08, 0.06, 1.0, 0.9,
    # running max -> 0.08, 0.08, 1, 1. BH: m p / rank = 0.08, 0.04, 0.667, 0.9, running min from
    # the largest -> 0.04, 0.04, 0.667, 0.9.
    assert S.holm([0.02, 0.5, 0.02, 0.9]) == pytest.approx([0.08, 1.0, 0.08, 1.0])
    assert S.benjamini_hochberg([0.02, 0.5, 0.02, 0.9]) == pytest.approx([0.04, 2 / 3, 0.04, 0.9])
    assert S.holm([0.5, 0.9]) == [1.0, 1.0]


def test_calibrate_threshold():
    rng = np.random.default_rng(0)
    x = rng.exponential(size=500)
    assert S.calibrate_threshold(x) == pytest.approx(np.quantile(x, 0.95))
    kl = np.r_[np.full(5, 100.0), rng.exponential(size=20)]  # values before t0 must not count
    run = SimpleNamespace(condition="noise", t0=5, kl={"ignore": kl}, js={})
    thr = S.calibrate_from_runs([run], "kl_ignore", "noise", q=0.5)
    assert thr == pytest.approx(np.quantile(run.kl["ignore"][5:], 0.5))
    assert S.calibrate_from_runs([run], condition="repeat") is None


def _summary_df():
    rng = np.random.default_rng(1)
    rows = []
    for pid in range(12):
        for cond, shift in (("injection", 0.0), ("flush", -3.0), ("noise", 2.0)):
            for vt in ("single_number", None):
                lat = int(max(1, rng.poisson(8) + shift))
                rows.append({
                    "problem_id": f"p{pid}", "condition": cond, "variation_type": vt, "point": "t8",
                    "kl_oracle_all": float(rng.gamma(2.0) + shift * 0.1 + 0.5),
                    "adaptation_latency": lat, "adaptation_latency_censored": bool(lat > 10),
                    "outcome_adapted": bool(rng.random() < 0.6),
                })
    return pd.DataFrame(rows)


def test_aggregate_table_json_safe():
    df = _summary_df()
    table = S.aggregate(df, n_resamples=200)
    assert set(table["metric"]) == {"kl_oracle_all", "adaptation_latency", "outcome_adapted"}
    assert len(table) == 3 * 2 * 3  # conditions x variation types x metrics
    lat = table[(table.metric == "adaptation_latency") & (table.condition == "injection") & table.variation_type.isna()].iloc[0]
    part = df[(df.condition == "injection") & df.variation_type.isna()]
    expected = km_median_by_hand(part.adaptation_latency.tolist(), part.adaptation_latency_censored.tolist())
    assert lat["aggregation"] == "km_median" and lat["direction"] == "lower"
    assert (lat["estimate"] if not pd.isna(lat["estimate"]) else None) == expected
    assert lat["n"] == len(part) and lat["n_censored"] == int(part.adaptation_latency_censored.sum())
    json.dumps(S.to_records(table), allow_nan=False)


def test_paired_comparisons_pairs_on_problem_and_corrects():
    df = _summary_df()
    out = S.paired_comparisons(df, "kl_oracle_all", "injection")
    assert set(out["condition"]) == {"flush", "noise"} and len(out) == 4
    row = out[(out.condition == "noise") & (out.variation_type == "single_number")].iloc[0]
    a = df[(df.condition == "noise") & (df.variation_type == "single_number")].sort_values("problem_id")
    b = df[(df.condition == "injection") & (df.variation_type == "single_number")].sort_values("problem_id")
    assert row["n"] == 12
    assert row["wilcoxon_p"] == pytest.approx(sps.wilcoxon(a.kl_oracle_all.values, b.kl_oracle_all.values).pvalue)
    raw = out["wilcoxon_p"].tolist()
    assert out["wilcoxon_p_holm"].tolist() == pytest.approx(holm_by_definition(raw))
    assert out["wilcoxon_p_bh"].tolist() == pytest.approx(bh_by_definition(raw))
    lat = S.paired_comparisons(df, "adaptation_latency", "injection", wilcoxon_method="asymptotic")
    assert lat["n_censored_pairs"].notna().all()
    json.dumps(S.to_records(lat), allow_nan=False)
    assert math.isfinite(out["cohen_dz"].iloc[0])


def test_a_large_group_gets_the_percentile_interval_in_batches(monkeypatch):
    """Above BCA_MAX_N values BCa's n-squared jackknife is skipped; the interval still covers the
    normal-theory one (mean +- 1.96 sd / sqrt(n)) within 10% of its width."""
    import scipy.stats

    from measure.analysis import stats as measure_stats

    calls = []
    bootstrap = scipy.stats.bootstrap

    def spy(*args, **kwargs):
        calls.append((kwargs["method"], kwargs["batch"]))
        return bootstrap(*args, **kwargs)

    monkeypatch.setattr(measure_stats.stats, "bootstrap", spy)
    x = np.random.default_rng(0).normal(1.0, 2.0, measure_stats.BCA_MAX_N + 2000)
    out = measure_stats.mean_ci(x, n_resamples=2000)
    half = 1.96 * x.std(ddof=1) / np.sqrt(x.size)
    assert calls == [("percentile", 1_000_000 // x.size)]
    assert abs(out["ci_low"] - (x.mean() - half)) < 0.1 * 2 * half
    assert abs(out["ci_high"] - (x.mean() + half)) < 0.1 * 2 * half
    measure_stats.mean_ci(x[:measure_stats.BCA_MAX_N], n_resamples=200)
    assert calls[-1] == ("BCa", None)
