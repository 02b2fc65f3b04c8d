"""Engine invariants on tiny random models of every family: the same distribution reached by two
routes (edited cache vs full recompute, fork vs regenerate, partial vs flush, batched vs alone),
identical-problem controls, skipped points and refused settings. The per-run invariants that the
measurement suites assert are listed in measure/pytest_plugin/invariants.py.

Tolerances: tiny models run in float32 with logits of order 10, so recomputing the same stream
by another route (cache vs no cache, batched vs alone) differs by float round-off, ~1e-6 in
log-probabilities; 1e-4 leaves room for BLAS differences between machines, while a real bug
(a wrong position, a missing mask, a stale key) shows up as differences of 1e-2 and more.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from measure.engine import cache as kv
from measure.engine.conditions import UnsupportedCondition
from measure.engine.decode import DecodeRow, decode_rows, prefill
from measure.engine.engine import Engine, EngineConfig
from measure.model import compat
from measure.model.load import load_model
from measure.model.tiny import TINY_FAMILIES
from measure.prompts import PromptFormat
from measure.testing import example_pair

LOGPROB_TOL = 1e-4
KL_TOL = 1e-6
ROPE_FAMILIES = [f for f in TINY_FAMILIES if f != "gpt2"]


def make_pair(question_b: str | None = None, pair_id: str = "p1"):
    return example_pair(question_b, pair_id)


@pytest.fixture(scope="module", params=TINY_FAMILIES)
def loaded(request):
    return load_model(f"tiny:{request.param}")


@pytest.fixture(scope="module", params=ROPE_FAMILIES)
def rope_loaded(request):
    return load_model(f"tiny:{request.param}")


def conditions_for(loaded):
    names = ("ignore", "oracle", "injection", "flush", "partial", "noise", "repeat")
    return tuple(n for n in names if loaded.uses_rotary_positions or n != "partial")


def run(loaded, pair=None, **options):
    config = EngineConfig(**{"max_new_tokens": 16, "points": ("3", "0.5"),
                             "conditions": conditions_for(loaded), **options})
    return Engine(loaded, config).run_problem(pair or make_pair())


def by_key(result):
    return {(r.condition, r.point): r for r in result.runs}


def test_every_condition_runs_at_every_point(loaded):
    result = run(loaded)
    assert not result.skipped
    runs = by_key(result)
    expected = {("ignore", "-"), ("oracle", "-")} | {
        (c, p) for c in conditions_for(loaded)[2:] for p in ("t3", "f0.5")}
    assert set(runs) == expected
    for r in result.runs:
        assert len(r.logprob_run) == r.n_generated
        assert all(len(r.kl[ref]) == r.n_generated for ref in ("ignore", "oracle", "matched"))
        assert all(np.isfinite(r.kl[ref]).all() and (r.kl[ref] >= 0).all() for ref in r.kl)


def test_injection_through_cache_equals_full_recompute(loaded):
    result = run(loaded, verify_recompute=True)
    checked = [r for r in result.runs if "full_recompute_max_abs_logprob" in r.checks]
    assert {r.condition for r in checked} >= {"injection", "noise", "repeat", "flush"}
    for r in checked:
        assert r.checks["full_recompute_max_abs_logprob"] < LOGPROB_TOL, (r.condition, r.point)
        assert r.checks["full_recompute_max_kl"] < KL_TOL, (r.condition, r.point)
        assert r.checks["decode_vs_recompute_max_abs_logprob"] < LOGPROB_TOL, (r.condition, r.point)


def test_fork_then_continue_equals_regenerating(loaded):
    """Forking the ignore run's cache at t0 and decoding on gives the ignore run's own tokens."""
    model, tokenizer = loaded.model, loaded.tokenizer
    prompt = PromptFormat().prompt_ids(tokenizer, make_pair().question_a)
    eos = {tokenizer.eos_token_id}
    # An EOS-free budget: a tiny random model rarely emits EOS, but must not end before t0.
    (whole,) = decode_rows(model, [DecodeRow(None, prompt, 20, keep_cache=True)], eos, tokenizer.pad_token_id)
    t0 = min(7, len(whole.tokens) - 1)
    fork = kv.crop_copy(whole.cache, len(prompt) + t0 - 1, model.config)
    (rest,) = decode_rows(model, [DecodeRow(fork, [whole.tokens[t0 - 1]], len(whole.tokens) - t0)], eos,
                          tokenizer.pad_token_id)
    assert rest.tokens == whole.tokens[t0:]
    np.testing.assert_allclose(rest.token_logprobs, whole.token_logprobs[t0:], atol=LOGPROB_TOL)
    # The fork is a copy: decoding from it left the original cache untouched.
    assert kv.kv_length(whole.cache) == len(prompt) + len(whole.tokens) - 1


def test_partial_recomputing_every_generated_token_equals_flush(rope_loaded):
    result = by_key(run(rope_loaded, partial_recompute_last=10_000))
    for point in ("t3", "f0.5"):
        flush, partial = result[("flush", point)], result[("partial", point)]
        assert partial.generated_ids == flush.generated_ids
        for ref in ("ignore", "oracle"):
            np.testing.assert_allclose(partial.kl[ref], flush.kl[ref], atol=KL_TOL)
        np.testing.assert_allclose(partial.logprob_run, flush.logprob_run, atol=LOGPROB_TOL)


def test_partial_with_stale_cache_differs_from_flush_when_prompts_differ(rope_loaded):
    """The stale generated-token KV must matter, or the partial condition measures nothing."""
    result = by_key(run(rope_loaded, partial_recompute_last=1))
    point = "f0.5"
    stale = result[("partial", point)].logprob_run[result[("partial", point)].t0:]
    fresh = result[("flush", point)].logprob_run[result[("flush", point)].t0:]
    n = min(len(stale), len(fresh))
    assert np.max(np.abs(stale[:n] - fresh[:n])) > 1e-6


def test_identical_problem_gives_identical_oracle_and_ignore_references(loaded):
    pair = make_pair(question_b=make_pair().question_a)
    for r in run(loaded, pair=pair).runs:
        assert np.array_equal(r.kl["oracle"], r.kl["ignore"]), (r.condition, r.point)
        assert np.array_equal(r.logprob_ref["oracle"], r.logprob_ref["ignore"]), (r.condition, r.point)


def test_same_seed_same_tokens_when_sampling(loaded):
    first = run(loaded, temperature=1.0, seed=3)
    again = run(loaded, temperature=1.0, seed=3)
    other = run(loaded, temperature=1.0, seed=4)
    tokens = lambda result: [r.generated_ids for r in result.runs]  # noqa: E731
    assert tokens(first) == tokens(again)
    assert tokens(first) != tokens(other)


def test_greedy_ignores_the_seed(loaded):
    assert [r.generated_ids for r in run(loaded, seed=1).runs] == [r.generated_ids for r in run(loaded, seed=2).runs]


def test_batched_rows_match_rows_decoded_alone(loaded):
    """Rows of different inserted lengths, decoded together, equal each row decoded alone."""
    model, tokenizer = loaded.model, loaded.tokenizer
    fmt = PromptFormat()
    prompts = [fmt.prompt_ids(tokenizer, q) for q in (
        "Tom reads 20 pages a day.", "A farmer had 12 cows and sold 3 of them. How many are left?",
        "Each box holds 6 eggs.")]
    _, shared_cache = prefill(model, None, prompts[1])
    rows = lambda: [DecodeRow(None, prompts[0], 9), DecodeRow(shared_cache, [5, 6, 7, 8, 9, 10, 11], 12),  # noqa: E731
                    DecodeRow(None, prompts[2], 5), DecodeRow(shared_cache, [5], 12)]
    eos, pad = {tokenizer.eos_token_id}, tokenizer.pad_token_id
    together = decode_rows(model, rows(), eos, pad, batch_size=4)
    alone = [decode_rows(model, [row], eos, pad, batch_size=1)[0] for row in rows()]
    for joint, single in zip(together, alone):
        assert joint.tokens == single.tokens
        np.testing.assert_allclose(joint.token_logprobs, single.token_logprobs, atol=LOGPROB_TOL)


def test_rotary_key_shift_equals_prefill_at_shifted_positions():
    loaded = load_model("tiny:llama")
    model = loaded.model
    ids = torch.tensor([[5, 9, 14, 33, 2, 71]])
    with torch.inference_mode():
        at_zero = compat.returned_cache(model(input_ids=ids, position_ids=torch.arange(6)[None], use_cache=True))
        at_four = compat.returned_cache(model(input_ids=ids, position_ids=torch.arange(4, 10)[None], use_cache=True))
    rotary = kv.rotary_embedding_of(model)
    for (keys_zero, _), (keys_four, _) in zip(kv.kv_pairs(at_zero), kv.kv_pairs(at_four)):
        shifted = kv.shift_rotary_keys(keys_zero, 4, rotary)
        assert torch.allclose(shifted, keys_four, atol=1e-5)
        assert not torch.allclose(keys_zero, keys_four, atol=1e-3)


def test_partial_refused_on_absolute_positions():
    loaded = load_model("tiny:gpt2")
    with pytest.raises(UnsupportedCondition, match="rotary position"):
        Engine(loaded, EngineConfig(conditions=("ignore", "partial"), max_new_tokens=8, points=("2",)))


def test_point_beyond_the_ignore_run_is_skipped_with_a_reason():
    loaded = load_model("tiny:llama")
    config = EngineConfig(max_new_tokens=6, points=("5",), conditions=("ignore", "oracle", "injection"))
    engine = Engine(loaded, config)
    engine.eos_ids = {tok for tok in range(len(loaded.tokenizer))}  # every token ends the run at once
    result = engine.run_problem(make_pair())
    assert [r.condition for r in result.runs] == ["ignore", "oracle"]
    assert result.skipped and result.skipped[0][0] == "t5" and "stopped after 1 tokens" in result.skipped[0][1]


@pytest.mark.parametrize("bad, message", [
    (dict(conditions=("ignore", "teleport")), "unknown condition"),
    (dict(points=("0",)), "positive whole number"),
    (dict(points=("1.5",)), "strictly between 0 and 1"),
    (dict(points=("64",), max_new_tokens=64), r"beyond the generation length \(max_new_tokens 64\)"),
    (dict(update_form="shout"), "unknown update form"),
])
def test_bad_settings_are_named(bad, message):
    with pytest.raises(ValueError, match=message):
        EngineConfig(**bad)


def test_problems_run_together_equal_problems_run_alone(loaded):
    """Batching rows of several problems (different prompt and inserted lengths) changes nothing."""
    pairs = [make_pair(), make_pair("Sarah has 70 apples. She buys 7 more apples. How many now?", "p2"),
             make_pair(make_pair().question_a, "p3")]
    config = EngineConfig(max_new_tokens=14, points=("3", "0.5"), conditions=conditions_for(loaded))
    engine = Engine(loaded, config)
    together = engine.run_problems(pairs)
    for pair, joint in zip(pairs, together):
        alone = {(r.condition, r.point): r for r in Engine(loaded, config).run_problem(pair).runs}
        assert set(alone) == {(r.condition, r.point) for r in joint.runs}
        for run in joint.runs:
            single = alone[(run.condition, run.point)]
            assert run.generated_ids == single.generated_ids, (pair.id, run.condition, run.point)
            for ref in ("ignore", "oracle", "matched"):
                np.testing.assert_allclose(run.kl[ref], single.kl[ref], atol=1e-4)


def test_references_decoded_with_the_run_equal_teacher_forced_passes(loaded):
    """The references advance with the run's decode (one forward per step for the run and its
    references); their numbers equal separate cache-free teacher-forced passes over the streams
    they stand for: P_ignore = A + y, P_oracle = B + y, P_matched = B + y[:t0] + X + y[t0:]."""
    from measure.engine.scoring import Stream, compare, score_streams

    pair = make_pair()
    conditions = ("ignore", "oracle", "injection", "flush")
    result = run(loaded, pair, conditions=conditions)
    fmt = PromptFormat()
    prompt_a = fmt.prompt_ids(loaded.tokenizer, pair.question_a)
    prompt_b = fmt.prompt_ids(loaded.tokenizer, pair.question_b)
    for r in result.runs:
        y, t0, inserted = r.generated_ids, r.t0, r.inserted_ids
        after = y[t0:]
        streams = {"run": r.prompt_ids + y[:t0] + inserted, "ignore": prompt_a + y[:t0],
                   "oracle": prompt_b + y[:t0], "matched": prompt_b + y[:t0] + inserted}
        outputs = dict(zip(streams, score_streams(loaded.model, [Stream(None, s + after[:-1], len(after))
                                                                 for s in streams.values()], loaded.tokenizer.pad_token_id)))
        np.testing.assert_allclose(r.logprob_run[t0:], outputs["run"].logprobs.gather(
            1, torch.tensor(after)[:, None])[:, 0].numpy(), atol=LOGPROB_TOL)
        for ref in ("ignore", "oracle", "matched"):
            expected = compare(outputs["run"], outputs[ref], after)
            np.testing.assert_allclose(r.logprob_ref[ref][t0:], expected["logprob"], atol=LOGPROB_TOL)
            np.testing.assert_allclose(r.kl[ref][t0:], expected["kl"], atol=1e-5, err_msg=f"{r.condition} {ref}")
            np.testing.assert_allclose(r.js[ref][t0:], expected["js"], atol=1e-5)
            np.testing.assert_allclose(r.hidden_cosine[ref][:, t0:], expected["hidden_cosine"], atol=1e-5)
        # KL(P_oracle || P_ignore) on the run's own tokens: the two references compared with each other
        np.testing.assert_allclose(r.kl_oracle_ignore[t0:], compare(outputs["oracle"], outputs["ignore"], after)["kl"],
                                   atol=1e-5, err_msg=r.condition)
        assert r.kl_oracle_ignore.shape == (r.n_generated,)
        if r.condition == "flush":  # flush is P_oracle after the change: the same KL, twice
            np.testing.assert_allclose(r.kl_oracle_ignore[t0:], r.kl["ignore"][t0:], atol=1e-5)


def test_long_feeds_prefilled_apart_equal_one_padded_prefill(loaded, monkeypatch):
    """A batch where one stream feeds many tokens (an update) and the rest one token each: the
    long feed runs first in its own forward and the batch's prefill is one position wide; tokens,
    log-probabilities, the references' KL and the positions counted equal one prefill padded to
    the longest feed. Past the sliding window of 8 for the windowed families."""
    from measure.engine import decode
    from measure.engine.decode import Follower

    model, tokenizer = loaded.model, loaded.tokenizer
    prompt = PromptFormat().prompt_ids(tokenizer, "A farmer had 12 cows and sold 3 of them. How many are left?")
    _, cache = prefill(model, None, prompt)
    update = list(range(20, 34))

    def rows():
        references = {"ignore": Follower(cache, [5]), "matched": Follower(cache, [6] + update)}
        return [DecodeRow(cache, [5] + update, 10, references=references),
                *(DecodeRow(cache, [token], 10, references={"ignore": Follower(cache, [5])}) for token in (6, 7, 8, 9, 10, 11))]

    widths = []
    forward = compat.forward

    def counting(model, cache, **inputs):
        widths.append(inputs["input_ids"].shape[1])
        return forward(model, cache, **inputs)

    eos, pad = {tokenizer.eos_token_id}, tokenizer.pad_token_id
    monkeypatch.setattr(compat, "forward", counting)
    apart = decode_rows(model, rows(), eos, pad, batch_size=32)
    assert widths[:2] == [len(update), 1]  # the long streams' feeds but their last token, then one wide
    widths.clear()
    monkeypatch.setattr(decode, "_feed_long_streams_first", lambda *args, **kwargs: None)
    padded = decode_rows(model, rows(), eos, pad, batch_size=32)
    assert widths[0] == len(update) + 1
    for a, b in zip(apart, padded):
        assert a.tokens == b.tokens and a.positions_evaluated == b.positions_evaluated
        np.testing.assert_allclose(a.token_logprobs, b.token_logprobs, atol=LOGPROB_TOL)
        for name in b.references:  # float32 round-off relative to a KL of order 1, absolute near 0
            np.testing.assert_allclose(a.references[name]["kl"], b.references[name]["kl"], rtol=1e-5, atol=KL_TOL)


def test_a_long_feed_shared_by_two_rows_is_fed_once(loaded, forward_shapes):
    """Two runs whose references are the same stream with a long feed (one cache object, the same
    update): the update goes through the model once, and the reference stays one batch row
    while both runs choose the same tokens; each run equals the run decoded alone."""
    from measure.engine.decode import Follower

    model, tokenizer = loaded.model, loaded.tokenizer
    _, cache = prefill(model, None, PromptFormat().prompt_ids(tokenizer, "A farmer had 12 cows and sold 3 of them."))
    update = list(range(20, 34))

    def rows():
        return [DecodeRow(cache, [token], 4, references={"matched": Follower(cache, [6] + update)}) for token in (5, 7)]

    eos, pad = set(), tokenizer.pad_token_id
    forward_shapes.clear()
    together = decode_rows(model, rows(), eos, pad, batch_size=4)
    assert forward_shapes[:2] == [(1, len(update)), (3, 1)]  # the update once; two runs and one reference row
    # The update counts once, for the first run; the second counts its own rows only (3 decode steps).
    assert together[0].positions_evaluated >= 2 + len(update) + 3 and together[1].positions_evaluated <= 1 + 2 * 3
    for joint, row in zip(together, rows()):
        single = decode_rows(model, [row], eos, pad, batch_size=2)[0]
        assert joint.tokens == single.tokens
        np.testing.assert_allclose(joint.token_logprobs, single.token_logprobs, atol=LOGPROB_TOL)
        np.testing.assert_allclose(joint.references["matched"]["kl"], single.references["matched"]["kl"],
                                   rtol=1e-5, atol=KL_TOL)


def test_long_feeds_are_grouped_by_length():
    """Long feeds run in padded forwards of similar lengths: few padded positions, each feed once."""
    from measure.engine.decode import _length_buckets

    assert _length_buckets([40, 1, 1, 1, 1], fixed=32) == [[1, 2, 3, 4], [0]]  # 4 + 40 + 2 x 32 < 5 x 40 + 32
    assert _length_buckets([12, 10, 11], fixed=32) == [[1, 2, 0]]  # one forward: 3 x 12 + 32 < 10 + 11 + 12 + 96
    lengths = [11, 15, 17, 20, 21, 26, 28, 29, 32, 34, 35, 36, 37, 44] * 3
    buckets = _length_buckets(lengths)
    assert sorted(i for bucket in buckets for i in bucket) == list(range(len(lengths)))
    padded = sum(len(bucket) * max(lengths[i] for i in bucket) for bucket in buckets)
    assert padded + 32 * len(buckets) < len(lengths) * max(lengths) + 32


def test_timings_count_the_rows_of_every_decode_step(loaded):
    """measure bench divides decode time by these: 5 tokens take the prefill and 4 decode steps."""
    from measure.engine.decode import Timings

    timings = Timings()
    rows = [DecodeRow(None, [5, 6, 7], 5), DecodeRow(None, [8, 9], 5)]
    decoded = decode_rows(loaded.model, rows, set(), loaded.tokenizer.pad_token_id, batch_size=4, timings=timings)
    assert [len(d.tokens) for d in decoded] == [5, 5]
    assert timings.row_steps == 2 * 4 and timings["decode steps"] > 0


def test_batches_hold_rows_that_finish_together(loaded, monkeypatch):
    """Rows of different numbers of new tokens in one batch would leave it part-empty once the
    short ones finish: with room for two rows per batch, the two 3-token rows share one batch and
    the two 9-token rows the other, though their lengths would pair them the other way."""
    from measure.engine import decode

    batches = []
    original = decode._prefill

    def spy(model, groups, *args):
        batches.append(sorted(g.row.max_new_tokens for g in groups))
        return original(model, groups, *args)

    monkeypatch.setattr(decode, "_prefill", spy)
    long = list(range(5, 15))  # by final length (13, 11, 5, 19) the batches would be [3, 9] twice
    rows = [DecodeRow(None, long, 3), DecodeRow(None, [5, 6], 9), DecodeRow(None, [5, 7], 3),
            DecodeRow(None, long[:-1] + [20], 9)]
    decoded = decode_rows(loaded.model, rows, set(), loaded.tokenizer.pad_token_id, batch_size=2)
    assert sorted(batches) == [[3, 3], [9, 9]]
    assert [len(d.tokens) for d in decoded] == [3, 9, 3, 9]


def test_rows_join_the_running_batch_as_rows_finish(loaded, monkeypatch):
    """With room for two rows, a waiting row joins the running batch as soon as one finishes,
    prefilled apart and then decoded with the others: one shorter than the batch's cache axis (left
    padded) and one longer (the running rows left padded). Every row, with its reference, equals
    the row decoded alone: tokens, log-probabilities, KL; past the sliding window of 8 for the
    windowed families."""
    from measure.engine import decode
    from measure.engine.decode import Follower

    joined = []
    original = decode._prefill

    def spy(model, groups, *args):
        joined.append([len(g.row.feed) for g in groups])
        return original(model, groups, *args)

    monkeypatch.setattr(decode, "_prefill", spy)
    eos, pad = set(), loaded.tokenizer.pad_token_id
    feeds = {"A": list(range(5, 17)), "B": [5, 6], "D": [7, 8, 9], "C": list(range(30, 75))}

    def rows():
        return [DecodeRow(None, feeds[name], 3 if name == "A" else 12,
                          references={"other": Follower(None, [4] + feeds[name])}) for name in feeds]

    together = decode_rows(loaded.model, rows(), eos, pad, batch_size=4)
    # A and B start; D joins when A finishes (its cache axis shorter), C when B finishes (longer).
    assert joined == [[12, 2], [3], [45]]
    monkeypatch.setattr(decode, "_prefill", original)
    for joint, row in zip(together, rows()):
        single = decode_rows(loaded.model, [row], eos, pad, batch_size=2)[0]
        assert joint.tokens == single.tokens and joint.positions_evaluated == single.positions_evaluated
        np.testing.assert_allclose(joint.token_logprobs, single.token_logprobs, atol=LOGPROB_TOL)
        np.testing.assert_allclose(joint.references["other"]["kl"], single.references["other"]["kl"],
                                   rtol=1e-5, atol=KL_TOL)


def test_reference_runs_decoded_in_two_stages_equal_one_stage(loaded, monkeypatch):
    """With a point at a token count the ignore and oracle runs stop at t0 + 1 tokens and go on in
    the batches of that point's forks: their records equal a run decoded in one stage (a
    fraction point alone), and so do the forks at the fraction point, greedy or sampled."""
    first_widths = []
    original = Engine._decode

    def spy(self, rows):
        first_widths.append(sorted({row.max_new_tokens for row in rows}))
        return original(self, rows)

    monkeypatch.setattr(Engine, "_decode", spy)
    for options in ({}, {"temperature": 1.0, "seed": 3}):
        first_widths.clear()
        staged = run(loaded, points=("3", "0.5"), **options)
        assert first_widths[0] == [4]  # stage 1 stops at t0 + 1 = 4 tokens
        first_widths.clear()
        single = run(loaded, points=("0.5",), **options)
        assert first_widths[0] == [16]
        assert staged.references.keys() == single.references.keys() == {"ignore", "oracle"}
        pairs = [(staged.references[name], single.references[name]) for name in ("ignore", "oracle")]
        pairs += [(by_key(staged)[key], run_) for key, run_ in by_key(single).items()]
        for two, one in pairs:
            assert two.generated_ids == one.generated_ids, (one.condition, one.point)
            assert len(two.generated_ids) > 4  # the reference runs did go past stage 1
            np.testing.assert_allclose(two.logprob_run, one.logprob_run, atol=LOGPROB_TOL)
            for ref in ("ignore", "oracle", "matched"):
                np.testing.assert_allclose(two.kl[ref], one.kl[ref], rtol=1e-5, atol=KL_TOL)
                np.testing.assert_allclose(two.logprob_ref[ref], one.logprob_ref[ref], atol=LOGPROB_TOL)
                np.testing.assert_allclose(two.hidden_cosine[ref], one.hidden_cosine[ref], atol=1e-5)
            np.testing.assert_allclose(two.attention_mass, one.attention_mass, atol=1e-5)


def test_streams_that_start_alike_are_prefilled_once(loaded, forward_shapes):
    """Two rows fed the same prompt from nothing (a run's prompt and another run's reference on
    it) share one prefill row, then decode apart: each equals the row decoded alone, and the
    copy's prompt is not counted as evaluated."""
    widths = forward_shapes
    prompt = PromptFormat().prompt_ids(loaded.tokenizer, "Tom reads 20 pages a day.")
    eos, pad = set(), loaded.tokenizer.pad_token_id
    rows = lambda: [DecodeRow(None, prompt, 6, generator=torch.Generator().manual_seed(1)),  # noqa: E731
                    DecodeRow(None, prompt, 6, generator=torch.Generator().manual_seed(2))]
    together = decode_rows(loaded.model, rows(), eos, pad, temperature=5.0, batch_size=4)
    assert widths[0] == (1, len(prompt)) and widths[1] == (2, 1)  # one prefill row, two decode rows
    alone = [decode_rows(loaded.model, [row], eos, pad, temperature=5.0, batch_size=1)[0] for row in rows()]
    assert together[0].tokens != together[1].tokens  # they did decode apart
    for joint, single in zip(together, alone):
        assert joint.tokens == single.tokens
        np.testing.assert_allclose(joint.token_logprobs, single.token_logprobs, atol=LOGPROB_TOL)
    assert together[0].positions_evaluated == len(prompt) + 5 and together[1].positions_evaluated == 5


