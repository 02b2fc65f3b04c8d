import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from measure.metrics import latency as L
from measure.metrics.attention_curves import span_mass
from measure.metrics.divergence import log_ratio
from measure.metrics.summarize import summarize_run

curve_values = st.lists(st.floats(-2, 2, allow_nan=False) | st.just(float("nan")), min_size=0, max_size=40)


def all_latencies(curve, other, t0):
    return (
        L.threshold_latency(curve, 0.3, t0),
        L.threshold_latency(curve, 0.0, t0, w=3),
        L.stabilization_latency(curve, t0, eps=0.05, window=4),
        L.threshold_latency(curve, 0.1, t0, above=False, w=2),
        L.adaptation_gap(other, t0, 5),
    )


@settings(max_examples=80, deadline=None)
@given(curve_values, curve_values, st.integers(0, 15), st.data())
def test_latencies_invariant_to_everything_before_t0(post, prefix, t0, data):
    prefix = (prefix * 16)[:t0] + [0.0] * max(0, t0 - len(prefix) * 16)
    other_prefix = data.draw(st.lists(st.floats(-5, 5), min_size=t0, max_size=t0))
    other_post = data.draw(st.lists(st.floats(-2, 2), min_size=len(post), max_size=len(post)))
    a = all_latencies(np.array(prefix + post), np.array(prefix + other_post), t0)
    b = all_latencies(np.array(other_prefix + post), np.array(other_prefix + other_post), t0)
    c = all_latencies(np.array(post), np.array(other_post), 0)
    assert a == b == c


@settings(max_examples=100, deadline=None)
@given(st.lists(st.booleans(), max_size=30), st.integers(1, 5))
def test_first_run_censored_exactly_when_no_run_of_w(cond, w):
    n = len(cond)
    starts = [i for i in range(n - w + 1) if all(cond[i : i + w])]
    lat = L.first_run(cond, w)
    assert lat.censored == (not starts)
    assert lat.value == (starts[0] + 1 if starts else n)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 1), max_size=30), st.floats(0, 1))
def test_threshold_censored_iff_never_above(curve, thr):
    lat = L.threshold_latency(curve, thr, 0)
    above = [i for i, v in enumerate(curve) if v > thr]
    assert lat.censored == (not above)
    assert lat.value == (above[0] + 1 if above else len(curve))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-1, 1), max_size=30), st.integers(2, 5), st.floats(1e-4, 0.2))
def test_stabilization_matches_brute_force(curve, window, eps):
    lat = L.stabilization_latency(curve, 0, eps, window)
    n = len(curve)
    var = [np.var(curve[i : i + window]) for i in range(n - window + 1)]
    expected = None
    for k in range(len(var)):
        if all(v < eps for v in var[k:]):
            expected = k + 1
            break
    assert lat == ((expected, False) if expected else (n, True))


def test_censoring_value_is_number_of_observed_tokens():
    assert L.threshold_latency([-1.0] * 7, 0.0, t0=0, w=3) == (7, True)
    assert L.threshold_latency([-1.0] * 5 + [1.0, 1.0], 0.0, t0=0, w=3) == (7, True)  # run cut by the end
    assert L.threshold_latency([1.0] * 3, 0.0, t0=3, w=3) == (0, True)  # nothing after the change
    assert L.threshold_latency([0.0, 0.0, 0.5], 0.1) == (3, False)  # 1-based
    assert L.threshold_latency([0.5], 0.1) == (1, False)


def test_adaptation_gap_is_the_mean_matched_kl_of_the_first_tokens_after_the_change():
    kl = [9.0, 9.0, 1.0, 2.0, 3.0, 100.0]
    assert L.adaptation_gap(kl, t0=2, tokens=3) == pytest.approx(2.0)
    assert L.adaptation_gap(kl, t0=2, tokens=50) == pytest.approx(26.5)  # fewer tokens when the run ends
    assert L.adaptation_gap([1.0, np.nan, 3.0], tokens=3) == pytest.approx(2.0)
    assert L.adaptation_gap(kl, t0=6) is None


def test_nan_never_satisfies():
    assert L.threshold_latency([np.nan, 1, 1, 1], 0.0, w=3) == (2, False)
    assert L.stabilization_latency([0, 0, 0, np.nan], eps=1, window=2) == (4, True)


@pytest.mark.parametrize("t0", [0, 10])
@pytest.mark.parametrize("switch", [1, 2, 7, 15])
def test_every_latency_recovers_known_switch(make_run, switch, t0):
    run = make_run(switch=switch, t0=t0)
    r = log_ratio(run.logprob_ref["oracle"], run.logprob_ref["ignore"])
    assert L.threshold_latency(run.kl["ignore"], 0.1, t0) == (switch, False)
    assert L.threshold_latency(r, 0.0, t0, w=3) == (switch, False)
    assert L.stabilization_latency(r, t0) == (switch, False)
    ins = span_mass(run.attention_mass, "inserted")
    assert L.stabilization_latency(ins, 0, eps=1e-3) == (switch, False)
    row = summarize_run(run)
    for name in ("stabilization_latency", "attention_stabilization_latency"):
        assert (row[name], row[f"{name}_censored"]) == (switch, False), name
    # calibrated latencies need control runs: they are not per-run metrics
    assert "adaptation_latency" not in row and "detection_latency" not in row
    # the matched KL is that of A vs B until the switch, 0 after: the gap counts the stale tokens
    stale = L.after_t0(run.kl["matched"], t0)[: min(switch - 1, 20)].sum()
    assert row["adaptation_gap"] == pytest.approx(stale / 20)


def test_attention_stabilization_needs_inserted_text(make_run):
    run = make_run(switch=3, t0=5)
    run.inserted_ids = []  # flush / partial: nothing inserted, so no event about inserted text
    row = summarize_run(run)
    assert row["attention_stabilization_latency"] is None and row["attention_stabilization_latency_censored"] is None
