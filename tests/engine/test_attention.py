"""Attention capture without eager attention, checked against eager ``output_attentions``.

Each tiny family is built twice with the same seed (identical weights): once on SDPA (captured),
once on eager (the reference). Tolerance: max |diff| < 1e-5 on probabilities and logits.
"""

from __future__ import annotations

import functools

import pytest
import torch
from transformers import DynamicCache

from measure.engine import attention
from measure.engine.attention import AttentionCapture, left_padding, sum_over_spans
from measure.model import compat
from measure.model.tiny import TINY_FAMILIES, tiny_model

TOL = 1e-5
N_QUERY = 5


@functools.cache
def models(family: str):
    sdpa, _ = tiny_model(family, seed=0, attn_implementation="sdpa")
    eager, tokenizer = tiny_model(family, seed=0, attn_implementation="eager")
    return sdpa, eager, tokenizer


def batch_inputs(tokenizer, batch: int, length: int, pad: int, seed: int = 1):
    """Random ids; row 1 (if any) left-padded with `pad` zeros in its mask; positions from the mask."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, len(tokenizer), (batch, length), generator=generator)
    mask = torch.ones_like(ids)
    if batch > 1:
        mask[1, :pad] = 0
        ids[1, :pad] = tokenizer.pad_token_id
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, positions


def max_diff(captured: dict[int, torch.Tensor], reference: tuple[torch.Tensor, ...], n_query: int) -> float:
    assert sorted(captured) == list(range(len(reference)))
    diffs = []
    for layer, probs in captured.items():
        expected = reference[layer][:, :, -n_query:, :]
        assert probs.shape == expected.shape, (layer, probs.shape, expected.shape)
        diffs.append((probs - expected.float()).abs().max().item())
    return max(diffs)


def three_routes(sdpa, eager, n_query: int, **kwargs):
    """One forward three ways, without a cache: eager with its attention probabilities, sdpa
    alone, and sdpa inside a capture. Returns (eager output, plain output, captured output,
    captured probabilities by layer)."""
    with torch.no_grad():
        reference = eager(**kwargs, output_attentions=True)
        plain = sdpa(**kwargs)
        with AttentionCapture(sdpa, n_query=n_query) as capture:
            inside = sdpa(**kwargs)
    return reference, plain, inside, capture.probabilities()


@pytest.mark.parametrize("family", TINY_FAMILIES)
@pytest.mark.parametrize("batch", [1, 3], ids=["single", "padded"])
def test_matches_eager_without_cache(family, batch):
    sdpa, eager, tokenizer = models(family)
    ids, mask, positions = batch_inputs(tokenizer, batch, length=14, pad=5)
    reference, plain, inside, probabilities = three_routes(sdpa, eager, N_QUERY, input_ids=ids, attention_mask=mask,
                                                           position_ids=positions)
    diff = max_diff(probabilities, reference.attentions, N_QUERY)
    assert diff < TOL, f"{family} batch={batch}: probabilities max |diff| {diff:.2e} vs eager"
    logits_diff = (inside.logits - plain.logits).abs().max().item()
    assert logits_diff < TOL, f"{family}: logits inside the capture differ from sdpa by {logits_diff:.2e}"
    assert sdpa.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("family", TINY_FAMILIES)
@pytest.mark.parametrize("batch", [1, 2], ids=["single", "padded"])
def test_matches_eager_with_prefilled_cache(family, batch):
    """Prefill, then feed several tokens at once through the cache, positions continuing."""
    sdpa, eager, tokenizer = models(family)
    ids, mask, positions = batch_inputs(tokenizer, batch, length=15, pad=4, seed=2)
    prefill, cont = 10, 5
    caches = {}
    with torch.no_grad():
        for name, model in (("sdpa", sdpa), ("eager", eager)):
            caches[name] = DynamicCache(config=model.config)
            compat.forward(model, caches[name], input_ids=ids[:, :prefill], attention_mask=mask[:, :prefill],
                           position_ids=positions[:, :prefill])
        step = dict(input_ids=ids[:, prefill:], attention_mask=mask, position_ids=positions[:, prefill:])
        reference = compat.forward(eager, caches["eager"], **step, output_attentions=True)
        plain_cache = DynamicCache(config=sdpa.config)
        compat.forward(sdpa, plain_cache, input_ids=ids[:, :prefill], attention_mask=mask[:, :prefill],
                       position_ids=positions[:, :prefill])
        plain = compat.forward(sdpa, plain_cache, **step)
        with AttentionCapture(sdpa, n_query=N_QUERY - 1) as capture:
            inside = compat.forward(sdpa, caches["sdpa"], **step)
    probs = capture.probabilities()
    assert probs[0].shape == (batch, sdpa.config.num_attention_heads, N_QUERY - 1, prefill + cont)
    diff = max_diff(probs, reference.attentions, N_QUERY - 1)
    assert diff < TOL, f"{family} batch={batch} cached: probabilities max |diff| {diff:.2e} vs eager"
    logits_diff = (inside.logits - plain.logits).abs().max().item()
    assert logits_diff < TOL, f"{family} cached: logits inside the capture differ from sdpa by {logits_diff:.2e}"
    # Rows are distributions, and left-padding keys get no mass.
    assert torch.allclose(probs[0].sum(-1), torch.ones(()), atol=1e-5)
    if batch > 1:
        assert probs[0][1, :, :, :4].abs().max().item() == 0.0


def test_single_token_decode_matches_eager():
    """q_len == 1 without padding: SDPA gets no mask at all, the capture must still be right."""
    sdpa, eager, tokenizer = models("llama")
    ids, _, _ = batch_inputs(tokenizer, 1, length=9, pad=0, seed=3)
    with torch.no_grad():
        ref_cache, cap_cache = DynamicCache(config=eager.config), DynamicCache(config=sdpa.config)
        compat.forward(eager, ref_cache, input_ids=ids[:, :8])
        compat.forward(sdpa, cap_cache, input_ids=ids[:, :8])
        pos = torch.tensor([[8]])
        reference = compat.forward(eager, ref_cache, input_ids=ids[:, 8:], position_ids=pos, output_attentions=True)
        with AttentionCapture(sdpa, n_query=4) as capture:  # n_query larger than q_len: all rows
            compat.forward(sdpa, cap_cache, input_ids=ids[:, 8:], position_ids=pos)
    diff = max_diff(capture.probabilities(), reference.attentions, 1)
    assert diff < TOL, f"single-token decode: max |diff| {diff:.2e} vs eager"


def test_uses_the_modules_scaling():
    """A non-default per-layer scaling (as GPT-2's scale_attn_by_inverse_layer_idx) is honoured."""
    sdpa, _ = tiny_model("llama", seed=0, attn_implementation="sdpa")
    eager, tokenizer = tiny_model("llama", seed=0, attn_implementation="eager")
    for model in (sdpa, eager):
        for layer in model.model.layers:
            layer.self_attn.scaling = 0.7 / (layer.self_attn.layer_idx + 1)
    ids, mask, positions = batch_inputs(tokenizer, 2, length=8, pad=2)
    kwargs = dict(input_ids=ids, attention_mask=mask, position_ids=positions)
    with torch.no_grad():
        reference = eager(**kwargs, output_attentions=True)
        with AttentionCapture(sdpa, n_query=3) as capture:
            sdpa(**kwargs)
    diff = max_diff(capture.probabilities(), reference.attentions, 3)
    assert diff < TOL, f"custom scaling: max |diff| {diff:.2e} vs eager"


def test_selected_layers_only():
    sdpa, _, tokenizer = models("qwen2")
    ids, _, _ = batch_inputs(tokenizer, 1, length=6, pad=0)
    with torch.no_grad(), AttentionCapture(sdpa, layers=[1], n_query=2) as capture:
        sdpa(input_ids=ids)
    probs = capture.probabilities()
    assert list(probs) == [1]
    assert probs[1].shape == (1, 4, 2, 6)
    with pytest.raises(ValueError, match="not in the model"):
        AttentionCapture(sdpa, layers=[7])


def test_restored_after_exception_and_not_nested():
    sdpa, _, tokenizer = models("mistral")
    with pytest.raises(RuntimeError, match="boom"), AttentionCapture(sdpa, n_query=1):
        assert sdpa.config._attn_implementation == attention.CAPTURE_ATTENTION
        raise RuntimeError("boom")
    assert sdpa.config._attn_implementation == "sdpa"
    assert sdpa.model.config._attn_implementation == "sdpa"
    assert not attention._ACTIVE
    with AttentionCapture(sdpa, n_query=1):
        with pytest.raises(RuntimeError, match="do not nest"), AttentionCapture(sdpa, n_query=1):
            pass
        # The failed inner capture must not have restored the outer one's implementation.
        assert sdpa.config._attn_implementation == attention.CAPTURE_ATTENTION
    assert sdpa.config._attn_implementation == "sdpa"
    assert not attention._ACTIVE


def test_no_forward_raises():
    sdpa, _, _ = models("llama")
    with AttentionCapture(sdpa, n_query=1) as capture:
        pass
    with pytest.raises(RuntimeError, match="no attention recorded"):
        capture.probabilities()


def test_eager_model_is_restored_to_eager():
    _, eager, tokenizer = models("llama")
    ids, _, _ = batch_inputs(tokenizer, 1, length=5, pad=0)
    with torch.no_grad(), AttentionCapture(eager, n_query=1) as capture:
        eager(input_ids=ids)
    assert eager.config._attn_implementation == "eager"
    assert capture.probabilities()[0].shape == (1, 4, 1, 5)


def test_sum_over_spans_and_left_padding():
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]])
    assert left_padding(mask).tolist() == [0, 2]
    probs = torch.softmax(torch.randn(2, 3, 2, 6, generator=torch.Generator().manual_seed(0)), dim=-1)
    probs[1, :, :, :2] = 0  # padding gets no mass, as under a mask
    spans = [{"prompt": (0, 2), "y": (2, 5), "after": (5, 6)}, {"prompt": (0, 1), "y": (1, 3), "after": (3, 4)}]
    mass = sum_over_spans(probs, spans, kv_offset=left_padding(mask))
    assert mass.shape == (2, 3, 2, 3)
    assert torch.allclose(mass[0, ..., 0], probs[0, :, :, 0:2].sum(-1))
    assert torch.allclose(mass[1, ..., 1], probs[1, :, :, 3:5].sum(-1))
    assert torch.allclose(mass.sum(-1)[0], torch.ones(3, 2))
    with pytest.raises(ValueError, match="outside kv length"):
        sum_over_spans(probs, {"x": (0, 7)})
    with pytest.raises(ValueError, match="row 1 has spans"):
        sum_over_spans(probs, [{"a": (0, 1)}, {"b": (0, 1)}])


def test_sum_over_spans_on_captured_batch():
    """Spans covering each row's whole unpadded sequence collect all the mass of its real query rows."""
    sdpa, _, tokenizer = models("llama")
    ids, mask, positions = batch_inputs(tokenizer, 2, length=10, pad=3)
    with torch.no_grad(), AttentionCapture(sdpa, layers=[0], n_query=3) as capture:
        sdpa(input_ids=ids, attention_mask=mask, position_ids=positions)
    lengths = mask.sum(-1).tolist()
    spans = [{"head": (0, 4), "tail": (4, n)} for n in lengths]
    mass = sum_over_spans(capture.probabilities()[0], spans, kv_offset=left_padding(mask))
    assert torch.allclose(mass.sum(-1), torch.ones(2, 4, 3), atol=1e-6)