def test_streams_share_a_row_until_fed_different_tokens(loaded, monkeypatch, forward_shapes):
    """Two runs on one stream, each with a reference on one other stream, are chosen tokens by a
    script: the same two, then different ones. Until they part, the two runs are one batch row and
    so are their references; at the step they part, the rows are copied. Every row equals the row
    decoded alone (tokens, log-probabilities, KL to the reference), so the copy carried the right
    keys and values; and each shared row counted once as evaluated."""
    from measure.engine import decode
    from measure.engine.decode import Follower

    scripts = {1: [11, 12, 13, 14, 15, 16], 2: [11, 12, 23, 24, 25, 26]}  # generator seed -> tokens
    calls: dict[int, int] = {}

    def scripted(logprobs, generator, temperature):
        seed = generator.initial_seed()
        calls[seed] = calls.get(seed, 0) + 1
        return scripts[seed][calls[seed] - 1]

    widths = forward_shapes
    monkeypatch.setattr(decode, "choose_token", scripted)
    model, tokenizer = loaded.model, loaded.tokenizer
    _, cache = prefill(model, None, PromptFormat().prompt_ids(tokenizer, "Tom reads 20 pages a day."))
    _, other = prefill(model, None, PromptFormat().prompt_ids(tokenizer, "Tom reads 30 pages a day."))
    eos, pad = set(), tokenizer.pad_token_id

    def rows():
        return [DecodeRow(cache, [5], 6, generator=torch.Generator().manual_seed(seed),
                          references={"ignore": Follower(other, [5])}) for seed in (1, 2)]

    widths.clear()
    together = decode_rows(model, rows(), eos, pad, batch_size=4)
    # prefill, then steps feeding tokens 1..5: shared for tokens 11 and 12, apart from 13 on
    assert [w[0] for w in widths] == [2, 2, 2, 4, 4, 4], widths
    assert [d.tokens for d in together] == [scripts[1], scripts[2]]
    assert together[0].positions_evaluated == 2 + 5 * 2 and together[1].positions_evaluated == 3 * 2
    calls.clear()
    alone = [decode_rows(model, [row], eos, pad, batch_size=2)[0] for row in rows()]
    for joint, single in zip(together, alone):
        assert joint.tokens == single.tokens
        np.testing.assert_allclose(joint.token_logprobs, single.token_logprobs, atol=LOGPROB_TOL)
        np.testing.assert_allclose(joint.references["ignore"]["kl"], single.references["ignore"]["kl"],
                                   rtol=1e-5, atol=KL_TOL)
        np.testing.assert_allclose(joint.references["ignore"]["logprob"], single.references["ignore"]["logprob"],
                                   atol=LOGPROB_TOL)
