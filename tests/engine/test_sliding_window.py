"""Cache edits on models whose layers attend only to a window (Gemma 3, Mistral, Qwen2 with
sliding windows), with streams of ~64 tokens and a window of 8: every edit of every condition
equals a cache-free recompute of the stream it represents, at the float32 tolerances of
tests/engine/test_engine.py; a cache that dropped positions is refused, naming the layer type.
"""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from measure.engine import cache as kv
from measure.engine.conditions import CONDITIONS, ForkPoint, Partial
from measure.metrics.divergence import kl_divergence
from measure.model import compat
from measure.model.tiny import SLIDING_FAMILIES, TINY_WINDOW, tiny_model

LOGPROB_TOL = 1e-4
KL_TOL = 1e-6


@pytest.fixture(scope="module", params=SLIDING_FAMILIES)
def model(request):
    return tiny_model(request.param)[0]


def tokens(n: int, seed: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, 390, (n,), generator=generator).tolist()


@torch.inference_mode()
def forward(model, cache, feed: list[int]) -> tuple[torch.Tensor, DynamicCache]:
    """Log-probabilities at every fed position, and the extended cache (a copy: input untouched)."""
    start = kv.kv_length(cache)
    cache = kv.new_cache(model.config) if cache is None else kv.build_cache(kv.kv_pairs(cache), model.config)
    out = compat.forward(model, cache, input_ids=torch.tensor([feed]),
                         position_ids=torch.arange(start, start + len(feed))[None], use_cache=True)
    return out.logits[0].float().log_softmax(-1), compat.returned_cache(out)


def recompute(model, stream: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=torch.tensor([stream])).logits[0].float().log_softmax(-1)


def assert_close(edited: torch.Tensor, fresh: torch.Tensor, what: str) -> None:
    diff = float((edited - fresh).abs().max())
    kl = float(kl_divergence(edited, fresh).max())
    assert diff < LOGPROB_TOL and kl < KL_TOL, f"{what}: max |dlogp| {diff:.2e}, max KL {kl:.2e}"


def test_configs_window_some_layers(model):
    types = kv.layer_types(model.config)
    assert "sliding_attention" in types and model.config.sliding_window == TINY_WINDOW
    assert kv.has_sliding_layers(model.config)
    # The window changes the model's output on a stream longer than it (else these tests prove nothing).
    stream = tokens(64, 0)
    windowed = recompute(model, stream)
    model.config.sliding_window = 1000
    try:
        unwindowed = recompute(model, stream)
    finally:
        model.config.sliding_window = TINY_WINDOW
    assert float((windowed - unwindowed).abs().max()) > 1e-2


def test_transformers_windowed_cache_is_refused_naming_the_layer_type(model):
    cache = DynamicCache(config=model.config)
    with torch.inference_mode():
        compat.forward(model, cache, input_ids=torch.tensor([tokens(40, 1)]), use_cache=True)
    with pytest.raises(kv.UnsupportedCache, match="sliding_attention.*window 8.*last 7 of its 40 positions"):
        kv.crop_copy(cache, 30, model.config)


@pytest.mark.parametrize("crop", [5, 30, 57])
def test_crop_and_continue_equals_recompute(model, crop):
    """The ignore/oracle runs: a cache cropped before or long after the window, then continued."""
    stream = tokens(64, 2)
    _, cache = forward(model, None, stream[:60])
    cropped = kv.crop_copy(cache, crop, model.config)
    assert kv.kv_length(cropped) == crop and kv.kv_length(cache) == 60  # the input is untouched
    logprobs, _ = forward(model, cropped, stream[crop:])
    assert_close(logprobs, recompute(model, stream)[crop:], f"crop to {crop}")


def make_fork(model, t0: int = 24) -> ForkPoint:
    """A fork past the window: prompts of 20 and 23 tokens, 24 generated tokens, texts of 10-12."""
    prompt_a, prompt_b, shared = tokens(20, 3), tokens(23, 4), tokens(t0, 5)
    _, ignore = forward(model, None, prompt_a + shared[:-1])
    _, oracle = forward(model, None, prompt_b + shared[:-1])
    return ForkPoint(t0=t0, label=f"t{t0}", prompt_a=prompt_a, prompt_b=prompt_b, shared=shared,
                     ignore_before_last=ignore, oracle_before_last=oracle, update_ids=tokens(12, 6),
                     noise_ids=tokens(12, 7), repeat_ids=tokens(10, 8), model_config=model.config,
                     rotary_embedding=kv.rotary_embedding_of(model))


