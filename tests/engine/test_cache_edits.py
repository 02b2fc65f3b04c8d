"""measure.engine.cache at its edges: every refusal of ``kv_pairs`` and ``build_cache`` (a
sliding-window layer that dropped positions, a layer with no per-position keys, layers of different
lengths, a model whose layers are not attention), ``crop_copy`` at its bounds (1 position, all of
them, one past either end) and as a copy, and the re-rotation of keys on a Gemma 3 whose local and
global layers have different rope frequencies *and* different YaRN output scalings, checked against
transformers' own ``apply_rotary_pos_emb``. Tiny random models only; each test well under a second.
"""

from __future__ import annotations

import functools

import pytest
import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache, DummyLayer, DynamicLayer, DynamicSlidingWindowLayer, LinearAttentionLayer
from transformers.models.gemma3.modeling_gemma3 import apply_rotary_pos_emb

from measure.engine import cache as kv
from measure.model import compat
from measure.model.tiny import TINY_WINDOW, tiny_config, tiny_model, tiny_tokenizer, tiny_yarn_gemma3

TOLERANCE = 1e-5
#: The first sliding-window layer of each windowed tiny family (Qwen2 windows the layers from
#: ``max_window_layers`` = 1 on, so its layer 0 is a full-attention layer).
FIRST_SLIDING_LAYER = {"gemma3": 0, "qwen2-sliding": 1, "mistral-sliding": 0}


@functools.cache
def model_of(family: str):
    return tiny_model(family)[0]


