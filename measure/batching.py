"""One padded forward for rows that each continue their own cache with their own tokens.

Layout of a row on the cache axis: [left padding][its cache][its feed][right padding]. Padding
is masked out and takes no position id, so each row computes exactly its own stream; causal
attention keeps the right padding from reaching any real position.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache

from measure import cache as kv


@dataclass
class PaddedBatch:
    cache: DynamicCache | None  # the rows' caches stacked with left padding; None if all were empty
    input_ids: torch.Tensor  # (rows, width) feeds, right-padded
    attention_mask: torch.Tensor  # (rows, past + width), 1 on each row's real positions
    position_ids: torch.Tensor  # (rows, width), continuing from each row's own cache length
    cache_lengths: list[int]
    pads: list[int]  # left padding of each row's cache
    width: int


def pad_batch(model, caches: list[DynamicCache | None], feeds: list[list[int]], pad_id: int) -> PaddedBatch:
    device = model.device
    config = model.config
    lengths = [kv.kv_length(cache) for cache in caches]
    template = next((cache for cache, length in zip(caches, lengths) if length > 0), None)
    if template is None:
        batch_cache, pads = None, [0] * len(caches)
    else:
        batch_cache, pads = kv.stack_left_padded(
            [cache if length > 0 else kv.empty_like(template, config) for cache, length in zip(caches, lengths)],
            config)
    past = max(lengths)
    width = max(len(feed) for feed in feeds)
    ids = torch.full((len(feeds), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros(len(feeds), past + width, dtype=torch.long, device=device)
    positions = torch.zeros(len(feeds), width, dtype=torch.long, device=device)
    for row, feed in enumerate(feeds):
        ids[row, :len(feed)] = torch.tensor(feed, device=device)
        mask[row, pads[row]:past + len(feed)] = 1
        positions[row] = torch.arange(lengths[row], lengths[row] + width, device=device)
    return PaddedBatch(batch_cache, ids, mask, positions, lengths, pads, width)
