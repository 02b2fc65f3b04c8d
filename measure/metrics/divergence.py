"""Divergences between next-token distributions given as log-probabilities.

Every function takes log-probabilities over the vocabulary in the last axis, ``(..., vocab)``,
and reduces that axis, returning ``(...)``. Inputs may be ``torch.Tensor`` (the engine calls these
inside its batched scoring, one chunk of positions at a time) or anything numpy accepts; the
result has the same kind as the input. torch is never imported here: a tensor argument brings it.

Numerical conventions (natural log, nats):
- ``0 * log 0 = 0``: vocabulary entries with ``p == 0`` (log-probability ``-inf``) add nothing.
- Where ``q == 0`` but ``p > 0`` the true KL(P||Q) is infinite; ``log q`` is clamped to
  ``log_floor`` (default ``LOG_FLOOR = -1e4``) so the result stays finite and very large instead.
- Rounding can make a divergence a hair below 0 (or JS a hair above ln 2): results are clipped to
  ``[0, inf)`` (JS to ``[0, ln 2]``).
- Half-precision inputs are upcast to float32 (torch) / float64 (numpy) before reducing.
Inputs must already be normalized log-probabilities (``log_softmax`` of the logits).

For torch inputs compared repeatedly (``measure.engine.scoring.compare``: one run against several
references), ``prepare`` each distribution once and call ``kl_js_prepared``: both divergences in a
few passes over cache-sized blocks of rows, with ``exp`` of each distribution computed only once.
"""

from __future__ import annotations

import math
import sys
from typing import NamedTuple

import numpy as np

LN2 = math.log(2.0)
LOG_FLOOR = -1e4


# On CPU, rows are reduced in blocks of about this many elements: the few temporaries of a block
# (512 KiB each in float32) stay in cache, where (n, vocab) temporaries would each be a fresh
# allocation streamed through memory once per operation.
BLOCK_ELEMENTS = 1 << 17


class PreparedLogprobs(NamedTuple):
    """What every divergence needs from one distribution, computed once (torch only).

    ``p = exp(logp)`` and ``logp`` clamped below at ``LOG_FLOOR``, both ``(rows, vocab)`` in at
    least float32. The clamp changes only entries where ``p == 0`` exactly: ``exp`` underflows to 0
    below about -104 (float32) or -745 (float64), far above ``LOG_FLOOR = -1e4``. So a product
    ``p * (clamped logp - ...)`` is ``0 * finite = 0`` exactly where the unclamped one would be
    ``0 * -inf = nan``: the ``0 * log 0 = 0`` convention without a mask.
    ``p`` is None when only the KL's second argument was prepared (it needs no probabilities).
    """

    p: object  # torch.Tensor | None
    logp: object  # torch.Tensor
    shape: tuple  # the leading shape, (...), of the input


def _is_torch(x) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _torch_prep(logp, logq):
    torch = sys.modules["torch"]
    device = (logp if torch.is_tensor(logp) else logq).device
    logp = torch.as_tensor(logp, device=device)
    logq = torch.as_tensor(logq, device=device)
    dtype = torch.promote_types(torch.promote_types(logp.dtype, logq.dtype), torch.float32)
    logp, logq = torch.broadcast_tensors(logp.to(dtype), logq.to(dtype))
    return torch, logp, logq


def _rows(x):
    """``(..., vocab)`` -> ``(rows, vocab)``."""
    return x.reshape(math.prod(x.shape[:-1]), x.shape[-1])


def _clamped(logp, floor: float):
    """``logp.clamp_min(floor)``, without a copy when nothing is below ``floor`` (the usual case:
    ``log_softmax`` of finite logits has no ``-inf``)."""
    if logp.numel() and not bool(logp.amin() >= floor):
        return logp.clamp_min(floor)
    return logp


def prepare(logp, *, probabilities: bool = True) -> PreparedLogprobs:
    """Torch log-probabilities ``(..., vocab)`` ready for ``kl_js_prepared`` (``PreparedLogprobs``).

    Half precision is upcast to float32. Prepare an output once to compare it with several others.
    """
    torch = sys.modules["torch"]
    logp = torch.as_tensor(logp)
    logp = logp.to(torch.promote_types(logp.dtype, torch.float32))
    rows = _rows(logp)
    p = rows.exp() if probabilities else None
    return PreparedLogprobs(p, _clamped(rows, LOG_FLOOR), tuple(logp.shape[:-1]))


