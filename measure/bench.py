"""`measure bench`: the engine's shared-prefix way against the naive way, side by side.

Naive: every condition at every point is generated on its own from its prompt (the shared
prefix y[:t0] regenerated each time), rows decoded one at a time, and every reference scored as
a separate cache-free pass over its whole stream. Engine: ignore and oracle once, a forked cache
per point, the rows of a point decoded as one batch, references continuing the forked caches.
Both run in one process on the same problems; the benchmark checks they produce the same tokens.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from measure import cache as kv
from measure.conditions import ForkPoint
from measure.decode import DecodeRow, decode_rows, prefill
from measure.engine import Engine, EngineConfig
from measure.prompts import inserted_ids, length_matched_ids
from measure.scoring import Stream, score_streams


def naive_problem(engine: Engine, problem) -> tuple[dict, int]:
    """Every run from scratch; returns {(condition, point): generated ids} and positions evaluated."""
    model, tokenizer, config = engine.model, engine.tokenizer, engine.config
    prompt_a = config.prompt.prompt_ids(tokenizer, problem.question_a, problem.context)
    prompt_b = config.prompt.prompt_ids(tokenizer, problem.question_b, problem.context)
    budget = config.max_new_tokens
    eos, pad = engine.eos_ids, engine.pad_id
    evaluated = 0

    def decode(cache, feed, n):
        nonlocal evaluated
        (result,) = decode_rows(model, [DecodeRow(cache, feed, n)], eos, pad, batch_size=1)
        evaluated += result.positions_evaluated
        return result.tokens

    def score_alone(prompt, tokens):
        nonlocal evaluated
        score_streams(model, [Stream(None, prompt + tokens[:-1], len(tokens))], pad, config.hidden_states)
        evaluated += len(prompt) + len(tokens) - 1

    tokens = {}
    for name, prompt, other in (("ignore", prompt_a, prompt_b), ("oracle", prompt_b, prompt_a)):
        tokens[(name, "-")] = decode(None, prompt, budget)
        score_alone(prompt, tokens[(name, "-")])
        score_alone(other, tokens[(name, "-")])
    for point in config.points:
        t0 = point.resolve(len(tokens[("ignore", "-")]))
        if t0 >= len(tokens[("ignore", "-")]):
            continue
        update = inserted_ids(tokenizer, getattr(problem, config.update_form))
        for condition in engine.conditions:
            shared = decode(None, prompt_a, t0)  # the prefix, regenerated for this run alone
            _, ignore_cache = prefill(model, None, prompt_a + shared[:-1])
            _, oracle_cache = prefill(model, None, prompt_b + shared[:-1])
            evaluated += len(prompt_a) + len(prompt_b) + 2 * (t0 - 1)
            fork = ForkPoint(t0, point.label, prompt_a, prompt_b, shared, ignore_cache, oracle_cache, update,
                             length_matched_ids(tokenizer, problem.noise, len(update)),
                             inserted_ids(tokenizer, problem.repeat), model.config, engine.rotary)
            state = condition.prepare(fork)
            after = decode(state.cache, state.feed, budget - t0)
            tokens[(condition.name, point.label)] = shared + after
            stream = state.prompt_ids + shared + state.inserted_ids
            score_alone(stream, after)  # the run, recomputed
            score_alone(prompt_a + shared, after)  # P_ignore
            score_alone(prompt_b + shared, after)  # P_oracle
            if state.inserted_ids:
                score_alone(prompt_b + shared + state.inserted_ids, after)  # P_matched
    return tokens, evaluated


def matmul_gflops(seconds: float = 1.0, size: int = 1024) -> float:
    """The machine's measured fp32 matmul rate (GFLOP/s) with torch's current thread count."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        count += 1
    return 2 * size ** 3 * count / (time.perf_counter() - start) / 1e9


def run_bench(args: argparse.Namespace) -> int:
    from measure.data import load_pairs
    from measure.model import load_model

    loaded = load_model(args.model, args.device, args.dtype)
    config = EngineConfig(max_new_tokens=args.max_new_tokens, points=tuple(args.points.split(",")),
                          batch_size=args.batch_size, attention=False, hidden_states=True)
    engine = Engine(loaded, config)
    problems = load_pairs("builtin", limit=args.problems)
    parameters = sum(p.numel() for p in loaded.model.parameters())
    print(f"model {loaded.name}: {parameters / 1e6:.1f}M parameters, {args.problems} problems, "
          f"{len(engine.conditions)} forked conditions x {len(config.points)} points, "
          f"{args.max_new_tokens} new tokens, torch threads {torch.get_num_threads()}")

    start = time.perf_counter()
    naive_tokens, naive_positions = {}, 0
    for problem in problems:
        tokens, positions = naive_problem(engine, problem)
        naive_tokens[problem.id] = tokens
        naive_positions += positions
    naive_seconds = time.perf_counter() - start

    start = time.perf_counter()
    engine_positions, mismatches = 0, 0
    before = engine.positions_evaluated
    results = engine.run_problems(problems)
    engine_positions = engine.positions_evaluated - before
    for problem, result in zip(problems, results):
        for run in [*result.references.values(), *result.runs]:
            key = (run.condition, run.point)
            if key in naive_tokens[problem.id] and naive_tokens[problem.id][key] != run.generated_ids:
                mismatches += 1
    engine_seconds = time.perf_counter() - start
    rate = matmul_gflops()

    ratio = engine_seconds / naive_seconds
    print(f"{'way':<8} {'seconds':>9} {'positions':>10}")
    print(f"{'naive':<8} {naive_seconds:>9.2f} {naive_positions:>10}")
    print(f"{'engine':<8} {engine_seconds:>9.2f} {engine_positions:>10}")
    print(f"engine / naive time: {ratio:.3f}  (speed-up {1 / ratio:.2f}x)")
    print(f"fp32 matmul rate of this machine: {rate:.1f} GFLOP/s")
    print(f"runs whose tokens differ between the two ways: {mismatches}")
    return 1 if mismatches else 0


def register(subparsers) -> None:
    bench = subparsers.add_parser("bench", help="time the engine against the naive way, side by side")
    bench.add_argument("--model", default="embedded:smollm2-135m-instruct")
    bench.add_argument("--device", default="cpu")
    bench.add_argument("--dtype", default="float32")
    bench.add_argument("--problems", type=int, default=3)
    bench.add_argument("--max-new-tokens", type=int, default=48)
    bench.add_argument("--points", default="8,0.5")
    bench.add_argument("--batch-size", type=int, default=16)
    bench.set_defaults(func=run_bench)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    sys.exit(run_bench(parser.parse_args(["bench", *sys.argv[1:]])))
