"""Batched decoding of rows that each continue their own KV cache.

Rows may start from caches of different lengths and feed different numbers of tokens (inserted
texts differ in length): caches are stacked with left padding, feeds right-padded and prefilled in
one forward, then the rows decode in lockstep, each with its own attention mask and position ids,
so padding takes no RoPE position and a batched row produces the same tokens as the row alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from measure import cache as kv
from measure import compat
from measure.batching import pad_batch, vocabulary_projection_at
from measure.memory import batch_cap


@dataclass
class DecodeRow:
    cache: DynamicCache | None  # context already in KV, one row; None to start from nothing
    feed: list[int]  # fed before the first new token; must not be empty
    max_new_tokens: int
    generator: torch.Generator | None = None  # None: greedy
    keep_logprobs: bool = False  # keep the full decode-time log-probabilities (n_new, vocab)
    keep_cache: bool = False  # return the row's final cache (context + feed + new tokens but the last)
    on_token: Callable[[int, int], None] | None = None  # called with (index, token) as each token is chosen


@dataclass
class Decoded:
    tokens: list[int]
    token_logprobs: list[float]
    stop_reason: str  # "eos" | "max_new_tokens"
    logprobs: torch.Tensor | None = None
    cache: DynamicCache | None = None
    positions_evaluated: int = 0  # token positions run through the model for this row


@dataclass
class _Live:
    index: int
    row: DecodeRow
    length: int  # KV positions of this row (without padding)
    decoded: Decoded = field(default_factory=lambda: Decoded([], [], "max_new_tokens"))
    done: bool = False
    steps: list[torch.Tensor] = field(default_factory=list)


def choose_token(logprobs: torch.Tensor, generator: torch.Generator | None, temperature: float) -> int:
    if generator is None:
        return int(logprobs.argmax())
    probs = torch.softmax(logprobs / temperature, dim=-1)
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


@torch.inference_mode()
def prefill(model, cache: DynamicCache | None, feed: list[int]) -> tuple[torch.Tensor, DynamicCache]:
    """Feed tokens after a cache; returns last-position logits (vocab,) and the extended cache."""
    device = model.device
    start = kv.kv_length(cache)
    if cache is None:
        cache = DynamicCache(config=model.config)
    else:
        cache = kv.build_cache(kv.kv_pairs(cache), model.config)
    ids = torch.tensor([feed], device=device)
    positions = torch.arange(start, start + len(feed), device=device)[None]
    mask = torch.ones(1, start + len(feed), dtype=torch.long, device=device)
    out = compat.forward(model, cache, input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
    return out.logits[0, -1].float(), compat.returned_cache(out)


def _extract_row(cache, row: int, row_mask: torch.Tensor, config) -> DynamicCache:
    """The row's own positions (those its mask keeps), as a one-row cache."""
    keep = row_mask.nonzero()[:, 0]
    return kv.build_cache(
        ((k[row:row + 1].index_select(2, keep), v[row:row + 1].index_select(2, keep)) for k, v in kv.kv_pairs(cache)),
        config,
    )


@torch.inference_mode()
def decode_rows(
    model,
    rows: list[DecodeRow],
    eos_ids: set[int],
    pad_id: int,
    temperature: float = 1.0,
    batch_size: int = 16,
) -> list[Decoded]:
    """Decode every row; rows are processed ``batch_size`` at a time in one padded batch.

    ``batch_size`` is capped by what fits in free memory (see measure.memory.batch_cap).
    """
    if rows:
        longest = max(kv.kv_length(row.cache) + len(row.feed) + row.max_new_tokens for row in rows)
        batch_size = min(batch_size, batch_cap(model, longest))
    results: list[Decoded | None] = [None] * len(rows)
    for start in range(0, len(rows), batch_size):
        chunk = list(enumerate(rows[start:start + batch_size], start))
        for index, decoded in _decode_batch(model, chunk, eos_ids, pad_id, temperature):
            results[index] = decoded
    return results  # type: ignore[return-value]