def tokens(n: int, seed: int) -> list[int]:
    return torch.randint(3, 390, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@torch.inference_mode()
def windowed_cache(model, n: int) -> DynamicCache:
    """transformers' own cache for the model (windowed layers drop keys older than the window), fed ``n`` tokens."""
    cache = DynamicCache(config=model.config)
    compat.forward(model, cache, input_ids=torch.tensor([tokens(n, 1)]), use_cache=True)
    return cache


@torch.inference_mode()
def full_cache(model, n: int, seed: int = 1) -> DynamicCache:
    out = compat.forward(model, kv.new_cache(model.config), input_ids=torch.tensor([tokens(n, seed)]), use_cache=True)
    return compat.returned_cache(out)


def non_attention_config():
    """A llama config whose second layer is a linear-attention (recurrent state) layer."""
    config = tiny_config("llama", len(tiny_tokenizer()))
    config.layer_types = ["full_attention", "linear_attention"]
    return config


def filled_layer(positions: int, seed: int = 0) -> DynamicLayer:
    generator = torch.Generator().manual_seed(seed)
    layer = DynamicLayer()
    layer.update(torch.randn(1, 2, positions, 16, generator=generator), torch.randn(1, 2, positions, 16, generator=generator))
    return layer


# --- kv_pairs: a windowed layer that dropped positions ------------------------------------------

def dropped_message(layer: int, kept: int, seen: int) -> str:
    return (f"cache layer {layer} is a DynamicSlidingWindowLayer (sliding_attention, window {TINY_WINDOW}) "
            f"that kept only the last {kept} of its {seen} positions; a cache to crop, fork or edit must keep "
            "every position: build it with measure.engine.cache.new_cache(config) instead of DynamicCache(config=config)")


@pytest.mark.parametrize("family", sorted(FIRST_SLIDING_LAYER))
def test_kv_pairs_refuses_a_windowed_layer_one_position_past_its_window(family):
    """transformers' windowed layer keeps ``window - 1`` positions: one token more and the first
    sliding layer (0 or 1 by family) is refused, the message naming it, its window and its counts."""
    model = model_of(family)
    layer = FIRST_SLIDING_LAYER[family]
    assert kv.layer_types(model.config).index("sliding_attention") == layer
    cache = windowed_cache(model, TINY_WINDOW)
    assert isinstance(cache.layers[layer], DynamicSlidingWindowLayer)
    with pytest.raises(kv.UnsupportedCache) as refused:
        kv.kv_pairs(cache)
    assert type(refused.value) is kv.UnsupportedCache
    assert str(refused.value) == dropped_message(layer, TINY_WINDOW - 1, TINY_WINDOW)


@pytest.mark.parametrize("family", sorted(FIRST_SLIDING_LAYER))
def test_kv_pairs_accepts_a_windowed_layer_that_kept_every_position(family):
    """At ``window - 1`` tokens nothing was dropped yet: the layer's own tensors come back, every layer."""
    model = model_of(family)
    cache = windowed_cache(model, TINY_WINDOW - 1)
    pairs = kv.kv_pairs(cache)
    assert len(pairs) == len(cache.layers) == model.config.num_hidden_layers
    for (keys, values), layer in zip(pairs, cache.layers):
        assert keys is layer.keys and values is layer.values
        assert keys.shape[-2] == values.shape[-2] == TINY_WINDOW - 1


def test_kv_pairs_of_an_empty_windowed_cache_is_empty_layers():
    """A windowed cache before any forward has dropped nothing: one (None, None) per layer, no refusal."""
    model = model_of("gemma3")
    cache = DynamicCache(config=model.config)
    assert any(isinstance(layer, DynamicSlidingWindowLayer) for layer in cache.layers)
    assert kv.kv_pairs(cache) == [(None, None)] * model.config.num_hidden_layers


@pytest.mark.parametrize("edit", ["crop_copy", "stack_left_padded", "empty_like"])
def test_every_edit_refuses_a_cache_that_dropped_positions(edit):
    model = model_of("qwen2-sliding")
    cache = windowed_cache(model, 40)
    run = {"crop_copy": lambda: kv.crop_copy(cache, 30, model.config),
           "stack_left_padded": lambda: kv.stack_left_padded([cache], model.config),
           "empty_like": lambda: kv.empty_like(cache, model.config)}[edit]
    with pytest.raises(kv.UnsupportedCache) as refused:
        run()
    assert str(refused.value) == dropped_message(1, TINY_WINDOW - 1, 40)


# --- kv_pairs: layers with no per-position keys -------------------------------------------------

@pytest.mark.parametrize(("layer", "name"), [(LinearAttentionLayer, "LinearAttentionLayer"), (DummyLayer, "DummyLayer")])
def test_kv_pairs_refuses_a_layer_without_per_position_keys(layer, name):
    """A linear-attention layer (no ``keys`` at all) and a shared-KV dummy layer (initialised, keys
    None) behind a plain layer: refused, naming the layer's index and class."""
    cache = Cache(layers=[filled_layer(5), layer()])
    with pytest.raises(kv.UnsupportedCache) as refused:
        kv.kv_pairs(cache)
    assert type(refused.value) is kv.UnsupportedCache
    assert str(refused.value) == f"cache layer 1 is a {name}, which holds no per-position keys"


def test_kv_pairs_returns_each_layers_own_tensors_in_order():
    layers = [filled_layer(5, seed) for seed in range(3)]
    pairs = kv.kv_pairs(Cache(layers=layers))
    assert [(keys, values) for keys, values in pairs] == [(layer.keys, layer.values) for layer in layers]
    assert all(keys is layer.keys and values is layer.values for (keys, values), layer in zip(pairs, layers))


# --- build_cache --------------------------------------------------------------------------------

def test_build_cache_refuses_layers_of_different_lengths():
    """Two distinct lengths over three layers (as a Gemma 3 cache whose local layers dropped
    positions would have): refused, naming the lengths."""
    model = model_of("gemma3")
    pairs = kv.kv_pairs(full_cache(model, 12))
    for index in (0, 2):  # the local layers keep only their last 7
        pairs[index] = (pairs[index][0][:, :, -7:], pairs[index][1][:, :, -7:])
    with pytest.raises(kv.UnsupportedCache) as refused:
        kv.build_cache(pairs, model.config)
    assert type(refused.value) is kv.UnsupportedCache
    assert str(refused.value) == ("cache layers hold different numbers of positions ([7, 12]): a layer dropped positions "
                                  "(a sliding-window layer?) and cannot be edited")


def test_build_cache_refuses_a_model_whose_layers_are_not_attention():
    pairs = [(layer.keys, layer.values) for layer in (filled_layer(5), filled_layer(5, 1))]
    with pytest.raises(kv.UnsupportedCache, match=r"^layer 1 has cache layer type 'linear_attention' \(LlamaConfig\)"):
        kv.build_cache(pairs, non_attention_config())


def test_build_cache_keeps_every_position_of_windowed_layers_with_or_without_a_config():
    """Built for Gemma 3 (or with no config at all): plain layers holding the given tensors, which
    keep growing past the window when the model runs on."""
    model = model_of("gemma3")
    pairs = kv.kv_pairs(full_cache(model, 20))
    for config in (model.config, None):
        built = kv.build_cache(pairs, config)
        assert [type(layer) for layer in built.layers] == [DynamicLayer] * 3
        assert all(torch.equal(layer.keys, keys) and torch.equal(layer.values, values)
                   for layer, (keys, values) in zip(built.layers, pairs))
        with torch.inference_mode():
            compat.forward(model, built, input_ids=torch.tensor([tokens(3, 2)]),
                           position_ids=torch.arange(20, 23)[None], use_cache=True)
        assert [layer.keys.shape[-2] for layer in built.layers] == [23] * 3


def test_build_cache_of_empty_layers_is_an_empty_cache():
    model = model_of("gemma3")
    built = kv.build_cache(kv.kv_pairs(DynamicCache(config=model.config)), model.config)
    assert kv.kv_length(built) == 0 and len(built.layers) == 3


# --- crop_copy ----------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["llama", "gemma3"])
@pytest.mark.parametrize("length", [1, 12])
def test_crop_copy_to_one_position_or_to_all_of_them(family, length):
    """The crop holds exactly the first ``length`` positions of every layer, in new tensors: writing
    to the crop leaves the source as it was, and the source keeps its 12 positions."""
    model = model_of(family)
    source = full_cache(model, 12)
    before = [(keys.clone(), values.clone()) for keys, values in kv.kv_pairs(source)]
    cropped = kv.crop_copy(source, length, model.config)
    assert kv.kv_length(cropped) == length and kv.kv_length(source) == 12
    for (keys, values), (old_keys, old_values) in zip(kv.kv_pairs(cropped), before):
        assert torch.equal(keys, old_keys[:, :, :length]) and torch.equal(values, old_values[:, :, :length])
        keys.add_(1.0)
        values.mul_(-1.0)
    for (keys, values), (old_keys, old_values) in zip(kv.kv_pairs(source), before):
        assert torch.equal(keys, old_keys) and torch.equal(values, old_values)


def test_crop_copy_to_one_position_then_continue_equals_recompute():
    """A crop to the first token, then the rest of the stream: the logits of a cache-free run."""
    model = model_of("gemma3")
    stream = tokens(16, 3)
    cropped = kv.crop_copy(full_cache(model, 12, seed=3), 1, model.config)
    with torch.inference_mode():
        out = compat.forward(model, cropped, input_ids=torch.tensor([stream[1:]]),
                             position_ids=torch.arange(1, 16)[None], use_cache=True)
        fresh = model(input_ids=torch.tensor([stream])).logits[0, 1:]
    assert float((out.logits[0] - fresh).abs().max()) < 1e-4


@pytest.mark.parametrize("length", [0, -1, 13])
def test_crop_copy_refuses_lengths_outside_one_to_all(length):
    model = model_of("llama")
    source = full_cache(model, 12)
    with pytest.raises(ValueError) as refused:
        kv.crop_copy(source, length, model.config)
    assert type(refused.value) is ValueError
    assert str(refused.value) == f"cannot crop a cache of 12 positions to {length}"
    assert kv.kv_length(source) == 12


def test_crop_copy_refuses_a_model_whose_layers_are_not_attention():
    source = Cache(layers=[filled_layer(6), filled_layer(6, 1)])
    with pytest.raises(kv.UnsupportedCache, match=r"^layer 1 has cache layer type 'linear_attention'"):
        kv.crop_copy(source, 3, non_attention_config())


# --- re-rotation on a Gemma 3 with per-layer-type rope scaling ---------------------------------

@functools.lru_cache(maxsize=1)
def scaled_gemma3():
    """:func:`measure.model.tiny.tiny_yarn_gemma3`, built once for this file."""
    return tiny_yarn_gemma3()


LAYER_TYPES = ("sliding_attention", "full_attention")


def rotated(rotary, raw: torch.Tensor, positions: torch.Tensor, layer_type: str) -> torch.Tensor:
    """``raw`` keys rotated at ``positions`` as the model does it: transformers' apply_rotary_pos_emb."""
    cos, sin = rotary(raw, positions, layer_type)
    return apply_rotary_pos_emb(raw, raw, cos, sin)[1]


def test_scaled_gemma3_scales_each_layer_type_differently():
    """The premise of the tests below: both scalings differ from 1 and from each other."""
    rotary = kv.rotary_embedding_of(scaled_gemma3())
    local, global_ = (getattr(rotary, f"{kind}_attention_scaling") for kind in LAYER_TYPES)
    assert abs(local - 1.0693) < 1e-3 and abs(global_ - 1.2079) < 1e-3
    assert not torch.allclose(rotary.sliding_attention_inv_freq, rotary.full_attention_inv_freq)


@pytest.mark.parametrize("shift", [7, -4, 1])
@pytest.mark.parametrize("layer_type", LAYER_TYPES)
def test_scaled_gemma3_shift_equals_rotation_at_the_new_positions(layer_type, shift):
    """A key rotated (and scaled) at p, shifted by s with its layer type's frequencies and its
    scaling undone, equals the key rotated at p + s; the shift keeps every key's norm."""
    rotary = kv.rotary_embedding_of(scaled_gemma3())
    raw = torch.randn(1, 1, 6, 16, generator=torch.Generator().manual_seed(1))
    positions = torch.arange(10, 16)[None]
    at_p = rotated(rotary, raw, positions, layer_type)
    moved = kv.shift_rotary_keys(at_p, shift, rotary, layer_type=layer_type)
    assert float((moved - rotated(rotary, raw, positions + shift, layer_type)).abs().max()) < TOLERANCE
    assert float((moved.norm(dim=-1) - at_p.norm(dim=-1)).abs().max()) < TOLERANCE


def test_scaled_gemma3_shift_with_the_other_layer_types_rotary_is_wrong():
    rotary = kv.rotary_embedding_of(scaled_gemma3())
    raw = torch.randn(1, 1, 6, 16, generator=torch.Generator().manual_seed(2))
    positions = torch.arange(10, 16)[None]
    for layer_type, other in (LAYER_TYPES, LAYER_TYPES[::-1]):
        moved = kv.shift_rotary_keys(rotated(rotary, raw, positions, layer_type), 7, rotary, layer_type=other)
        assert float((moved - rotated(rotary, raw, positions + 7, layer_type)).abs().max()) > 1e-2, layer_type


def test_shift_refuses_a_per_layer_type_rotary_without_the_layer_type():
    rotary = kv.rotary_embedding_of(scaled_gemma3())
    keys = torch.randn(1, 1, 4, 16, generator=torch.Generator().manual_seed(3))
    with pytest.raises(ValueError) as refused:
        kv.shift_rotary_keys(keys, 3, rotary)
    assert str(refused.value) == "Gemma3RotaryEmbedding has frequencies per layer type: pass layer_type"
    assert kv.shift_rotary_keys(keys, 0, rotary) is keys  # no shift: nothing to rotate, nothing to refuse


def test_scaled_gemma3_prompt_replacement_moves_each_layers_keys_with_its_own_rotary():
    """replace_prompt_region on the scaled Gemma 3: the fresh prompt KV, then the stale generated
    tokens' values as they were and their keys equal to keys rotated at their new positions."""
    model = scaled_gemma3()
    rotary = kv.rotary_embedding_of(model)
    old, new, generated = 9, 13, 5
    stale = full_cache(model, old + generated, seed=4)
    fresh = full_cache(model, new, seed=5)
    replaced = kv.replace_prompt_region(stale, old, fresh, new, old + generated, rotary, model.config)
    assert kv.kv_length(replaced) == new + generated
    types = kv.layer_types(model.config)
    for layer_type, (keys, values), (stale_keys, stale_values), (fresh_keys, fresh_values) in zip(
            types, kv.kv_pairs(replaced), kv.kv_pairs(stale), kv.kv_pairs(fresh)):
        assert torch.equal(keys[:, :, :new], fresh_keys) and torch.equal(values[:, :, :new], fresh_values)
        assert torch.equal(values[:, :, new:], stale_values[:, :, old:])
        # Undo the rotation at the old positions with the inverse (cos, -sin), then rotate at the new ones.
        cos, sin = rotary(stale_keys, torch.arange(old, old + generated)[None], layer_type)
        scale = getattr(rotary, f"{layer_type}_attention_scaling")
        raw = apply_rotary_pos_emb(stale_keys[:, :, old:], stale_keys[:, :, old:], cos / scale, -sin / scale)[1]
        expected = apply_rotary_pos_emb(raw, raw, *(t / scale for t in rotary(raw, torch.arange(new, new + generated)[None],
                                                                              layer_type)))[1]
        assert float((keys[:, :, new:] - expected).abs().max()) < TOLERANCE, layer_type


# --- re-rotation with a rotary module that has no output scaling attribute ---------------------

class BareRotary(torch.nn.Module):
    """A rotary module as remote-code models and older transformers write it: cos and sin at the
    given positions, unscaled, and no ``attention_scaling`` attribute; with ``bases`` (one per layer
    type) its forward takes the layer type, as Gemma 3's does, and has no ``<type>_attention_scaling``."""

    def __init__(self, dim: int = 16, bases: dict[str, float] | None = None):
        super().__init__()
        self.inv_freq = {kind: 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
                         for kind, base in (bases or {None: 10_000.0}).items()}

    def angles(self, x, position_ids, layer_type):
        freqs = position_ids[..., None].float() * self.inv_freq[layer_type]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


class BareRotaryPerType(BareRotary):
    def forward(self, x, position_ids, layer_type):
        return self.angles(x, position_ids, layer_type)


class BareRotarySingle(BareRotary):
    def forward(self, x, position_ids):
        return self.angles(x, position_ids, None)


def test_shift_with_a_rotary_module_without_a_scaling_attribute_treats_it_as_unscaled():
    raw = torch.randn(1, 2, 5, 16, generator=torch.Generator().manual_seed(4))
    positions = torch.arange(3, 8)[None]
    single = BareRotarySingle()
    per_type = BareRotaryPerType(bases={"sliding_attention": 10_000.0, "full_attention": 1_000_000.0})
    assert not hasattr(single, "attention_scaling") and not hasattr(per_type, "full_attention_attention_scaling")
    cases = [(single, None, lambda p: single(raw, p))]
    cases += [(per_type, kind, lambda p, kind=kind: per_type(raw, p, kind)) for kind in LAYER_TYPES]
    for rotary, layer_type, cos_sin in cases:
        at_p = apply_rotary_pos_emb(raw, raw, *cos_sin(positions))[1]
        moved = kv.shift_rotary_keys(at_p, 9, rotary, layer_type=layer_type)
        expected = apply_rotary_pos_emb(raw, raw, *cos_sin(positions + 9))[1]
        assert float((moved - expected).abs().max()) < TOLERANCE, layer_type
