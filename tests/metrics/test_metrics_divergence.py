import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.special import log_softmax, rel_entr

from measure.metrics.divergence import (
    LN2,
    LOG_FLOOR,
    js_divergence,
    kl_and_js,
    kl_divergence,
    kl_js_between_rows,
    kl_js_prepared,
    log_ratio,
    prepare,
)

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


def _reference_kl_js(logp: np.ndarray, logq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The definitions, written out plainly in float64 numpy: sum over p > 0 only (0 log 0 = 0),
    log q clamped at LOG_FLOOR for the KL, clipped to [0, inf) / [0, ln 2]."""
    logp, logq = logp.astype(np.float64), logq.astype(np.float64)
    p, q = np.exp(logp), np.exp(logq)
    kl = np.zeros(logp.shape[:-1])
    js = np.zeros(logp.shape[:-1])
    for row in np.ndindex(*logp.shape[:-1]):
        lp, lq, pr, qr = logp[row], logq[row], p[row], q[row]
        on = pr > 0
        kl[row] = np.sum(pr[on] * (lp[on] - np.maximum(lq[on], LOG_FLOOR)))
        m = 0.5 * (pr + qr)
        on_q = qr > 0
        js[row] = 0.5 * (np.sum(pr[on] * np.log(pr[on] / m[on])) + np.sum(qr[on_q] * np.log(qr[on_q] / m[on_q])))
    return np.maximum(kl, 0.0), np.clip(js, 0.0, LN2)


def _random_logprobs(g: torch.Generator, rows: int, vocab: int, scale: float, zero_fraction: float) -> torch.Tensor:
    logits = torch.randn(rows, vocab, generator=g) * scale
    zero = torch.rand(rows, vocab, generator=g) < zero_fraction
    zero[:, 0] = False  # at least one token with p > 0 per row
    return torch.log_softmax(logits.masked_fill(zero, -math.inf), -1)


@pytest.mark.parametrize("vocab", [7, 1000, 50_000])  # 50_000: several blocks of rows, the last one short
def test_fused_compare_matches_reference_definition(vocab):
    """kl_js_prepared (what scoring.compare runs, float32) equals the float64 definition."""
    g = torch.Generator().manual_seed(vocab)
    rows = 13
    run = _random_logprobs(g, rows, vocab, 3.0, 0.1)
    # references: independent, close to the run (tiny KL), disjoint-ish support, and with -inf
    # where the run has mass (q == 0 < p: clamped, huge KL)
    noise = 1e-3 * torch.randn(rows, vocab, generator=g)
    close = torch.log_softmax(run.masked_fill(run == -math.inf, -50.0) + noise, -1)
    refs = [_random_logprobs(g, rows, vocab, 3.0, 0.1), close, _random_logprobs(g, rows, vocab, 8.0, 0.6)]
    prepared = prepare(run)
    for ref in refs:
        kl, js = kl_js_prepared(prepared, prepare(ref))
        assert kl.dtype == torch.float32 and kl.shape == (rows,) and js.shape == (rows,)
        kl_ref, js_ref = _reference_kl_js(run.numpy(), ref.numpy())
        # float32 arithmetic: ~1e-7 relative (the huge clamped KLs, ~1e4 p, need the rtol); the
        # tiny KLs of the close reference (~1e-7) come out within ~1e-10, as no sum cancels
        np.testing.assert_allclose(kl.numpy(), kl_ref, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(js.numpy(), js_ref, rtol=0, atol=1e-6)
        # the public functions take the same path
        kl_pub, js_pub = kl_and_js(run, ref)
        torch.testing.assert_close(kl_pub, kl, rtol=0, atol=0)
        torch.testing.assert_close(js_pub, js, rtol=0, atol=0)
    # identical inputs: KL exactly 0 (every difference is exactly 0), JS at round-off
    kl, js = kl_js_prepared(prepared, prepare(run.clone()))
    assert torch.all(kl == 0)
    assert torch.all(js <= 1e-7)


@pytest.mark.parametrize("vocab", [7, 50_000])
def test_rows_compared_in_place_equal_the_gathered_comparison(vocab):
    """kl_js_between_rows (a decode step's pairs, gathered block by block) gives bit for bit what
    kl_js_prepared gives on the pairs' rows gathered up front, including a row paired with itself."""
    g = torch.Generator().manual_seed(1)
    logprobs = _random_logprobs(g, 9, vocab, 3.0, 0.1)
    run_rows, ref_rows = torch.tensor([0, 0, 0, 4, 4, 8, 2]), torch.tensor([1, 2, 0, 5, 7, 3, 2])
    prepared = prepare(logprobs)
    kl, js = kl_js_between_rows(prepared, run_rows, ref_rows)
    kl_gathered, js_gathered = kl_js_prepared(prepare(logprobs[run_rows]), prepare(logprobs[ref_rows]))
    assert torch.equal(kl, kl_gathered) and torch.equal(js, js_gathered)
    assert kl[2] == 0 and kl[6] == 0 and kl[0] > 0


def test_fused_compare_zero_probability_conventions():
    """-inf entries: 0 log 0 = 0 (no NaN), q == 0 < p clamped (finite, huge), disjoint JS = ln 2."""
    p = torch.tensor([[0.0, -math.inf, -math.inf], [math.log(0.5), math.log(0.5), -math.inf]])
    q = torch.tensor([[-math.inf, math.log(0.5), math.log(0.5)], [math.log(0.5), math.log(0.5), -math.inf]])
    kl, js = kl_js_prepared(prepare(p), prepare(q))
    assert torch.isfinite(kl).all() and kl[0] > 1000 and kl[1] == 0
    assert math.isclose(float(js[0]), LN2, rel_tol=1e-6) and abs(float(js[1])) <= 1e-7
    # logp below the float32 underflow of exp (p == 0 exactly) but finite, and the -inf floor
    far = torch.log_softmax(torch.tensor([[0.0, -200.0, -math.inf]]), -1)
    assert float(kl_divergence(far, far)) == 0.0
    assert math.isinf(float(kl_divergence(p[:1], q[:1], log_floor=-math.inf)))
    assert float(kl_divergence(p[1:], q[1:], log_floor=-math.inf)) == 0.0


def test_stream_output_prepares_once():
    """compare prepares each output once, however many comparisons it takes part in."""
    from measure.engine.scoring import StreamOutput, compare

    g = torch.Generator().manual_seed(1)
    run, ref = (StreamOutput(_random_logprobs(g, 4, 100, 2.0, 0.0), None) for _ in range(2))
    first = compare(run, ref, [1, 2, 3, 4])
    prepared = run.prepared
    second = compare(run, ref, [1, 2, 3, 4])
    assert run.prepared is prepared
    for key in ("logprob", "kl", "js"):
        np.testing.assert_array_equal(first[key], second[key])
    kl_numpy = kl_divergence(run.logprobs.numpy(), ref.logprobs.numpy())
    np.testing.assert_allclose(first["kl"], kl_numpy, rtol=1e-5, atol=1e-6)
