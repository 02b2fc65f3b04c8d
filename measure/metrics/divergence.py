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
"""

from __future__ import annotations

import math
import sys

import numpy as np

LN2 = math.log(2.0)
LOG_FLOOR = -1e4


def _is_torch(x) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _torch_prep(logp, logq):
    torch = sys.modules["torch"]
    device = (logp if torch.is_tensor(logp) else logq).device
    logp = torch.as_tensor(logp, device=device)
    logq = torch.as_tensor(logq, device=device)
    dtype = torch.promote_types(torch.promote_types(logp.dtype, logq.dtype), torch.float32)
    return torch, logp.to(dtype), logq.to(dtype)


def _kl_torch(torch, logp, logq, log_floor):
    p = logp.exp()
    diff = logp - logq.clamp_min(log_floor)
    term = torch.where(p > 0, p * diff, torch.zeros_like(p))
    return term.sum(-1).clamp_min(0.0)


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
        torch, logp, logq = _torch_prep(logp, logq)
        return _kl_torch(torch, logp, logq, log_floor)
    logp = np.asarray(logp, dtype=np.float64)
    logq = np.asarray(logq, dtype=np.float64)
    return _kl_numpy(logp, logq, log_floor)


def js_divergence(logp, logq):
    """Jensen-Shannon divergence 0.5 KL(P||M) + 0.5 KL(Q||M), M = (P + Q) / 2, in nats.

    Symmetric, bounded by ln 2, finite for any inputs (M > 0 wherever P or Q is).
    ``(..., vocab)`` -> ``(...)``.
    """
    if _is_torch(logp) or _is_torch(logq):
        torch, logp, logq = _torch_prep(logp, logq)
        logm = torch.logaddexp(logp, logq) - LN2
        js = 0.5 * (_kl_torch(torch, logp, logm, -math.inf) + _kl_torch(torch, logq, logm, -math.inf))
        return js.clamp(0.0, LN2)
    logp = np.asarray(logp, dtype=np.float64)
    logq = np.asarray(logq, dtype=np.float64)
    logm = np.logaddexp(logp, logq) - LN2
    js = 0.5 * (_kl_numpy(logp, logm, -np.inf) + _kl_numpy(logq, logm, -np.inf))
    return np.clip(js, 0.0, LN2)


def kl_and_js(logp, logq, *, log_floor: float = LOG_FLOOR):
    """``(kl_divergence(logp, logq), js_divergence(logp, logq))`` in one call."""
    return kl_divergence(logp, logq, log_floor=log_floor), js_divergence(logp, logq)


def log_ratio(logprob_oracle, logprob_ignore, *, log_floor: float = LOG_FLOOR) -> np.ndarray:
    """r(t) = log P_oracle(y_t) - log P_ignore(y_t) per position, ``(n,)`` -> ``(n,)``.

    r > 0: the chosen token is more likely under B than under A (the seed's ratio > 1).
    Log-probabilities are clamped to ``log_floor`` first, so ``-inf`` gives a large finite value
    and ``-inf - -inf`` gives 0 rather than NaN. NaN inputs (missing references) stay NaN.
    """
    a = np.asarray(logprob_oracle, dtype=np.float64)
    b = np.asarray(logprob_ignore, dtype=np.float64)
    return np.maximum(a, log_floor) - np.maximum(b, log_floor)
