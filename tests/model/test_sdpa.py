"""The grouped SDPA function computes what transformers' SDPA computes, without repeating heads."""

import pytest
import torch
from transformers import DynamicCache

from measure.model import compat
from measure.model.load import load_model
from measure.model.sdpa import GROUPED_SDPA, use_grouped_sdpa
from measure.model.tiny import TINY_FAMILIES, tiny_model


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_grouped_equals_transformers_sdpa_on_padded_cached_forward(family):
    plain, tokenizer = tiny_model(family, attn_implementation="sdpa")
    grouped, _ = tiny_model(family, attn_implementation="sdpa")
    use_grouped_sdpa(grouped)
    assert grouped.config._attn_implementation == GROUPED_SDPA
    ids = torch.randint(3, plain.config.vocab_size, (3, 14), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(3, 14, dtype=torch.long)
    mask[1, :5] = 0  # a left-padded row
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    several, one = [], []
    with torch.no_grad():
        for model in (plain, grouped):
            cache = DynamicCache(config=model.config)
            compat.forward(model, cache, input_ids=ids[:, :9], attention_mask=mask[:, :9], position_ids=positions[:, :9])
            # Several query positions through a cache with a mask: bit for bit the same.
            several.append(compat.forward(model, cache, input_ids=ids[:, 9:13], attention_mask=mask[:, :13],
                                          position_ids=positions[:, 9:13]).logits)
            # Then one query position with a mask (a decode step of a padded batch; half-precision
            # steps take this path): the same up to float32 round-off (measured 6e-7, 1e-6 relative).
            one.append(compat.forward(model, cache, input_ids=ids[:, 13:], attention_mask=mask,
                                      position_ids=positions[:, 13:]).logits)
    assert torch.equal(several[0], several[1]), f"{family}: max |diff| {(several[0] - several[1]).abs().max():.2e}"
    torch.testing.assert_close(one[1], one[0], rtol=0, atol=1e-5 * one[0].abs().max().item())


def test_load_model_uses_grouped_sdpa_unless_eager_is_asked():
    assert load_model("tiny:llama").model.config._attn_implementation == GROUPED_SDPA
    assert load_model("tiny:llama", attn_implementation="eager").model.config._attn_implementation == "eager"
