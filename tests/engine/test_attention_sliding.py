"""Attention capture on models with sliding-window layers and Gemma 3's quirks (embedding scaling,
query pre-attention scalar, final logit soft-capping, two rope bases), against eager attention,
on streams longer than the window (24 tokens, window 8) with and without a full-history cache.
Tolerance as in tests/engine/test_attention.py: max |diff| < 1e-5 on probabilities and logits."""

from __future__ import annotations

import functools

import pytest
import torch
from test_attention import three_routes  # eager, plain sdpa and captured sdpa, one forward each

from measure.engine import cache as kv
from measure.engine.attention import AttentionCapture
from measure.model import compat
from measure.model.tiny import SLIDING_FAMILIES, TINY_WINDOW, tiny_model

TOL = 1e-5
N_QUERY = 6


@functools.cache
def models(family: str):
    return tiny_model(family, attn_implementation="sdpa")[0], tiny_model(family, attn_implementation="eager")[0]


def inputs(batch: int, length: int, pad: int):
    ids = torch.randint(3, 390, (batch, length), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    if batch > 1:
        mask[1, :pad] = 0
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


def check(family, captured, reference, inside, plain, n_query):
    assert sorted(captured) == list(range(len(reference)))
    diff = max((captured[layer] - reference[layer][:, :, -n_query:].float()).abs().max().item() for layer in captured)
    assert diff < TOL, f"{family}: probabilities max |diff| {diff:.2e} vs eager"
    logits_diff = (inside.logits - plain.logits).abs().max().item()
    assert logits_diff < TOL, f"{family}: logits inside the capture differ from sdpa by {logits_diff:.2e}"


@pytest.mark.parametrize("family", SLIDING_FAMILIES)
@pytest.mark.parametrize("batch", [1, 2], ids=["single", "padded"])
def test_capture_matches_eager_past_the_window(family, batch):
    sdpa, eager = models(family)
    ids, mask, positions = inputs(batch, 24, pad=5)
    reference, plain, inside, probs = three_routes(sdpa, eager, N_QUERY, input_ids=ids, attention_mask=mask,
                                                   position_ids=positions)
    check(family, probs, reference.attentions, inside, plain, N_QUERY)
    sliding = [i for i, kind in enumerate(kv.layer_types(sdpa.config)) if kind == "sliding_attention"]
    # The window shows in the captured mass: the last query of a sliding layer puts none on keys
    # TINY_WINDOW or more positions back.
    assert probs[sliding[0]][0, :, -1, :24 - TINY_WINDOW].abs().max().item() == 0.0


@pytest.mark.parametrize("family", SLIDING_FAMILIES)
def test_capture_matches_eager_through_a_full_history_cache(family):
    sdpa, eager = models(family)
    ids, mask, positions = inputs(1, 30, pad=0)
    prefill = 20
    outputs = {}
    with torch.no_grad():
        for name, model in (("eager", eager), ("plain", sdpa), ("inside", sdpa)):
            cache = kv.new_cache(model.config)
            compat.forward(model, cache, input_ids=ids[:, :prefill], position_ids=positions[:, :prefill])
            step = dict(input_ids=ids[:, prefill:], attention_mask=mask, position_ids=positions[:, prefill:])
            if name == "inside":
                with AttentionCapture(sdpa, n_query=N_QUERY) as capture:
                    outputs[name] = compat.forward(model, cache, **step)
            else:
                outputs[name] = compat.forward(model, cache, **step, output_attentions=name == "eager")
    check(family, capture.probabilities(), outputs["eager"].attentions, outputs["inside"], outputs["plain"], N_QUERY)
