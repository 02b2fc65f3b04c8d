"""Synthetic RunResults whose true latencies are known by construction."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import log_softmax

from measure.engine.results import RunResult
from measure.metrics.divergence import js_divergence, kl_divergence

VOCAB = 32


def peaked(token: int, vocab: int = VOCAB, height: float = 6.0) -> np.ndarray:
    """Log-probabilities of a distribution peaked on ``token``: (vocab,)."""
    logits = np.zeros(vocab)
    logits[token] = height
    return log_softmax(logits)


def synthetic_run(switch: int, t0: int = 10, n_after: int = 40, attention: bool = True, n_layers: int = 2) -> RunResult:
    """A run that follows A (token 3) until 1-based position ``switch`` after t0, then B (token 7).

    P_ignore = A and P_oracle = P_matched = B at every position. Before t0 the run is A (it is the
    ignore run there). The first token that favours B, and the stabilization latency, equal
    ``switch``; the attention onto the inserted span alternates 0.1/0.5 until
    ``switch`` and is 0.3 from then on, so its stabilization latency is ``switch`` too.
    """
    a, b = peaked(3), peaked(7)
    n = t0 + n_after
    k = t0 + switch - 1  # index of the first B-token
    run_lp = np.stack([a if i < k else b for i in range(n)])  # (n, vocab)
    ign = np.broadcast_to(a, run_lp.shape)
    orc = np.broadcast_to(b, run_lp.shape)
    ids = run_lp.argmax(-1)
    pick = lambda lp: lp[np.arange(n), ids]  # noqa: E731
    kl = {"ignore": kl_divergence(run_lp, ign), "oracle": kl_divergence(run_lp, orc), "matched": kl_divergence(run_lp, orc)}
    js = {"ignore": js_divergence(run_lp, ign), "oracle": js_divergence(run_lp, orc), "matched": js_divergence(run_lp, orc)}
    mass = None
    if attention:
        ins = np.array([0.3 if j >= switch - 1 else (0.1 if j % 2 == 0 else 0.5) for j in range(n_after)])
        rest = 1.0 - ins
        per_query = np.stack([rest * 0.5, rest * 0.2, ins, rest * 0.3], axis=-1)  # (n_after, 4)
        mass = np.broadcast_to(per_query, (n_layers, 3, n_after, 4)).copy()
    hc = {ref: np.vstack([np.ones(n)] + [np.linspace(0.5, 1.0, n)] * n_layers) for ref in ("oracle", "ignore")}
    return RunResult(
        problem_id="p1", condition="injection", point=f"t{t0}", t0=t0,
        prompt_ids=list(range(12)), generated_ids=[int(i) for i in ids], inserted_ids=[1, 2, 3, 4],
        prompt_text="A", inserted_text="U", generated_text="so the answer is 12.",
        continuation_text="the answer is 12.", stop_reason="max_new_tokens",
        spans={"prompt": (0, 12), "prefix": (12, 12 + t0), "inserted": (12 + t0, 16 + t0), "after": (16 + t0, 16 + n)},
        logprob_run=pick(run_lp), logprob_ref={"ignore": pick(ign), "oracle": pick(orc), "matched": pick(orc)},
        kl=kl, js=js, hidden_cosine=hc, attention_mass=mass,
    )


@pytest.fixture
def make_run():
    return synthetic_run
