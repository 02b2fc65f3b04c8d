"""Attention capture on the real model (SmolLM2-135M-Instruct) against eager ``output_attentions``.

One model is loaded; the eager reference is the same weights with the implementation switched to
"eager" for the reference forward only. Tolerance: max |diff| < 2e-5 on float32 probabilities
(the design card the project was built from, not kept in this repository, records 3e-6 for this
comparison).
"""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from measure.engine.attention import AttentionCapture, left_padding, sum_over_spans
from measure.model import compat
from measure.model.sdpa import GROUPED_SDPA

pytestmark = pytest.mark.model

TOL = 2e-5
N_QUERY = 32

PROBLEM = (
    "Sarah has 5 apples. She buys 7 more apples at the market, then gives 3 apples to her brother "
    "Tom, who already had 4 apples and a basket of 6 oranges. Each apple costs 2 dollars and each "
    "orange costs 3 dollars. How many apples does Sarah have now, and how much did her apples cost? "
    "Let's think step by step and give the final answer after ####."
)


@pytest.fixture(scope="module")
def loaded():
    from measure.model.load import ModelLoadError, load_model

    try:
        loaded = load_model()
    except ModelLoadError as error:
        pytest.skip(f"embedded model unavailable: {error}")
    torch.manual_seed(0)
    return loaded


def eager_reference(model, cache=None, **kwargs):
    """The same weights on eager attention, with output_attentions; restores the implementation."""
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            return compat.forward(model, cache, **kwargs, output_attentions=True)
    finally:
        model.set_attn_implementation(previous)


def chat(tokenizer, text: str) -> str:
    messages = [{"role": "system", "content": "You are a careful math tutor."}, {"role": "user", "content": text}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def compare(captured, reference, n_query):
    diffs = []
    for layer, probs in captured.items():
        expected = reference[layer][:, :, -n_query:, :].float()
        assert probs.shape == expected.shape
        diffs.append((probs - expected).abs().max().item())
    return max(diffs)


def test_single_prompt_matches_eager(loaded):
    model, tokenizer = loaded.model, loaded.tokenizer
    ids = tokenizer(chat(tokenizer, PROBLEM), return_tensors="pt").input_ids
    assert 90 <= ids.shape[1] <= 160, ids.shape
    reference = eager_reference(model, input_ids=ids)
    with torch.no_grad():
        plain = model(input_ids=ids)
        with AttentionCapture(model, n_query=N_QUERY) as capture:
            inside = model(input_ids=ids)
    probs = capture.probabilities()
    assert len(probs) == model.config.num_hidden_layers
    diff = compare(probs, reference.attentions, N_QUERY)
    print(f"smollm2 single ({ids.shape[1]} tokens): probabilities max |diff| vs eager {diff:.2e}")
    assert diff < TOL, f"single prompt: max |diff| {diff:.2e} vs eager"
    assert (inside.logits - plain.logits).abs().max().item() < 1e-5
    assert model.config._attn_implementation == GROUPED_SDPA  # restored after the capture


def test_padded_batch_matches_eager(loaded):
    model, tokenizer = loaded.model, loaded.tokenizer
    texts = [chat(tokenizer, PROBLEM), chat(tokenizer, PROBLEM.split(" Each apple")[0] + " Answer briefly.")]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    mask = batch.attention_mask
    assert mask[1, 0] == 0, "the shorter prompt must be left-padded"
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    kwargs = dict(input_ids=batch.input_ids, attention_mask=mask, position_ids=positions)
    reference = eager_reference(model, **kwargs)
    with torch.no_grad(), AttentionCapture(model, n_query=N_QUERY) as capture:
        model(**kwargs)
    probs = capture.probabilities()
    diff = compare(probs, reference.attentions, N_QUERY)
    print(f"smollm2 padded batch {tuple(mask.shape)}: probabilities max |diff| vs eager {diff:.2e}")
    assert diff < TOL, f"padded batch: max |diff| {diff:.2e} vs eager"
    # Spans over each row's real tokens hold all of the mass.
    lengths = mask.sum(-1).tolist()
    spans = [{"system": (0, 10), "rest": (10, n)} for n in lengths]
    mass = sum_over_spans(probs[5], spans, kv_offset=left_padding(mask))
    assert torch.allclose(mass.sum(-1), torch.ones_like(mass.sum(-1)), atol=1e-5)


def test_cached_continuation_matches_eager(loaded):
    model, tokenizer = loaded.model, loaded.tokenizer
    ids = tokenizer(chat(tokenizer, PROBLEM) + "Sarah starts with 5 apples and buys 7", return_tensors="pt").input_ids
    prefill = ids.shape[1] - 8
    positions = torch.arange(ids.shape[1])[None]
    caches = []  # [eager reference's, capture's]: same prefill, separate caches
    for _ in range(2):
        cache = DynamicCache(config=model.config)
        with torch.no_grad():
            compat.forward(model, cache, input_ids=ids[:, :prefill], position_ids=positions[:, :prefill])
        caches.append(cache)
    step = dict(input_ids=ids[:, prefill:], position_ids=positions[:, prefill:])
    reference = eager_reference(model, cache=caches[0], **step)
    with torch.no_grad(), AttentionCapture(model, n_query=8) as capture:
        compat.forward(model, caches[1], **step)
    diff = compare(capture.probabilities(), reference.attentions, 8)
    print(f"smollm2 cached continuation (+8 tokens on {prefill}): max |diff| vs eager {diff:.2e}")
    assert diff < TOL, f"cached continuation: max |diff| {diff:.2e} vs eager"