def _row_blocks(n: int, vocab: int, device) -> list:
    """Slices of ``n`` rows to process together; all rows at once off the CPU (no cache to fit)."""
    step = max(1, BLOCK_ELEMENTS // max(vocab, 1)) if device.type == "cpu" else max(n, 1)
    return [slice(start, start + step) for start in range(0, n, step)]


def _rowdot(x, y):
    # Faster than einsum("nv,nv->n") / batched matmul on CPU, which go through a bmm.
    return (x * y).sum(-1)


def kl_js_prepared(run: PreparedLogprobs, ref: PreparedLogprobs, *, kl: bool = True, js: bool = True):
    """``(KL(run || ref), JS(run, ref))`` per row, each ``(...)``, or None when not asked for.

    Same results as ``kl_divergence`` and ``js_divergence`` (``ref.logp`` is log q clamped at
    the KL's floor: ``LOG_FLOOR`` from ``prepare``), in a few passes over each cache-sized block of
    rows and no masks.
    """
    torch = sys.modules["torch"]
    a = run.logp
    kl_out = torch.empty(a.shape[0], dtype=a.dtype, device=a.device) if kl else None
    js_out = torch.empty(a.shape[0], dtype=a.dtype, device=a.device) if js else None
    for rows in _row_blocks(a.shape[0], a.shape[-1], a.device):
        _kl_js_block(run.p[rows], a[rows], ref.p[rows] if js else None, ref.logp[rows], kl_out, js_out, rows)
    return (kl_out.clamp_min_(0.0).reshape(run.shape) if kl else None,
            js_out.clamp_(0.0, LN2).reshape(run.shape) if js else None)


def kl_js_between_rows(prepared: PreparedLogprobs, run_rows, ref_rows, *, kl: bool = True, js: bool = True):
    """``kl_js_prepared`` of rows ``run_rows[i]`` against rows ``ref_rows[i]`` of one prepared
    ``(rows, vocab)`` set, each result ``(pairs,)``. Pairs that share their run row (a decode
    step's leader and its references) are compared as one block, the run row read in place and the
    reference rows gathered: gathering every pair's rows up front would stream two ``(pairs,
    vocab)`` copies through memory (for 120 rows of a 49k vocabulary, 3 ms a gather, five a step).
    """
    torch = sys.modules["torch"]
    p, a = prepared.p, prepared.logp
    n = len(run_rows)
    kl_out = torch.empty(n, dtype=a.dtype, device=a.device) if kl else None
    js_out = torch.empty(n, dtype=a.dtype, device=a.device) if js else None
    runs = run_rows.tolist()
    start = 0
    while start < n:
        end = start + 1
        while end < n and runs[end] == runs[start]:
            end += 1
        row, there = runs[start], ref_rows[start:end]
        _kl_js_block(p[row:row + 1], a[row:row + 1], p[there] if js else None, a[there],
                     kl_out, js_out, slice(start, end))
        start = end
    return (kl_out.clamp_min_(0.0) if kl else None, js_out.clamp_(0.0, LN2) if js else None)


def _kl_js_block(p_, a_, q_, b_, kl_out, js_out, rows) -> None:
    """Write KL(p || q) and JS(p, q) of one block of rows into ``kl_out[rows]``/``js_out[rows]``
    (either None: not asked for); ``p_``/``a_`` may be one row, broadcast against ``q_``/``b_``.
    Every difference is formed elementwise before its reduction: ``p.a - p.b`` would cancel
    catastrophically for the tiny KLs (1e-7) of nearly equal distributions."""
    torch = sys.modules["torch"]
    if kl_out is not None:
        # Where p == 0 the clamped a_ and b_ are finite, so p * d is 0 (the PreparedLogprobs docstring).
        kl_out[rows] = _rowdot(p_, a_ - b_)
    if js_out is not None:
        # log m, m = (p + q) / 2. Where p > 0, m >= p / 2 and log m >= log p - ln 2 is far above
        # LOG_FLOOR, so the clamp only turns log 0 = -inf (p == q == 0) into a finite value.
        logm = torch.add(p_, q_).mul_(0.5).log_().clamp_min_(LOG_FLOOR)
        js_out[rows] = 0.5 * (_rowdot(p_, a_ - logm) + _rowdot(q_, b_ - logm))


def _torch_kl_js(logp, logq, log_floor: float, kl: bool, js: bool):
    torch, logp, logq = _torch_prep(logp, logq)
    run = prepare(logp)
    kl_out = js_out = None
    if kl and log_floor != LOG_FLOOR:
        if math.isfinite(log_floor):
            ref = PreparedLogprobs(None, _clamped(_rows(logq), log_floor), run.shape)
            kl_out, _ = kl_js_prepared(run, ref, js=False)
        else:  # no floor: the true KL, infinite where q == 0 < p, so p == 0 must be masked
            p, diff = run.p, run.logp - _rows(logq)
            kl_out = torch.where(p > 0, p * diff, 0.0).sum(-1).clamp_min(0.0).reshape(run.shape)
        kl = False
    if kl or js:
        kl_default, js_out = kl_js_prepared(run, prepare(logq, probabilities=js), kl=kl, js=js)
        kl_out = kl_default if kl else kl_out
    return kl_out, js_out


def _kl_numpy(logp, logq, log_floor):
    p = np.exp(logp)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = logp - np.maximum(logq, log_floor)
        term = np.where(p > 0, p * diff, 0.0)
    return np.maximum(term.sum(-1), 0.0)


def kl_divergence(logp, logq, *, log_floor: float = LOG_FLOOR):
    """KL(P || Q) = sum_v p_v (log p_v - log q_v) over the last axis.

    ``logp``, ``logq``: ``(..., vocab)`` log-probabilities -> ``(...)`` in nats, >= 0.
    """
    if _is_torch(logp) or _is_torch(logq):
        return _torch_kl_js(logp, logq, log_floor, kl=True, js=False)[0]
    logp = np.asarray(logp, dtype=np.float64)
    logq = np.asarray(logq, dtype=np.float64)
    return _kl_numpy(logp, logq, log_floor)


def js_divergence(logp, logq):
    """Jensen-Shannon divergence 0.5 KL(P||M) + 0.5 KL(Q||M), M = (P + Q) / 2, in nats.

    Symmetric, bounded by ln 2, finite for any inputs (M > 0 wherever P or Q is).
    ``(..., vocab)`` -> ``(...)``.
    """
    if _is_torch(logp) or _is_torch(logq):
        return _torch_kl_js(logp, logq, LOG_FLOOR, kl=False, js=True)[1]
    logp = np.asarray(logp, dtype=np.float64)
    logq = np.asarray(logq, dtype=np.float64)
    logm = np.logaddexp(logp, logq) - LN2
    js = 0.5 * (_kl_numpy(logp, logm, -np.inf) + _kl_numpy(logq, logm, -np.inf))
    return np.clip(js, 0.0, LN2)


def kl_and_js(logp, logq, *, log_floor: float = LOG_FLOOR):
    """``(kl_divergence(logp, logq), js_divergence(logp, logq))`` in one call."""
    if _is_torch(logp) or _is_torch(logq):
        return _torch_kl_js(logp, logq, log_floor, kl=True, js=True)
    return kl_divergence(logp, logq, log_floor=log_floor), js_divergence(logp, logq)


def log_ratio(logprob_oracle, logprob_ignore, *, log_floor: float = LOG_FLOOR) -> np.ndarray:
    """r(t) = log P_oracle(y_t) - log P_ignore(y_t) per position, ``(n,)`` -> ``(n,)``.

    The one definition of r(t): ``RunResult.log_ratio`` and the report's curves call it too.
    r > 0: the chosen token is more likely under B than under A (the seed's ratio > 1).

    It clamps: both log-probabilities are floored at ``log_floor`` (``LOG_FLOOR = -1e4``, as the
    KL's ``log q``) before the difference, so a token impossible under one reference (``-inf``)
    gives a large finite r instead of an infinity that would swamp every window mean, and a token
    impossible under both gives 0 (no preference) instead of ``-inf - -inf = NaN``. Finite
    log-probabilities of chosen tokens lie far above the floor, so for them the clamp changes
    nothing. NaN inputs (missing references) stay NaN. Float inputs keep their dtype (float32
    log-probabilities give float32 r); anything else is computed in float64.
    """
    a, b = np.asarray(logprob_oracle), np.asarray(logprob_ignore)
    a = a if a.dtype.kind == "f" else a.astype(np.float64)
    b = b if b.dtype.kind == "f" else b.astype(np.float64)
    return np.maximum(a, log_floor) - np.maximum(b, log_floor)
