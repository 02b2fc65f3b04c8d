import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.special import log_softmax, rel_entr

from measure.metrics.divergence import LN2, js_divergence, kl_and_js, kl_divergence, log_ratio

V = 16


@st.composite
def logprob_pair(draw):
    """Two (rows, V) log-probability arrays, some entries exactly zero probability (-inf)."""
    rows = draw(st.integers(1, 4))
    elems = st.floats(-30, 30, allow_nan=False)
    out = []
    for _ in range(2):
        logits = draw(arrays(np.float64, (rows, V), elements=elems))
        mask = draw(arrays(np.bool_, (rows, V)))
        mask[:, 0] = False  # at least one finite entry per row
        logits[mask] = -np.inf
        out.append(log_softmax(logits, axis=-1))
    return out


@settings(max_examples=60, deadline=None)
@given(logprob_pair())
def test_kl_nonnegative_finite_and_zero_on_identical(pair):
    p, q = pair
    kl = kl_divergence(p, q)
    assert kl.shape == p.shape[:-1]
    assert np.all(np.isfinite(kl)) and np.all(kl >= 0)
    assert np.all(kl_divergence(p, p) == 0)


@settings(max_examples=60, deadline=None)
@given(logprob_pair())
def test_js_symmetric_bounded_finite(pair):
    p, q = pair
    js = js_divergence(p, q)
    assert np.all(np.isfinite(js))
    assert np.all((js >= 0) & (js <= LN2))
    np.testing.assert_allclose(js, js_divergence(q, p), rtol=0, atol=1e-12)
    np.testing.assert_allclose(js_divergence(p, p), 0, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(logprob_pair())
def test_torch_matches_numpy(pair):
    p, q = pair
    tp, tq = torch.tensor(p), torch.tensor(q)
    kl_t, js_t = kl_and_js(tp, tq)
    assert isinstance(kl_t, torch.Tensor) and kl_t.shape == p.shape[:-1]
    np.testing.assert_allclose(kl_t.numpy(), kl_divergence(p, q), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(js_t.numpy(), js_divergence(p, q), rtol=1e-9, atol=1e-9)


def test_matches_scipy_on_full_support():
    rng = np.random.default_rng(0)
    p = log_softmax(rng.normal(size=(3, 5, 50)), axis=-1)
    q = log_softmax(rng.normal(size=(3, 5, 50)), axis=-1)
    ref = rel_entr(np.exp(p), np.exp(q)).sum(-1)
    np.testing.assert_allclose(kl_divergence(p, q), ref, rtol=1e-10)
    m = 0.5 * (np.exp(p) + np.exp(q))
    js_ref = 0.5 * rel_entr(np.exp(p), m).sum(-1) + 0.5 * rel_entr(np.exp(q), m).sum(-1)
    np.testing.assert_allclose(js_divergence(p, q), js_ref, rtol=1e-9)


def test_disjoint_supports_js_is_ln2_and_kl_finite():
    p = np.array([0.0, -np.inf, -np.inf])
    q = np.array([-np.inf, np.log(0.5), np.log(0.5)])
    assert math.isclose(float(js_divergence(p, q)), LN2, rel_tol=1e-12)
    kl = float(kl_divergence(p, q))
    assert math.isfinite(kl) and kl > 1000  # q == 0 where p > 0: clamped, huge, finite


def test_torch_half_precision_and_chunks():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 100, generator=g)
    p = torch.log_softmax(logits, -1)
    q = torch.log_softmax(logits + torch.randn(2, 3, 100, generator=g), -1)
    full = kl_divergence(p, q)
    assert full.dtype == torch.float32 and full.shape == (2, 3)
    chunked = torch.cat([kl_divergence(p[:, i : i + 1], q[:, i : i + 1]) for i in range(3)], dim=1)
    torch.testing.assert_close(full, chunked)
    half = kl_divergence(p.bfloat16(), q.bfloat16())
    assert half.dtype == torch.float32 and torch.all(half >= 0)
    torch.testing.assert_close(half, full, atol=0.05, rtol=0.1)


def test_log_ratio_handles_inf():
    r = log_ratio([-1.0, -np.inf, -np.inf, 0.0], [-2.0, -1.0, -np.inf, np.nan])
    assert r[0] == 1.0 and np.isfinite(r[1]) and r[1] < -1000 and r[2] == 0.0 and np.isnan(r[3])