def _decode_batch(model, chunk, eos_ids, pad_id, temperature):
    """Prefill every row's feed in one padded forward (measure.batching), then decode the rows
    in lockstep; each step appends one position per row after the right padding."""
    config = model.config
    device = model.device
    rows = [row for _, row in chunk]
    if any(not row.feed for row in rows):
        raise ValueError("a decode row needs at least one token to feed")
    room = max(len(row.feed) for row in rows) + max(row.max_new_tokens for row in rows)
    batch = pad_batch(model, [row.cache for row in rows], [row.feed for row in rows], pad_id, room=room)
    batch_cache = kv.preallocated_empty(len(rows), model, room) if batch.cache is None else batch.cache
    ids, mask, positions, lengths = batch.input_ids, batch.attention_mask, batch.position_ids, batch.cache_lengths
    # Only each row's last fed position needs logits; a (positions x vocabulary) block for the
    # whole prompt would be the largest allocation of the batch.
    last_fed = torch.tensor([len(row.feed) - 1 for row in rows], device=device)
    with vocabulary_projection_at(model, torch.arange(len(rows), device=device), last_fed):
        out = compat.forward(model, batch_cache, input_ids=ids, attention_mask=mask, position_ids=positions,
                             use_cache=True, logits_to_keep=0)
    logits = out.logits[0]
    live: list[_Live] = []
    for (index, row), length in zip(chunk, lengths):
        state = _Live(index, row, length + len(row.feed))
        state.decoded.positions_evaluated = len(row.feed)
        live.append(state)

    while True:
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        greedy = logprobs.argmax(dim=-1).tolist()
        fed = []
        for i, state in enumerate(live):
            if state.done:
                fed.append(pad_id)
                continue
            generator = state.row.generator
            token = greedy[i] if generator is None else choose_token(logprobs[i], generator, temperature)
            state.decoded.tokens.append(token)
            state.decoded.token_logprobs.append(float(logprobs[i, token]))
            if state.row.on_token is not None:
                state.row.on_token(len(state.decoded.tokens) - 1, token)
            if state.row.keep_logprobs:
                state.steps.append(logprobs[i].cpu())
            fed.append(token)
            if token in eos_ids or len(state.decoded.tokens) >= state.row.max_new_tokens:
                state.done = True
                state.decoded.stop_reason = "eos" if token in eos_ids else "max_new_tokens"
                yield state.index, _finish(state, batch_cache, i, mask[i], config)
        active = [i for i, state in enumerate(live) if not state.done]
        if not active:
            return
        if len(live) - len(active) >= max(1, len(live) // 4):
            # Dropping finished rows copies the whole cache: do it only when it saves a quarter
            # of the batch; until then finished rows ride along and what they produce is ignored.
            index = torch.tensor(active, device=device)
            batch_cache.batch_select_indices(index)
            mask = mask.index_select(0, index)
            live = [live[i] for i in active]
            fed = [fed[i] for i in active]
        ids = torch.tensor(fed, device=device)[:, None]
        positions = torch.tensor([state.length for state in live], device=device)[:, None]
        mask = torch.cat([mask, mask.new_ones(len(live), 1)], dim=1)
        out = compat.forward(model, batch_cache, input_ids=ids, attention_mask=mask, position_ids=positions,
                             use_cache=True)
        logits = out.logits[:, -1]
        for state in live:
            state.length += 1
            if not state.done:
                state.decoded.positions_evaluated += 1


def _finish(state: _Live, batch_cache, row: int, row_mask: torch.Tensor, config) -> Decoded:
    decoded = state.decoded
    if state.row.keep_logprobs:
        decoded.logprobs = torch.stack(state.steps)
    if state.row.keep_cache:
        decoded.cache = _extract_row(batch_cache, row, row_mask, config)
    return decoded
