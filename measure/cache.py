"""KV-cache edits: copy and crop, stack rows with left padding, replace the prompt region.

Every function returns a new ``DynamicCache`` and leaves its input untouched, so one forked
prefix can feed any number of conditions. Tensors in a cache layer have shape
``(batch, kv_heads, positions, head_dim)``.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache


def kv_pairs(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


def kv_length(cache: DynamicCache | None) -> int:
    return 0 if cache is None else cache.get_seq_length()


def build_cache(pairs, config) -> DynamicCache:
    return DynamicCache(ddp_cache_data=list(pairs), config=config)


def crop_copy(cache: DynamicCache, length: int, config) -> DynamicCache:
    """A copy holding the first ``length`` positions.

    A copy, not ``DynamicCache.crop``: crop edits in place and ``crop(0)`` is a no-op upstream,
    so forking the same prefix for several conditions needs independent tensors.
    """
    if not 0 < length <= kv_length(cache):
        raise ValueError(f"cannot crop a cache of {kv_length(cache)} positions to {length}")
    return build_cache(((k[:, :, :length].clone(), v[:, :, :length].clone()) for k, v in kv_pairs(cache)), config)


def stack_left_padded(caches: list[DynamicCache], config) -> tuple[DynamicCache, list[int]]:
    """Stack single-row caches into one batch, left-padding shorter rows with zeros.

    Returns the batch cache and each row's number of padding positions; the caller masks them
    out and keeps each row's own position ids (padding occupies no RoPE positions).
    """
    lengths = [kv_length(cache) for cache in caches]
    longest = max(lengths)
    pads = [longest - length for length in lengths]
    layers = []
    for layer_index in range(len(caches[0].layers)):
        keys, values = [], []
        for cache, pad in zip(caches, pads):
            key, value = cache.layers[layer_index].keys, cache.layers[layer_index].values
            keys.append(torch.nn.functional.pad(key, (0, 0, pad, 0)))
            values.append(torch.nn.functional.pad(value, (0, 0, pad, 0)))
        layers.append((torch.cat(keys, dim=0), torch.cat(values, dim=0)))
    return build_cache(layers, config), pads


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def shift_rotary_keys(keys: torch.Tensor, shift: int, rotary_embedding: torch.nn.Module) -> torch.Tensor:
    """Move RoPE-rotated keys by ``shift`` positions.

    RoPE rotates a key at position p by the angle p * theta_i, so a further rotation by
    shift * theta_i puts it at p + shift exactly; cos/sin come from the model's own rotary
    module (so frequency scaling such as llama3's is respected) with its output scaling undone.
    """
    if shift == 0:
        return keys
    position = torch.tensor([[shift]], device=keys.device)
    probe = keys.new_zeros(1, 1, keys.shape[-1])
    cos, sin = rotary_embedding(probe, position)
    scaling = getattr(rotary_embedding, "attention_scaling", 1.0)
    cos = (cos / scaling).to(keys.dtype)[0, 0]
    sin = (sin / scaling).to(keys.dtype)[0, 0]
    return keys * cos + rotate_half(keys) * sin


def replace_prompt_region(
    stale: DynamicCache,
    old_prompt_length: int,
    fresh_prompt: DynamicCache,
    new_prompt_length: int,
    keep_until: int,
    rotary_embedding: torch.nn.Module,
    config,
) -> DynamicCache:
    """Fresh KV of the new prompt, followed by the stale KV of the generated tokens.

    ``stale`` holds old prompt + generated tokens; positions ``old_prompt_length:keep_until``
    (generated tokens computed under the old prompt) are kept and their keys re-rotated by the
    change in prompt length, so they sit right after the new prompt.
    """
    shift = new_prompt_length - old_prompt_length
    layers = []
    for (stale_key, stale_value), (fresh_key, fresh_value) in zip(kv_pairs(stale), kv_pairs(fresh_prompt)):
        kept_key = shift_rotary_keys(stale_key[:, :, old_prompt_length:keep_until], shift, rotary_embedding)
        kept_value = stale_value[:, :, old_prompt_length:keep_until]
        layers.append((
            torch.cat([fresh_key[:, :, :new_prompt_length], kept_key], dim=2),
            torch.cat([fresh_value[:, :, :new_prompt_length], kept_value], dim=2),
        ))
    return build_cache(layers, config)


def rotary_embedding_of(model: torch.nn.Module) -> torch.nn.Module | None:
    """The model's shared rotary-embedding module, or None for absolute-position models."""
    for name, module in model.named_modules():
        if name.endswith("rotary_emb"):
            return module
    return None
