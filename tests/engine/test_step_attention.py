"""A decode step's attention (``measure.engine.step_metrics.step_attention``): single-query CPU steps run
``measure.model.sdpa.single_query_attention``, and the leaders' attention probabilities kept by a
``RowAttentionCapture`` are the ones it computed. Checked against eager ``output_attentions`` on a
left-padded batch whose cache runs past the sliding window, on every tiny family.
Tolerance as in tests/engine/test_attention.py: max |diff| < 1e-5 on probabilities and logits."""

from __future__ import annotations

import functools

import pytest
import torch

from measure.engine import cache as kv
from measure.engine import step_metrics
from measure.engine.step_metrics import RowAttentionCapture, step_attention
from measure.model import compat
from measure.model.sdpa import single_query_attention
from measure.model.tiny import SLIDING_FAMILIES, TINY_FAMILIES, TINY_WINDOW, tiny_model

TOL = 1e-5
FAMILIES = tuple(dict.fromkeys(TINY_FAMILIES + SLIDING_FAMILIES))


@functools.cache
def models(family: str):
    return tiny_model(family, attn_implementation="sdpa")[0], tiny_model(family, attn_implementation="eager")[0]


def step_inputs(batch: int = 3, prefill: int = 3 * TINY_WINDOW, pad: int = 5):
    """A left-padded prefill of ``prefill`` positions, then one token per row."""
    ids = torch.randint(3, 390, (batch, prefill + 1), generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(ids)
    mask[1, :pad] = 0
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0), prefill


def one_step(model, ids, mask, positions, prefill, **kwargs):
    cache = kv.new_cache(model.config)
    compat.forward(model, cache, input_ids=ids[:, :prefill], attention_mask=mask[:, :prefill],
                   position_ids=positions[:, :prefill])
    return cache, dict(input_ids=ids[:, prefill:], attention_mask=mask, position_ids=positions[:, prefill:], **kwargs)


@pytest.mark.parametrize("family", FAMILIES)
def test_step_capture_matches_eager_and_takes_the_single_query_path(family, monkeypatch):
    sdpa, eager = models(family)
    calls = []

    def spy(*args):
        calls.append(args[0].shape)
        return single_query_attention(*args)

    monkeypatch.setattr(step_metrics, "single_query_attention", spy)
    ids, mask, positions, prefill = step_inputs()
    rows = torch.tensor([0, 1])  # the padded row among them
    with torch.no_grad():
        cache, step = one_step(eager, ids, mask, positions, prefill, output_attentions=True)
        reference = compat.forward(eager, cache, **step)
        cache, step = one_step(sdpa, ids, mask, positions, prefill)
        plain = compat.forward(sdpa, cache, **step)
        cache, step = one_step(sdpa, ids, mask, positions, prefill)
        capture = RowAttentionCapture(sdpa, n_query=1, name="measure_step_capture")
        with step_attention(sdpa, capture):
            capture.rows = rows
            inside = compat.forward(sdpa, cache, **step)
            probabilities = capture.probabilities()
    assert calls and all(shape[2] == 1 for shape in calls), f"{family}: the single-query path was not taken"
    assert sdpa.config._attn_implementation not in ("measure_step_capture", step_metrics.STEP_SDPA)
    diff = max((probabilities[layer] - reference.attentions[layer][rows][:, :, -1:].float()).abs().max().item()
               for layer in probabilities)
    assert diff < TOL, f"{family}: step probabilities max |diff| {diff:.2e} vs eager"
    assert probabilities[0].shape[:3] == (2, sdpa.config.num_attention_heads, 1)
    logits_diff = (inside.logits - plain.logits).abs().max().item()
    assert logits_diff < TOL, f"{family}: step logits differ from sdpa by {logits_diff:.2e}"
    assert probabilities[0][1, :, 0, :5].abs().max().item() == 0.0  # left padding gets no mass


def test_half_precision_steps_stay_on_sdpa(monkeypatch):
    """Two plain bfloat16 products would round where SDPA accumulates in float32: bfloat16 steps keep
    SDPA (grouped heads), and the capture computes their probabilities in float32 as before."""
    calls = []
    monkeypatch.setattr(step_metrics, "single_query_attention", lambda *args: calls.append(args))
    sdpa, eager = (model.to(torch.bfloat16) for model in (tiny_model("llama", attn_implementation=name)[0]
                                                         for name in ("sdpa", "eager")))
    ids, mask, positions, prefill = step_inputs()
    with torch.no_grad():
        cache, step = one_step(eager, ids, mask, positions, prefill, output_attentions=True)
        reference = compat.forward(eager, cache, **step)
        cache, step = one_step(sdpa, ids, mask, positions, prefill)
        capture = RowAttentionCapture(sdpa, n_query=1, name="measure_step_capture")
        with step_attention(sdpa, capture):
            capture.rows = torch.tensor([0, 1])
            compat.forward(sdpa, cache, **step)
            probabilities = capture.probabilities()
    assert calls == []
    assert probabilities[0].dtype == torch.float32
    diff = max((probabilities[layer] - reference.attentions[layer][:2, :, -1:].float()).abs().max().item()
               for layer in probabilities)
    assert diff < 2e-2, f"bfloat16 step probabilities max |diff| {diff:.2e} vs eager"  # bfloat16 keeps 8 bits


def test_single_query_attention_equals_sdpa_with_either_mask_form():
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(4, 6, 1, 16, generator=generator)
    key, value = (torch.randn(4, 2, 11, 16, generator=generator) for _ in range(2))
    allowed = torch.ones(4, 1, 1, 11, dtype=torch.bool)
    allowed[1, ..., :4] = False
    allowed[3] = False  # a row with every position masked
    expected = torch.nn.functional.scaled_dot_product_attention(query[:3], key[:3], value[:3],
                                                                attn_mask=allowed[:3], enable_gqa=True)
    additive = torch.zeros(4, 1, 1, 11).masked_fill(~allowed, torch.finfo(torch.float32).min)
    for mask in (allowed, additive):
        output, probabilities = single_query_attention(query, key, value, mask, None)
        assert output.shape == (4, 1, 6, 16) and probabilities.shape == (4, 6, 1, 11)
        assert (output[:3].transpose(1, 2) - expected).abs().max().item() < 1e-6
        assert probabilities[1, ..., :4].abs().max().item() == 0.0
        # A row that may attend nowhere gets a uniform distribution, as eager attention, not NaN.
        assert torch.allclose(probabilities[3], torch.full((6, 1, 11), 1 / 11), atol=1e-7)
