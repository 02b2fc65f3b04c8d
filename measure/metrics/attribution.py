"""Per-token attribution of generated tokens after the change to the old or the new problem.

Each token y_t (t >= t0) is labelled from its probability under the two references
P_oracle (B from the start) and P_ignore (A, the update removed):

- ``injected``: likely under B only   (p_B >= threshold, p_A <  threshold)
- ``original``: likely under A only   (p_A >= threshold, p_B <  threshold)
- ``mixed``:    likely under both     (p_A >= threshold, p_B >= threshold)
- ``neither``:  likely under neither  (both below threshold, or a reference missing: NaN)

"Likely" means probability >= ``threshold`` (default ``DEFAULT_LIKELY = 0.1``, i.e. the token is
among the few the reference model would seriously consider). The comparison is done on
log-probabilities against ``log(threshold)``.
"""

from __future__ import annotations

import math

import numpy as np

from measure.metrics.windows import after_t0

LABELS = ("injected", "original", "mixed", "neither")
DEFAULT_LIKELY = 0.1


def attribute_tokens(logprob_oracle, logprob_ignore, t0: int = 0, threshold: float = DEFAULT_LIKELY) -> np.ndarray:
    """Labels ``(n_after,)`` (strings from LABELS) for the tokens at indices ``t0`` onwards."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be a probability in (0, 1], got {threshold}")
    lb = after_t0(logprob_oracle, t0)
    la = after_t0(logprob_ignore, t0)
    log_thr = math.log(threshold)
    with np.errstate(invalid="ignore"):
        b = lb >= log_thr
        a = la >= log_thr
    labels = np.full(lb.shape, "neither", dtype=object)
    labels[b & ~a] = "injected"
    labels[a & ~b] = "original"
    labels[a & b] = "mixed"
    return labels


def attribution_counts(labels) -> dict[str, int]:
    """``{label: count}`` for every label in LABELS (zeros included)."""
    labels = np.asarray(labels, dtype=object)
    return {lab: int((labels == lab).sum()) for lab in LABELS}


def attribution_shares(labels) -> dict[str, float | None]:
    """``{label: share}``; None for every label when there are no tokens."""
    counts = attribution_counts(labels)
    n = sum(counts.values())
    return {lab: (c / n if n else None) for lab, c in counts.items()}