@pytest.mark.parametrize("name", ["injection", "noise", "repeat", "flush", "partial-all"])
def test_each_condition_cache_equals_recompute(model, name):
    fork = make_fork(model)
    condition = Partial(partial_recompute_last=fork.t0) if name == "partial-all" else CONDITIONS[name]()
    state = condition.prepare(fork)
    assert state.exact_stream
    after = tokens(16, 9)
    logprobs, _ = forward(model, state.cache, state.feed + after)
    stream = state.prompt_ids + fork.shared + state.inserted_ids + after
    assert len(stream) > 60 > 8 * TINY_WINDOW - 10
    fresh = recompute(model, stream)[-len(state.feed + after):]
    assert_close(logprobs, fresh, name)


def test_partial_keeps_stale_generated_keys_moved_to_their_new_positions(model):
    """partial with one recomputed token: the prompt region is B's fresh KV and the stale
    generated keys of layer 0 (which depend only on token and position) equal fresh ones."""
    fork = make_fork(model)
    state = Partial(partial_recompute_last=1).prepare(fork)
    pairs, fresh_b = kv.kv_pairs(state.cache), kv.kv_pairs(fork.oracle_before_last)
    b = len(fork.prompt_b)
    assert kv.kv_length(state.cache) == b + fork.t0 - 1
    for (keys, values), (fresh_keys, fresh_values) in zip(pairs, fresh_b):
        assert torch.equal(keys[:, :, :b], fresh_keys[:, :, :b]) and torch.equal(values[:, :, :b], fresh_values[:, :, :b])
    layer0_keys, layer0_fresh = pairs[0][0], fresh_b[0][0]
    diff = float((layer0_keys[:, :, b:] - layer0_fresh[:, :, b:b + fork.t0 - 1]).abs().max())
    assert diff < 1e-4, f"re-rotated layer-0 keys differ from fresh ones by {diff:.2e}"


def test_rerotation_uses_each_layer_types_frequencies():
    """Gemma 3's local and global layers rotate with different bases: shifting a key rotated at
    position p by s must equal rotating it at p + s, with the frequencies of its layer type."""
    model = tiny_model("gemma3")[0]
    rotary = kv.rotary_embedding_of(model)
    assert kv.rotary_takes_layer_type(rotary)
    vector = torch.randn(1, 1, 5, 16, generator=torch.Generator().manual_seed(0))
    positions = torch.arange(10, 15)[None]

    def rotated(layer_type, offset):
        cos, sin = rotary(vector[0], positions + offset, layer_type)
        return vector * cos[:, None] + kv.rotate_half(vector) * sin[:, None]

    for layer_type in ("sliding_attention", "full_attention"):
        moved = kv.shift_rotary_keys(rotated(layer_type, 0), 7, rotary, layer_type=layer_type)
        assert float((moved - rotated(layer_type, 7)).abs().max()) < 1e-5, layer_type
    wrong = kv.shift_rotary_keys(rotated("full_attention", 0), 7, rotary, layer_type="sliding_attention")
    assert float((wrong - rotated("full_attention", 7)).abs().max()) > 1e-2
    with pytest.raises(ValueError, match="layer_type"):
        kv.shift_rotary_keys(vector, 3, rotary)


