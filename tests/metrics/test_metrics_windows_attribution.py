import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from measure.metrics.attention_curves import attention_ratio, span_mass
from measure.metrics.attribution import LABELS, attribute_tokens, attribution_counts, attribution_shares
from measure.metrics.similarity import layer_means, layer_window_means, mean_over_layers
from measure.metrics.windows import window_means


def test_window_boundaries_are_1_based_after_t0():
    t0 = 4
    curve = np.r_[np.full(t0, 99.0), np.arange(1, 31, dtype=float)]  # value == 1-based position
    m = window_means(curve, t0)
    assert m["immediate"] == 3.0  # mean(1..5)
    assert m["short"] == 13.0  # mean(6..20)
    assert m["long"] == 25.5  # mean(21..30)
    assert m["all"] == 15.5


def test_empty_and_nan_windows_are_none():
    m = window_means([1.0, 2.0, np.nan], t0=1)
    assert m == {"immediate": 2.0, "short": None, "long": None, "all": 2.0}
    assert window_means([], 0) == dict.fromkeys(["immediate", "short", "long", "all"])
    assert window_means([np.nan] * 3, 0)["immediate"] is None


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.floats(-20, 0) | st.just(-math.inf) | st.just(math.nan), min_size=0, max_size=30),
    st.data(),
    st.floats(0.001, 1.0),
    st.integers(0, 5),
)
def test_attribution_consistent_with_threshold(lb, data, thr, t0):
    la = data.draw(st.lists(st.floats(-20, 0) | st.just(-math.inf), min_size=len(lb), max_size=len(lb)))
    labels = attribute_tokens(lb, la, t0, thr)
    assert len(labels) == max(0, len(lb) - t0)
    for lab, b, a in zip(labels, lb[t0:], la[t0:]):
        likely_b = (not math.isnan(b)) and math.exp(b) >= thr - 1e-12 and b >= math.log(thr)
        likely_a = math.exp(a) >= thr - 1e-12 and a >= math.log(thr)
        expected = {(True, False): "injected", (False, True): "original", (True, True): "mixed", (False, False): "neither"}
        assert lab == expected[(likely_b, likely_a)]
    counts = attribution_counts(labels)
    assert set(counts) == set(LABELS) and sum(counts.values()) == len(labels)
    shares = attribution_shares(labels)
    if len(labels):
        assert math.isclose(sum(shares.values()), 1.0)
    else:
        assert all(v is None for v in shares.values())


def test_attention_ratio_uniform_attention_is_one():
    spans = {"prompt": (0, 10), "prefix": (10, 14), "inserted": (14, 18), "after": (18, 20)}
    n_after = 2
    # uniform attention over 20 keys: mass proportional to span length
    per_query = np.array([10, 4, 4, 2], dtype=float) / 20
    mass = np.broadcast_to(per_query, (3, 2, n_after, 4))
    np.testing.assert_allclose(attention_ratio(mass, spans), 1.0)
    np.testing.assert_allclose(span_mass(mass, "inserted"), 0.2)
    no_x = {**spans, "inserted": (14, 14)}
    assert np.all(np.isnan(attention_ratio(mass, no_x)))


def test_hidden_cosine_layer_means():
    hc = np.vstack([np.ones(8), np.r_[np.zeros(3), np.full(5, 0.5)], np.r_[np.zeros(3), np.arange(5.0)]])
    np.testing.assert_allclose(layer_means(hc, 3), [1.0, 0.5, 2.0])
    np.testing.assert_allclose(mean_over_layers(hc, 3), [0.25, 0.75, 1.25, 1.75, 2.25])
    w = layer_window_means(hc, 3)
    assert np.all(np.isnan(w["short"])) and np.allclose(w["immediate"], [1.0, 0.5, 2.0])
