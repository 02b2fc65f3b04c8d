"""Typed results the engine produces and the metrics and reports consume.

A run is one token stream: a prompt, the generated tokens shared with the ignore run up to the
injection point t0, the inserted text X (empty for ignore, oracle, flush and partial), and the
continuation generated after it. Per-position arrays cover every generated token
(``generated_ids``), so index ``t0`` is the first token generated after the change; entries before
t0 are those of the ignore run, which shares them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from measure.metrics import divergence

#: The reference runs: generated once per problem (point ``"-"``), not per injection point; every
#: condition is measured against them and they are not interventions themselves.
REFERENCE_RUNS = ("ignore", "oracle")
#: The reference distributions each run is scored against, teacher-forced on the run's own tokens
#: (``logprob_ref``, ``kl``, ``js``, ``hidden_cosine`` are keyed by them): P_ignore (prompt A),
#: P_oracle (prompt B) and P_matched (the run's own stream with A swapped for B).
REFERENCES = ("ignore", "oracle", "matched")
SPAN_NAMES = ("prompt", "prefix", "inserted", "after")


@dataclass
class RunResult:
    """One condition at one injection point for one problem pair.

    Arrays over generated positions have shape ``(n_generated,)``; ``hidden_cosine[ref]`` has
    shape ``(n_layers + 1, n_generated)`` (embeddings first); ``attention_mass`` has shape
    ``(n_layers, n_heads, n_after, len(SPAN_NAMES))``: for each query after the change, the
    attention probability summed over each span of the stream.
    """

    problem_id: str
    condition: str
    point: str  # "t16", "f0.3", or "-" for the once-per-problem ignore and oracle runs
    t0: int  # generated tokens shared with the ignore run before the change (0 for ignore/oracle)
    prompt_ids: list[int]
    generated_ids: list[int]
    inserted_ids: list[int]
    prompt_text: str
    inserted_text: str
    generated_text: str
    continuation_text: str  # text of generated_ids[t0:]
    stop_reason: str  # "eos" | "max_new_tokens"
    # Token-stream spans (start, end) in the run's own stream prompt + y[:t0] + X + after.
    spans: dict[str, tuple[int, int]]
    # Per generated position: log-probability of the chosen token under the run itself and under
    # each reference, and divergences of the run's distribution from each reference.
    logprob_run: np.ndarray
    logprob_ref: dict[str, np.ndarray]
    kl: dict[str, np.ndarray]
    js: dict[str, np.ndarray]
    hidden_cosine: dict[str, np.ndarray] = field(default_factory=dict)
    attention_mass: np.ndarray | None = None
    generated_pieces: list[str] = field(default_factory=list)  # each generated token decoded alone
    # Invariant measurements made while producing this run (name -> value), e.g. the largest
    # |log p| difference between decode-time and recomputed log-probabilities.
    checks: dict[str, float] = field(default_factory=dict)
    # A strategy run (several updates, measure.engine.conditions.Scheduled): each update as
    # {"index", "t", "stream_start", "n_tokens", "text", "delivered"} and the problem it ends with
    # ("a", "b" or "c"), which P_oracle and P_matched use. None for single-update conditions.
    schedule: list[dict] | None = None
    final_problem: str | None = None
    # Per generated position: KL(P_oracle || P_ignore) on the run's own tokens, how much B vs A
    # still matters given them (the expected increment of r(t) were the run P_oracle). None when
    # the engine did not compare the two references.
    kl_oracle_ignore: np.ndarray | None = None

    @property
    def n_generated(self) -> int:
        return len(self.generated_ids)

    @property
    def n_after(self) -> int:
        return len(self.generated_ids) - self.t0

    @property
    def log_ratio(self) -> np.ndarray:
        """r(t) = log P_oracle(y_t) - log P_ignore(y_t) per generated position
        (:func:`measure.metrics.divergence.log_ratio`)."""
        return divergence.log_ratio(self.logprob_ref["oracle"], self.logprob_ref["ignore"])
