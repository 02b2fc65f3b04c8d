"""An independent reference for the ``partial`` condition's starting cache.

The partial condition (:class:`measure.engine.conditions.Partial`) keeps the stale keys and values
of the generated tokens y[:t0 - r] (computed under problem A) and puts B's fresh prompt KV in
front of them, re-rotating the stale keys by len(B) - len(A) positions (r = ``recompute_last``).
Its own checks (``decode_vs_recompute``) run through that same cache, so a wrong prompt swap or a
rotation by the wrong amount or sign would pass them. This module builds the cache it should be
from scratch, sharing no code with :mod:`measure.engine.cache`:

- B's prompt keys and values: a fresh prefill of B alone;
- the generated tokens' keys and values: a fresh prefill of A + y[:t0 - r], the generated part;
- their keys moved to positions len(B) + i by transformers' own ``apply_rotary_pos_emb`` (from
  the model's modeling module) with the model's rotary embedding: first rotated back from their
  positions under A (the inverse rotation, cos and -sin at len(A) + i), then forward to their
  positions under B (cos and sin at len(B) + i). The engine instead rotates once by the
  difference; the two agree only when the amount, the sign and each layer's frequencies are right.

Both prefills use transformers' ``DynamicCache()`` without a config, whose plain layers keep every
position (a sliding-window layer's cache would drop the old ones).
"""

from __future__ import annotations

import importlib

import torch
from transformers import DynamicCache

from measure.model import compat


def apply_rotary_of(model: torch.nn.Module):
    """transformers' ``apply_rotary_pos_emb`` of the model's family (modeling_<family>.py)."""
    module = importlib.import_module(type(model).__module__)
    if not hasattr(module, "apply_rotary_pos_emb"):
        raise ValueError(f"{type(model).__name__}: {module.__name__} has no apply_rotary_pos_emb (not a RoPE model)")
    return module.apply_rotary_pos_emb


def _rotary_module(model: torch.nn.Module) -> torch.nn.Module:
    rotary = getattr(getattr(model, "model", model), "rotary_emb", None)
    if rotary is None:
        raise ValueError(f"{type(model).__name__} has no rotary embedding at model.rotary_emb")
    return rotary


def _cos_sin(rotary: torch.nn.Module, like: torch.Tensor, positions: torch.Tensor, layer_type: str | None):
    """cos, sin at ``positions`` ``(1, n)`` and the rotary module's output scaling for the layer type."""
    if layer_type is not None and hasattr(rotary, f"{layer_type}_inv_freq"):  # Gemma 3: frequencies per layer type
        cos, sin = rotary(like, positions, layer_type)
        return cos, sin, getattr(rotary, f"{layer_type}_attention_scaling", 1.0)
    cos, sin = rotary(like, positions)
    return cos, sin, getattr(rotary, "attention_scaling", 1.0)


@torch.inference_mode()
def _prefill_pairs(model: torch.nn.Module, ids: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    cache = DynamicCache()
    device = next(model.parameters()).device
    out = compat.forward(model, cache, input_ids=torch.tensor([ids], device=device), use_cache=True)
    cache = compat.returned_cache(out)
    pairs = [(layer.keys, layer.values) for layer in cache.layers]
    if any(keys.shape[-2] != len(ids) for keys, _ in pairs):
        raise RuntimeError("a prefill cache dropped positions; the reference needs every position in every layer")
    return pairs


@torch.inference_mode()
def expected_partial_pairs(model: torch.nn.Module, prompt_a: list[int], prompt_b: list[int],
                           stale_tokens: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer ``(keys, values)``, each ``(1, kv_heads, len(B) + len(stale_tokens), head_dim)``:
    B's fresh prompt KV, then the KV of ``stale_tokens`` computed after A, keys moved to follow B."""
    fresh_b = _prefill_pairs(model, prompt_b)
    under_a = _prefill_pairs(model, prompt_a + stale_tokens)
    apply_rotary = apply_rotary_of(model)
    rotary = _rotary_module(model)
    config = model.config.get_text_config(decoder=True)
    types = list(getattr(config, "layer_types", None) or [None] * len(fresh_b))
    n, a, b = len(stale_tokens), len(prompt_a), len(prompt_b)
    device = fresh_b[0][0].device
    old_positions = torch.arange(a, a + n, device=device)[None]
    new_positions = torch.arange(b, b + n, device=device)[None]
    pairs = []
    for layer_type, (b_keys, b_values), (a_keys, a_values) in zip(types, fresh_b, under_a):
        stale_keys, stale_values = a_keys[:, :, a:], a_values[:, :, a:]
        cos, sin, scaling = _cos_sin(rotary, stale_keys, old_positions, layer_type)
        # The model's keys are scaling * R(old) k; R(-old) / scaling^2 of them is k itself.
        _, unrotated = apply_rotary(stale_keys, stale_keys, cos / scaling**2, -sin / scaling**2)
        cos, sin, _ = _cos_sin(rotary, stale_keys, new_positions, layer_type)
        _, moved = apply_rotary(unrotated, unrotated, cos, sin)
        pairs.append((torch.cat([b_keys, moved.to(b_keys.dtype)], dim=2), torch.cat([b_values, stale_values], dim=2)))
    return pairs


def max_partial_difference(model: torch.nn.Module, cache_pairs, prompt_a: list[int], prompt_b: list[int],
                           stale_tokens: list[int]) -> float:
    """Largest |difference| between a partial cache's keys and values (``cache_pairs``: per layer,
    row 0 is compared) and :func:`expected_partial_pairs`; inf when the shapes differ."""
    expected = expected_partial_pairs(model, prompt_a, prompt_b, stale_tokens)
    pairs = list(cache_pairs)
    if len(pairs) != len(expected):
        return float("inf")
    largest = 0.0
    for got, want in zip(pairs, expected):
        for got_tensor, want_tensor in zip(got, want):
            got_tensor = got_tensor[:1]
            if got_tensor.shape != want_tensor.shape:
                return float("inf")
            largest = max(largest, float((got_tensor.float() - want_tensor.float()).abs().max()))
    return largest
