"""Batched decoding of rows that each continue their own KV cache.

Rows may start from caches of different lengths (inserted texts differ in length): each row's
feed is prefilled on its own, then the rows are stacked with left padding and decoded in
lockstep, each with its own attention mask and position ids, so padding takes no RoPE position
and a batched row produces the same tokens as the row decoded alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from measure import cache as kv


@dataclass
class DecodeRow:
    cache: DynamicCache | None  # context already in KV, one row; None to start from nothing
    feed: list[int]  # fed before the first new token; must not be empty
    max_new_tokens: int
    generator: torch.Generator | None = None  # None: greedy
    keep_logprobs: bool = False  # keep the full decode-time log-probabilities (n_new, vocab)
    keep_cache: bool = False  # return the row's final cache (context + feed + new tokens but the last)


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
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True)
    return out.logits[0, -1].float(), out.cache


def _extract_row(cache: DynamicCache, row: int, pad: int, length: int, config) -> DynamicCache:
    return kv.build_cache(
        ((k[row:row + 1, :, pad:pad + length].clone(), v[row:row + 1, :, pad:pad + length].clone())
         for k, v in kv.kv_pairs(cache)),
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
    progress=None,
) -> list[Decoded]:
    """Decode every row; rows are processed ``batch_size`` at a time in one padded batch."""
    results: list[Decoded | None] = [None] * len(rows)
    for start in range(0, len(rows), batch_size):
        chunk = list(enumerate(rows[start:start + batch_size], start))
        for index, decoded in _decode_batch(model, chunk, eos_ids, pad_id, temperature, progress):
            results[index] = decoded
    return results  # type: ignore[return-value]


def _decode_batch(model, chunk, eos_ids, pad_id, temperature, progress):
    config = model.config
    device = model.device
    live: list[_Live] = []
    caches, first_logits = [], []
    for index, row in chunk:
        if not row.feed:
            raise ValueError("a decode row needs at least one token to feed")
        logits, cache = prefill(model, row.cache, row.feed)
        state = _Live(index, row, kv.kv_length(cache))
        state.decoded.positions_evaluated = len(row.feed)
        live.append(state)
        caches.append(cache)
        first_logits.append(logits)
    batch_cache, pads = kv.stack_left_padded(caches, config)
    logits = torch.stack(first_logits)
    width = kv.kv_length(batch_cache)
    mask = torch.zeros(len(live), width, dtype=torch.long, device=device)
    for i, pad in enumerate(pads):
        mask[i, pad:] = 1
    pads = torch.tensor(pads, device=device)

    while live:
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        next_tokens, keep = [], []
        for i, state in enumerate(live):
            token = choose_token(logprobs[i], state.row.generator, temperature)
            state.decoded.tokens.append(token)
            state.decoded.token_logprobs.append(float(logprobs[i, token]))
            if state.row.keep_logprobs:
                state.steps.append(logprobs[i].cpu())
            finished = token in eos_ids or len(state.decoded.tokens) >= state.row.max_new_tokens
            if finished:
                state.decoded.stop_reason = "eos" if token in eos_ids else "max_new_tokens"
                yield state.index, _finish(state, batch_cache, i, int(pads[i]), config)
            else:
                keep.append(i)
                next_tokens.append(token)
        if progress is not None:
            progress(len(live))
        if not keep:
            return
        if len(keep) < len(live):
            index = torch.tensor(keep, device=device)
            batch_cache = kv.build_cache(
                ((k.index_select(0, index), v.index_select(0, index)) for k, v in kv.kv_pairs(batch_cache)), config
            )
            mask, pads = mask.index_select(0, index), pads.index_select(0, index)
            live = [live[i] for i in keep]
        ids = torch.tensor(next_tokens, device=device)[:, None]
        positions = torch.tensor([state.length for state in live], device=device)[:, None]
        mask = torch.cat([mask, mask.new_ones(len(live), 1)], dim=1)
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=batch_cache, use_cache=True)
        batch_cache, logits = out.cache, out.logits[:, -1]
        for state in live:
            state.length += 1
            state.decoded.positions_evaluated += 1


def _finish(state: _Live, batch_cache, row: int, pad: int, config) -> Decoded:
    decoded = state.decoded
    if state.row.keep_logprobs:
        decoded.logprobs = torch.stack(state.steps)
    if state.row.keep_cache:
        decoded.cache = _extract_row(batch_cache, row, pad, state.length, config)
    return decoded