def padded_decode(model, caches, feeds, steps: list[list[int]], close_gaps: bool) -> list[torch.Tensor]:
    """The engine's batch layout ([left pad][cache][feed][right pad], then one token per step),
    optionally closing the gaps after the padded forward; per row, log-probabilities of its last
    fed token and of every step."""
    batch_cache, pads = kv.stack_left_padded(caches, model.config)
    lengths = [kv.kv_length(c) for c in caches]
    past, width = max(lengths), max(len(f) for f in feeds)
    ids = torch.zeros(len(feeds), width, dtype=torch.long)
    mask = torch.zeros(len(feeds), past + width, dtype=torch.long)
    positions = torch.zeros(len(feeds), width, dtype=torch.long)
    for row, feed in enumerate(feeds):
        ids[row, :len(feed)] = torch.tensor(feed)
        mask[row, pads[row]:past + len(feed)] = 1
        positions[row] = torch.arange(lengths[row], lengths[row] + width)
    outputs = [[] for _ in feeds]
    with torch.inference_mode():
        out = compat.forward(model, batch_cache, input_ids=ids, attention_mask=mask, position_ids=positions,
                             use_cache=True)
        for row, feed in enumerate(feeds):
            outputs[row].append(out.logits[row, len(feed) - 1].float().log_softmax(-1))
        if close_gaps:
            batch_cache, mask = kv.close_padding_gaps(batch_cache, mask)
        next_position = [length + len(feed) for length, feed in zip(lengths, feeds)]
        for step in range(len(steps[0])):
            mask = torch.cat([mask, mask.new_ones(len(feeds), 1)], dim=1)
            out = compat.forward(model, batch_cache, input_ids=torch.tensor([[s[step]] for s in steps]),
                                 attention_mask=mask, position_ids=torch.tensor(next_position)[:, None] + step,
                                 use_cache=True)
            for row in range(len(feeds)):
                outputs[row].append(out.logits[row, -1].float().log_softmax(-1))
    return [torch.stack(rows) for rows in outputs]


def test_batched_decode_with_gaps_closed_equals_recompute(model):
    """Rows with different cache and feed lengths, decoded 24 steps past the window: with the gaps
    closed every row equals its own recompute; with them left open (the right padding between a
    row's feed and its next tokens) the window is measured in the wrong units and rows differ."""
    prefixes, feeds = [tokens(30, 10), tokens(22, 11)], [tokens(12, 12), tokens(1, 13)]
    steps = [tokens(24, 14), tokens(24, 15)]
    caches = [forward(model, None, prefix)[1] for prefix in prefixes]
    closed = padded_decode(model, caches, feeds, steps, close_gaps=True)
    open_ = padded_decode(model, caches, feeds, steps, close_gaps=False)
    worst_open = 0.0
    for row in range(2):
        stream = prefixes[row] + feeds[row] + steps[row]
        fresh = recompute(model, stream)[len(prefixes[row]) + len(feeds[row]) - 1:]
        assert_close(closed[row], fresh, f"row {row}, gaps closed")
        worst_open = max(worst_open, float((open_[row] - fresh).abs().max()))
    assert worst_open > 1e-2, "leaving the gaps open should break the window (the test would prove nothing)"


def test_close_padding_gaps_on_preallocated_layers(model):
    caches = [forward(model, None, tokens(n, n))[1] for n in (9, 14)]
    batch, pads = kv.stack_left_padded(caches, model.config, extra=6)
    mask = torch.tensor([[0] * pads[0] + [1] * 9 + [1, 0, 0], [0] * pads[1] + [1] * 14 + [1, 1, 1]])
    for layer in batch.layers:
        layer.update(*(torch.ones(2, layer.keys.shape[1], 3, layer.keys.shape[-1]),) * 2)
    before = [layer.keys.clone() for layer in batch.layers]
    batch, closed = kv.close_padding_gaps(batch, mask)
    assert closed.tolist() == [[0] * 7 + [1] * 10, [1] * 17]
    for layer, old in zip(batch.layers, before):
        assert torch.equal(layer.keys[0, :, 7:], old[0, :, mask[0].bool()])
        assert torch.equal(layer.keys[1], old[1])


@pytest.mark.parametrize("family", ["gemma3"])  # local + global layers: both cache layer types
def test_engine_on_sliding_window_model_passes_its_checks(family):
    """The whole engine on a windowed model, streams past the window: every condition's run
    through its edited cache equals the cache-free recompute, and decoding equals scoring."""
    from measure.engine.engine import Engine, EngineConfig
    from measure.model.load import load_model
    from measure.testing import example_pair

    loaded = load_model(f"tiny:{family}")
    config = EngineConfig(max_new_tokens=20, points=("3", "12"), verify_recompute=True, batch_size=16,
                          hidden_states=False, attention=False)
    result = Engine(loaded, config).run_problem(example_pair())
    assert len(result.runs[0].prompt_ids) > 2 * TINY_WINDOW
    checked = {run.condition for run in result.runs if "full_recompute_max_abs_logprob" in run.checks}
    assert checked >= {"injection", "noise", "repeat", "flush"}
    for run in result.runs:
        assert run.checks, (run.condition, run.point)
        for name, value in run.checks.items():
            limit = KL_TOL if name.endswith("_kl") else LOGPROB_TOL
            assert value < limit, (run.condition, run.point, name, value)
