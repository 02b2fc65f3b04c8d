"""One padded forward for rows that each continue their own cache with their own tokens.

Layout of a row on the cache axis: [left padding][its cache][its feed][right padding]. Padding
is masked out and takes no position id, so each row computes exactly its own stream; causal
attention keeps the right padding from reaching any real position.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache

from measure.engine import cache as kv


@dataclass
class PaddedBatch:
    cache: Cache | None  # the rows' caches stacked with left padding; None if all were empty
    input_ids: torch.Tensor  # (rows, width) feeds, right-padded
    attention_mask: torch.Tensor  # (rows, past + width), 1 on each row's real positions
    position_ids: torch.Tensor  # (rows, width), continuing from each row's own cache length
    cache_lengths: list[int]
    pads: list[int]  # left padding of each row's cache
    width: int


def pad_batch(model, caches: list[DynamicCache | None], feeds: list[list[int]], pad_id: int,
              room: int = 0, spare_rows: int = 0) -> PaddedBatch:
    """The padded forward's inputs; with ``room`` > 0 the stacked cache is preallocated with room
    for that many more positions and ``spare_rows`` more rows (see measure.engine.cache.stack_left_padded)."""
    device = model.device
    config = model.config
    lengths = [kv.kv_length(cache) for cache in caches]
    template = next((cache for cache, length in zip(caches, lengths) if length > 0), None)
    if template is None:
        batch_cache, pads = None, [0] * len(caches)
    else:
        batch_cache, pads = kv.stack_left_padded(
            [cache if length > 0 else kv.empty_like(template, config) for cache, length in zip(caches, lengths)],
            config, extra=room, spare_rows=spare_rows)
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


@contextmanager
def vocabulary_projection_at(model, rows: torch.Tensor, columns: torch.Tensor) -> Iterator[None]:
    """Inside the block, the model's output projection sees only ``hidden[rows[i], columns[i]]``:
    a forward's logits come out ``(1, len(rows), vocab)``, in that order.

    The projection onto the vocabulary is the largest matmul of a forward, and a padded batch
    needs it at a few positions of each row (a row's last fed token, or its scored positions),
    which ``logits_to_keep`` cannot express when rows end at different columns. Call the model
    with ``logits_to_keep=0`` (all positions reach the projection, which then gathers).
    """
    head = model.get_output_embeddings()
    if head is None:
        raise TypeError(f"{type(model).__name__} has no output embeddings to project hidden states with")

    def gather(module, args):
        return (args[0][rows, columns][None], *args[1:])

    handle = head.register_forward_pre_hook(gather)
    try:
        yield
    finally:
        handle.remove()
