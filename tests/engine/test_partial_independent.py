"""The partial condition's cache against a reference built without measure.engine.cache.

measure.engine.partial_check builds what partial's starting cache must be from two fresh prefills
(B alone; A + the stale generated tokens) and transformers' own ``apply_rotary_pos_emb``. Every
tiny RoPE family (llama, qwen2, mistral, and gemma3 with its sliding window and two rope bases),
every layer, keys and values, within 1e-5, also with YaRN scaling (llama; gemma3 with a different
scaling per layer type); and a rotation by the wrong amount or sign, or a prompt swap, is caught.
"""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaForCausalLM

from measure.data import load_pairs
from measure.engine import cache as kv
from measure.engine import partial_check
from measure.engine.conditions import ForkPoint, Partial
from measure.engine.engine import Engine, EngineConfig
from measure.model import compat
from measure.model.load import load_model
from measure.model.tiny import tiny_config, tiny_model, tiny_tokenizer, tiny_yarn_gemma3

TOLERANCE = 1e-5
FAMILIES = ("llama", "qwen2", "mistral", "gemma3", "mistral-sliding", "qwen2-sliding")


@pytest.fixture(scope="module", params=FAMILIES)
def model(request):
    return tiny_model(request.param)[0]


def tokens(n: int, seed: int) -> list[int]:
    return torch.randint(3, 390, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@torch.inference_mode()
def prefill(model, ids: list[int]):
    out = compat.forward(model, kv.new_cache(model.config), input_ids=torch.tensor([ids]), use_cache=True)
    return compat.returned_cache(out)


def make_fork(model, len_a: int, len_b: int, t0: int = 14) -> ForkPoint:
    prompt_a, prompt_b, shared = tokens(len_a, 1), tokens(len_b, 2), tokens(t0, 3)
    return ForkPoint(t0=t0, label=f"t{t0}", prompt_a=prompt_a, prompt_b=prompt_b, shared=shared,
                     ignore_before_last=prefill(model, prompt_a + shared[:-1]),
                     oracle_before_last=prefill(model, prompt_b + shared[:-1]),
                     update_ids=tokens(5, 4), noise_ids=tokens(5, 5), repeat_ids=tokens(5, 6),
                     model_config=model.config, rotary_embedding=kv.rotary_embedding_of(model))


def difference(model, fork: ForkPoint, recompute: int = 1) -> float:
    state = Partial(partial_recompute_last=recompute).prepare(fork)
    stale = fork.shared[:fork.t0 - recompute]
    return partial_check.max_partial_difference(model, kv.kv_pairs(state.cache), fork.prompt_a, fork.prompt_b, stale)


@pytest.mark.parametrize(("len_a", "len_b"), [(12, 19), (19, 12), (15, 15), (12, 13)])
@pytest.mark.parametrize("recompute", [1, 4])
def test_partial_cache_equals_the_independent_reference_in_every_layer(model, len_a, len_b, recompute):
    fork = make_fork(model, len_a, len_b)
    assert difference(model, fork, recompute) < TOLERANCE


def yarn_llama():
    """The tiny llama with YaRN rope scaling: its rotary module scales cos and sin (by 1.14), which
    a re-rotation must undo; the default rope of the other tiny models does not scale."""
    config = tiny_config("llama", len(tiny_tokenizer()))
    config.rope_parameters = {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0,
                              "original_max_position_embeddings": 256}
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def test_partial_cache_equals_the_reference_with_scaled_rope():
    model = yarn_llama()
    assert abs(model.model.rotary_emb.attention_scaling - 1.0) > 0.1
    for len_a, len_b in ((12, 19), (19, 12)):
        assert difference(model, make_fork(model, len_a, len_b)) < TOLERANCE


def test_partial_cache_equals_the_reference_with_scaled_gemma3_rope():
    model = tiny_yarn_gemma3()
    rotary = model.model.rotary_emb
    local, global_ = rotary.sliding_attention_attention_scaling, rotary.full_attention_attention_scaling
    assert min(local, global_) > 1.05 and abs(local - global_) > 0.1
    for len_a, len_b in ((12, 19), (19, 12), (12, 13)):
        assert difference(model, make_fork(model, len_a, len_b)) < TOLERANCE


def test_the_reference_keeps_every_position_of_every_layer(model):
    pairs = partial_check.expected_partial_pairs(model, tokens(12, 1), tokens(19, 2), tokens(13, 3))
    assert len(pairs) == model.config.num_hidden_layers
    assert all(keys.shape[2] == values.shape[2] == 19 + 13 for keys, values in pairs)


def test_a_rotation_by_the_wrong_amount_or_sign_or_a_prompt_swap_is_caught(model, monkeypatch):
    fork = make_fork(model, 12, 19)
    shift = kv.shift_rotary_keys
    for wrong in (lambda s: -s, lambda s: s + 1, lambda s: 0):
        monkeypatch.setattr(kv, "shift_rotary_keys", lambda keys, s, *args, w=wrong, **kw: shift(keys, w(s), *args, **kw))
        assert difference(model, fork) > 1e-3
    monkeypatch.setattr(kv, "shift_rotary_keys", shift)
    swapped = make_fork(model, 12, 19)
    swapped.oracle_before_last = swapped.ignore_before_last  # A's prompt KV where B's belongs
    assert difference(model, swapped) > 1e-3


def test_engine_records_the_partial_check():
    """gemma3 (sliding window, two rope bases): the engine's own partial runs (forked from the
    decoded ignore run and its P_oracle reference) carry ``partial_independent_max_abs``, within the tolerance."""
    config = EngineConfig(conditions=("ignore", "partial"), max_new_tokens=10, points=("4",), verify_partial=True,
                          attention=False, hidden_states=False)
    engine = Engine(load_model("tiny:gemma3"), config)
    runs = [run for result in engine.run_problems(load_pairs("builtin", None, limit=1)) for run in result.runs
            if run.condition == "partial"]
    assert runs
    for run in runs:
        assert run.checks["partial_independent_max_abs"] < TOLERANCE, run.checks
