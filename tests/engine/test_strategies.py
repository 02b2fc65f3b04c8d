"""Injection strategies (several updates per run): schedule resolution, exactness on every tiny
family (sliding windows included), references of the problem a schedule ends with, undelivered
updates, batching, records, calibrated latencies since the last update, and a resumed run.

Tolerances as in tests/engine/test_engine.py: a strategy's stream is prompt A, generated tokens and
updates in the order they arrived, so its edited cache must equal a cache-free pass over that
stream within float32 round-off (1e-4 log-prob, 1e-6 KL); a wrong position or a stale key shows
up as 1e-2 and more.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from measure.data import load_builtin
from measure.engine.conditions import STRATEGIES, NotApplicable, split_update
from measure.engine.engine import Engine, EngineConfig
from measure.model.load import load_model
from measure.model.tiny import TINY_FAMILIES
from measure.records.samples import problem_records
from measure.testing import QUESTION_A, example_pair

LOGPROB_TOL = 1e-4
KL_TOL = 1e-6
ROPE_FAMILIES = [f for f in TINY_FAMILIES if f != "gpt2"]
STRATEGY_CONDITIONS = ("ignore", "oracle", "injection", *STRATEGIES)


def chained_pairs():
    pairs = [p for p in load_builtin("math") if p.chain is not None]
    assert len(pairs) >= 2, "the built-in math pairs carry chains A -> B -> C"
    return pairs[:2]


def run_strategies(loaded, pairs, **options):
    config = EngineConfig(**{"max_new_tokens": 40, "points": ("4",), "verify_recompute": True, "update_gap": 5,
                             "conditions": STRATEGY_CONDITIONS, **options})
    return Engine(loaded, config).run_problems(pairs)


def strategy_runs(results):
    return [run for result in results for run in result.runs if run.schedule]


# -- schedules ------------------------------------------------------------------------------------
def test_split_update_cuts_at_word_starts_nearest_equal_parts():
    pieces = ["Correction", ":", " Sarah", " has", " 7", " apples", ",", " not", " 5", "."]
    parts = split_update(list(range(10)), pieces, 3)
    assert parts == [[0, 1, 2], [3, 4, 5, 6], [7, 8, 9]]
    assert [t for part in parts for t in part] == list(range(10))
    # Without word starts: cut anywhere, still contiguous, non-empty and complete.
    parts = split_update(list(range(7)), ["x"] * 7, 3)
    assert [len(p) for p in parts] == [2, 3, 2] and sum(parts, []) == list(range(7))
    assert split_update([1, 2], [" a", " b"], 5) == [[1], [2]]  # never more parts than tokens


def test_bad_strategy_settings_are_refused():
    with pytest.raises(ValueError, match="update_gap must be at least 1"):
        EngineConfig(conditions=("multi",), update_gap=0)
    with pytest.raises(ValueError, match="gradual_pieces must be at least 2"):
        EngineConfig(conditions=("gradual",), gradual_pieces=1)
    with pytest.raises(ValueError, match="partial_recompute_last must be at least 1"):
        EngineConfig(conditions=("partial",), partial_recompute_last=0)


# -- exactness and references -----------------------------------------------------------------------
@pytest.fixture(scope="module", params=ROPE_FAMILIES)
def family_results(request):
    loaded = load_model(f"tiny:{request.param}")
    return request.param, run_strategies(loaded, chained_pairs())


def test_every_strategy_is_an_exact_stream_on_every_family(family_results):
    family, results = family_results
    runs = strategy_runs(results)
    assert {run.condition for run in runs} == set(STRATEGIES), family
    for run in runs:
        checks = run.checks
        assert checks["full_recompute_max_abs_logprob"] < LOGPROB_TOL, (family, run.condition, checks)
        assert checks["full_recompute_max_kl"] < KL_TOL, (family, run.condition, checks)
        assert checks["decode_vs_recompute_max_abs_logprob"] < LOGPROB_TOL, (family, run.condition, checks)


def test_updates_arrive_on_schedule_at_their_stream_positions(family_results):
    family, results = family_results
    for run in strategy_runs(results):
        delivered = [u for u in run.schedule if u["delivered"]]
        assert len(delivered) >= 2, (family, run.condition, run.schedule)  # past the tiny window of 8 tokens
        gap = 1 if run.condition == "gradual_stream" else 5
        assert [u["t"] for u in run.schedule] == [run.t0 + gap * i for i in range(len(run.schedule))]
        before = 0
        for update in delivered:  # prompt + generated before it + updates before it
            assert update["stream_start"] == len(run.prompt_ids) + update["t"] + before
            before += update["n_tokens"]
        assert sum(u["n_tokens"] for u in delivered) == len(run.inserted_ids)
        for update in run.schedule[len(delivered):]:  # the run ended before these
            assert update["stream_start"] is None and update["t"] >= run.n_generated - 1
        assert run.n_generated == len(run.logprob_run) == len(run.kl["matched"])


def test_references_use_the_problem_the_schedule_ends_with():
    loaded = load_model("tiny:llama")
    pair = chained_pairs()[0]
    (result,) = run_strategies(loaded, [pair])
    runs = {run.condition: run for run in result.runs}
    assert runs["multi"].final_problem == "c" and runs["multi_retract"].final_problem == "a"
    assert runs["gradual"].final_problem == "b" == runs["gradual_stream"].final_problem
    # A retraction ends with A: after t0 P_matched is the run's own stream and P_oracle is P_ignore,
    # so both comparisons are exact (the same rows), not merely close. (Before t0 every run's
    # arrays are the ignore run's, compared with B.)
    retract = runs["multi_retract"]
    t0 = retract.t0
    assert np.all(retract.kl["matched"][t0:] == 0.0)
    assert np.array_equal(retract.kl["oracle"][t0:], retract.kl["ignore"][t0:])
    # The chain's P_oracle is C, not B: after t0 it differs from the injection run's (B) curve.
    multi, injection = runs["multi"], runs["injection"]
    first_update = multi.schedule[0]
    assert np.array_equal(multi.generated_ids[:first_update["t"]], injection.generated_ids[:first_update["t"]])
    assert multi.logprob_ref["oracle"][multi.t0] != pytest.approx(injection.logprob_ref["oracle"][injection.t0], abs=1e-6)


def test_identical_problem_control_stays_exact_through_every_update():
    loaded = load_model("tiny:llama")
    control = example_pair(question_b=QUESTION_A)
    assert control.is_control
    (result,) = run_strategies(loaded, [control], conditions=("ignore", "oracle", "multi_retract", "gradual",
                                                               "gradual_stream"))
    for run in strategy_runs([result]):
        assert np.array_equal(run.kl["oracle"], run.kl["ignore"]), run.condition
        assert np.array_equal(run.logprob_ref["oracle"], run.logprob_ref["ignore"]), run.condition


def test_multi_without_a_chain_is_skipped_with_its_reason():
    loaded = load_model("tiny:llama")
    (result,) = run_strategies(loaded, [example_pair()], conditions=("ignore", "oracle", "multi", "gradual"))
    assert [(label, condition) for label, _, condition in result.skipped] == [("t4", "multi")]
    assert "no chain" in result.skipped[0][1]
    assert {run.condition for run in result.runs} == {"ignore", "oracle", "gradual"}
    assert issubclass(NotApplicable, Exception)


def test_a_run_that_ends_before_an_update_records_it_undelivered():
    loaded = load_model("tiny:llama")
    # 4 tokens before the first piece and room for 3 more: the erratum streamed token by token
    # cannot all arrive; the gradual strategy's third piece (t = 4 + 2 * 5 = 14) is beyond the end.
    (result,) = run_strategies(loaded, [chained_pairs()[0]], max_new_tokens=8,
                               conditions=("ignore", "oracle", "gradual", "gradual_stream"))
    for run in strategy_runs([result]):
        delivered = [u for u in run.schedule if u["delivered"]]
        assert len(delivered) < len(run.schedule), run.condition
        assert all(u["t"] < run.n_generated for u in delivered)
        assert run.n_generated == 8


def test_a_strategy_run_alone_equals_the_same_run_in_a_batch_of_all_strategies():
    loaded = load_model("tiny:llama")
    pair = chained_pairs()[1]
    (together,) = run_strategies(loaded, [pair])
    (alone,) = run_strategies(loaded, [pair], conditions=("ignore", "oracle", "gradual"))
    a = next(run for run in together.runs if run.condition == "gradual")
    b = next(run for run in alone.runs if run.condition == "gradual")
    assert a.generated_ids == b.generated_ids and a.schedule == b.schedule
    assert np.max(np.abs(a.kl["matched"] - b.kl["matched"])) < KL_TOL * 10
    assert np.max(np.abs(a.logprob_run - b.logprob_run)) < LOGPROB_TOL


def test_sampling_continues_after_an_update_instead_of_starting_over():
    """With temperature > 0 each stage of a strategy run must draw fresh random numbers. At a
    temperature this high every token is about equally likely, so a stage that restarted the run's
    random stream would repeat the tokens of the stage before it (stages of 5 tokens here); drawn
    afresh, 5 tokens of a 400-token vocabulary coincide with probability about 1e-13."""
    loaded = load_model("tiny:llama")
    (result,) = run_strategies(loaded, [chained_pairs()[0]], temperature=1e6, seed=3, verify_recompute=False,
                               conditions=("ignore", "oracle", "gradual"))
    (run,) = strategy_runs([result])
    starts = [u["t"] for u in run.schedule if u["delivered"]]
    assert len(starts) == 3
    stages = [run.generated_ids[a:b] for a, b in zip(starts, starts[1:])]
    assert all(len(stage) == 5 for stage in stages)
    assert stages[0] != stages[1]
    # And still reproducible: the same seed gives the same tokens.
    (again,) = run_strategies(loaded, [chained_pairs()[0]], temperature=1e6, seed=3, verify_recompute=False,
                              conditions=("ignore", "oracle", "gradual"))
    assert strategy_runs([again])[0].generated_ids == run.generated_ids


# -- records --------------------------------------------------------------------------------------
def test_records_carry_the_schedule_and_metrics_since_the_last_update():
    loaded = load_model("tiny:llama")
    pair = chained_pairs()[0]
    (result,) = run_strategies(loaded, [pair])
    records = {r["condition"]: r for r in problem_records(result, pair, loaded.tokenizer, semantic=False)}
    multi = records["multi"]
    json.dumps(multi)  # JSON-safe
    assert multi["final_problem"] == "c" and multi["answer_final"] == pair.chain.answer_c
    assert multi["schedule"][0]["t"] == multi["t0"] and multi["schedule"][0]["text"]
    metrics = multi["metrics"]
    delivered = [u for u in multi["schedule"] if u["delivered"]]
    assert metrics["updates_delivered"] == len(delivered) and metrics["last_update_t"] == delivered[-1]["t"]
    kl = np.array(multi["arrays"]["kl"]["matched"], dtype=float)
    assert metrics["adaptation_gap_since_last"] == pytest.approx(kl[delivered[-1]["t"]:][:20].mean(), rel=1e-6)
    assert records["injection"]["schedule"] is None and "updates_delivered" not in records["injection"]["metrics"]
    assert records["multi_retract"]["answer_final"] == pair.answer_a


# -- a resumed run ------------------------------------------------------------------------------------
def test_an_interrupted_run_with_strategies_resumes_to_the_uninterrupted_records(tmp_path):
    import shutil

    from measure.records.store import read_store
    from tests.records.test_run_folder import run

    argv = ["--model", "tiny:llama", "--dataset", "builtin", "--limit", "3", "--group-size", "1",
            "--max-new-tokens", "16", "--points", "3", "--conditions", "injection,noise,multi,multi_retract,gradual",
            "--update-gap", "4", "--no-semantic", "--quiet"]
    whole = tmp_path / "whole"
    code, err = run("run", *argv, "--out", str(whole))
    assert code == 0, err
    records = read_store(whole / "samples.jsonl")[0]
    assert any(r["schedule"] for r in records)
    cut = tmp_path / "cut"
    shutil.copytree(whole, cut)
    lines = (cut / "samples.jsonl").read_text().splitlines(keepends=True)
    (cut / "samples.jsonl").write_text("".join(lines[:len(lines) // 2]))  # as if killed halfway
    code, err = run("run", "--out", str(cut), "--resume", "--quiet")
    assert code == 0, err
    expected = {r["key"]: r for r in records}
    resumed = {r["key"]: r for r in read_store(cut / "samples.jsonl")[0]}
    assert sorted(resumed) == sorted(expected)
    for key, record in resumed.items():
        assert record["tokens"] == expected[key]["tokens"], key
        assert record["schedule"] == expected[key]["schedule"], key
    skipped = (whole / "skipped.jsonl").read_text() if (whole / "skipped.jsonl").exists() else ""
    assert (cut / "skipped.jsonl").read_text().count("\n") == skipped.count("\n")
