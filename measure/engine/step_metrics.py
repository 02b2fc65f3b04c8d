"""Per-step metric inputs of decode rows and the reference rows that follow them.

A decode step yields one next-token distribution per batch row. A leader row (a run) and its
follower rows (its references, fed the leader's tokens) sit in the same forward, so each step's
comparisons are made right there and only per-position numbers are kept: the chosen token's
log-probability under each reference, KL(run || ref), JS(run, ref) and, per layer, the cosine of
the hidden states. Full distributions never outlive the step. The arithmetic is that of
``measure.engine.scoring.compare`` (``kl_js_between_rows`` on the step's ``prepare``-d rows, the same
blocks as ``kl_js_prepared``; ``cosine_similarity``), one row per (leader, reference) pair instead
of one row per teacher-forced position.

Attention: :class:`RowAttentionCapture` records attention probabilities of selected batch rows
only (the leaders asking for it), and :func:`span_masses` sums them over each row's token spans.

Decode steps: inside :func:`step_attention` (entered around a whole decode) a float32
single-query step on CPU attends with ``measure.model.sdpa.single_query_attention``, which keeps
grouped key/value heads grouped (transformers' own function would repeat every key and value
head for its query heads: for 128 SmolLM2 rows over 300 positions that copy took 112 ms per
layer and step) and returns the attention probabilities it computed, so the capture keeps them
instead of computing them again. Recomputing them took more than the attention itself: for 126
rows of 207 positions, with a third of the rows watched, 2.3 ms a layer for the capture next to
SDPA's 2.2, against 1.85 for both here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from measure.engine import attention
from measure.engine.attention import AttentionCapture
from measure.metrics.divergence import kl_js_between_rows, prepare
from measure.model.sdpa import grouped_sdpa_forward, single_query_attention

STEP_SDPA = "measure_step_sdpa"


def pair_metrics(logprobs: torch.Tensor, hidden: torch.Tensor | None, leaders: torch.Tensor,
                 references: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """Comparisons of batch rows ``leaders[i]`` with rows ``references[i]`` at one step.

    logprobs: (rows, vocab) float32 log-probabilities of the step; hidden: (layers + 1, rows,
    hidden) or None; tokens: (pairs,) the token each leader chose. Returns per pair ``logprob``
    (the chosen token under the reference), ``kl``, ``js`` and, with hidden states,
    ``hidden_cosine`` (layers + 1, pairs).
    """
    kl, js = kl_js_between_rows(prepare(logprobs), leaders, references)
    result = {"logprob": logprobs[references, tokens], "kl": kl, "js": js}
    if hidden is not None:
        result["hidden_cosine"] = torch.nn.functional.cosine_similarity(
            hidden[:, leaders], hidden[:, references], dim=-1)
    return result


def step_sdpa_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, is_causal=None,
                      position_bias=None, **kwargs):
    """``grouped_sdpa_forward``, with float32 single-query CPU steps on ``single_query_attention``
    (half precision stays on SDPA, which accumulates in float32 where two plain products would
    not); records attention for an active :class:`~measure.engine.attention.AttentionCapture` of the module."""
    capture = attention.active_capture(module)
    if (query.device.type == "cpu" and query.dtype == torch.float32 and query.shape[2] == 1
            and query.shape[1] % key.shape[1] == 0 and position_bias is None and dropout == 0.0
            and kwargs.get("softcap") is None and kwargs.get("s_aux") is None and key.shape[-1] == value.shape[-1]):
        output, probabilities = single_query_attention(query, key, value, attention_mask, scaling)
        if capture is not None:
            capture.keep(module, probabilities)
        return output, None
    result = grouped_sdpa_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                  is_causal=is_causal, position_bias=position_bias, **kwargs)
    if capture is not None:
        capture.record(module, query, key, attention_mask, scaling, is_causal, position_bias)
    return result


def _register(name: str) -> None:
    AttentionInterface.register(name, step_sdpa_forward)
    AttentionMaskInterface.register(name, sdpa_mask)


@contextlib.contextmanager
def step_attention(model, capture: AttentionCapture | None) -> Iterator[None]:
    """Inside, the model attends with :func:`step_sdpa_forward`; with ``capture`` given, the capture
    is active too (its implementation name then dispatches to the same function)."""
    if capture is not None:
        with capture:
            _register(capture.name)  # after the capture registered its own function under the name
            try:
                yield
            finally:
                attention.register_capture_attention(capture.name)
        return
    previous = getattr(model.config, "_attn_implementation", None)
    if previous not in ("sdpa", "measure_sdpa"):  # models on other implementations keep theirs
        yield
        return
    _register(STEP_SDPA)
    model.set_attn_implementation(STEP_SDPA)
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


class RowAttentionCapture(AttentionCapture):
    """An :class:`~measure.engine.attention.AttentionCapture` that records only the batch rows in
    ``rows`` (set before each forward): the leaders asking for attention, not their followers.
    Recording every row would repeat the keys of the whole batch per layer and step."""

    rows: torch.Tensor | None = None  # None: every row; empty: none (a forward nobody watches)

    def record(self, module, query, key, attention_mask, *args, **kwargs) -> None:
        if self.rows is not None and not len(self.rows):
            return
        if self.rows is not None:
            query, key = query[self.rows], key[self.rows]
            if attention_mask is not None and attention_mask.shape[0] > 1:
                attention_mask = attention_mask[self.rows]
        super().record(module, query, key, attention_mask, *args, **kwargs)

    def keep(self, module, probabilities: torch.Tensor) -> None:
        if self.rows is not None and not len(self.rows):
            return
        super().keep(module, probabilities if self.rows is None else probabilities[self.rows])


def span_masses(probabilities: Mapping[int, torch.Tensor], query: Sequence[int], spans: Sequence[dict],
                offsets: Sequence[int], ends: Sequence[int]) -> torch.Tensor:
    """Attention mass of one query per row on each of the row's spans, per layer and head.

    probabilities: {layer: (rows, heads, n_query, kv_len)} from a capture; query: per row, which of
    the n_query rows is its query; spans: per row {name: (start, end)} in the row's own token
    positions (the same names in the same order for every row); offsets: where position 0 of a
    row sits on the kv axis; ends: per row, the positions it holds (spans are clipped to them).
    Returns (rows, layers, heads, n_spans).
    """
    layers = sorted(probabilities)
    first = probabilities[layers[0]]
    rows, heads, _, kv_len = first.shape
    device = first.device
    picked = torch.arange(rows, device=device)
    query_index = torch.tensor(list(query), device=device)
    by_layer = torch.stack([probabilities[layer][picked, :, query_index] for layer in layers], dim=1)
    names = list(spans[0])
    bounds = torch.tensor([[spans[row][name] for name in names] for row in range(rows)], device=device)
    end = torch.tensor(list(ends), device=device)[:, None]
    start, stop = bounds[..., 0].clamp(max=end), bounds[..., 1].clamp(max=end)
    position = torch.arange(kv_len, device=device)[None, :] - torch.tensor(list(offsets), device=device)[:, None]
    inside = (position[:, :, None] >= start[:, None, :]) & (position[:, :, None] < stop[:, None, :])
    masses = torch.bmm(by_layer.reshape(rows, len(layers) * heads, kv_len), inside.to(by_layer.dtype))
    return masses.reshape(rows, len(layers), heads, len(names))
