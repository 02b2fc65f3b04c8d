"""`measure bench`: the engine's shared-prefix way against the naive way, side by side.

Naive: every condition at every point is generated on its own from its prompt (the shared
prefix y[:t0] regenerated each time), rows decoded one at a time, and every reference scored as
a separate cache-free pass over its whole stream. Engine: ignore and oracle once, a forked cache
per point, the rows of a point decoded as one batch, each run's references rows of the same
forwards (fed the run's tokens as it chooses them). Both run in one process on the same problems;
the benchmark checks they produce the same tokens, and prints where the engine's time goes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time

import torch

from measure.data import load_pairs
from measure.engine.conditions import ForkPoint
from measure.engine.decode import DecodeRow, Timings, decode_rows, prefill
from measure.engine.engine import Engine, EngineConfig
from measure.engine.memory import batch_cap, row_bytes
from measure.engine.scoring import Stream, score_streams
from measure.model import cpu_linear
from measure.model.load import load_model
from measure.prompts import inserted_ids, length_matched_ids


def naive_problem(engine: Engine, problem) -> tuple[dict, int]:
    """Every run from scratch; returns {(condition, point): generated ids} and positions evaluated."""
    model, tokenizer, config = engine.model, engine.tokenizer, engine.config
    prompt_a = config.prompt.prompt_ids(tokenizer, problem.question_a, problem.context, problem.kind)
    prompt_b = config.prompt.prompt_ids(tokenizer, problem.question_b, problem.context, problem.kind)
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


def matmul_gflops(seconds: float = 0.5, size: int = 1024, repeats: int = 5) -> dict[str, float]:
    """The machine's fp32 matmul rate (GFLOP/s) with torch's current thread count, per kernel:
    ``aten`` (torch.mm: MKL on x86) and, where available, ``onednn`` (a packed-weight oneDNN
    product, which the model's linear layers use on CPU: measure.model.cpu_linear). Each the best of
    ``repeats`` measurements, so that a moment of load on a shared machine does not make the
    reference a noisy low (which would flatter the engine's share of it)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    products = {"aten": lambda: torch.mm(a, b)}
    if cpu_linear.available():
        packed = cpu_linear.packed_linear(b.t().contiguous())
        products["onednn"] = lambda: cpu_linear.onednn_linear(a, packed, None)
    rates = {}
    for name, product in products.items():
        product()
        best = 0.0
        for _ in range(repeats):
            count, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                product()
                count += 1
            best = max(best, 2 * size ** 3 * count / (time.perf_counter() - start) / 1e9)
        rates[name] = best
    return rates


class PeakMemory:
    """Peak resident memory of this process while the block runs.

    On Linux the kernel keeps the peak (``VmHWM``) and lets a process reset it to its current
    resident size (``/proc/self/clear_refs``), which measures the exact peak at no cost. Where that
    reset is refused, a thread samples the resident size every 10 ms instead; on this project's
    2-core machine that sampler took 1.1 s of a 40 s engine run (measured twice, 3%).
    """

    def __enter__(self):
        self.base = self.peak = _rss()
        self._thread = None
        if not _reset_kernel_peak():
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc):
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        else:
            self.peak = max(self.peak, _kernel_peak())
        self.peak = max(self.peak, _rss())

    @property
    def grown(self) -> int:
        return self.peak - self.base


def _reset_kernel_peak() -> bool:
    """Reset the kernel's peak resident size of this process to its current size; False where refused."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # 5: reset the peak resident size (Linux 4.0 and later)
    except OSError:
        return False
    return _kernel_peak() > 0


def _kernel_peak() -> int:
    """The kernel's peak resident size of this process since its last reset (``VmHWM``)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def timed_engine(loaded, problems, points, max_new_tokens, batch_size):
    # The engine's timings alone: the recompute check is a measurement run's, not the engine's work.
    engine = Engine(loaded, EngineConfig(max_new_tokens=max_new_tokens, points=points, batch_size=batch_size,
                                         verify_recompute=False))
    start = time.perf_counter()
    results = engine.run_problems(problems)
    return engine, results, time.perf_counter() - start


# Peak resident memory above the level after loading, sampled while decoding (the process-wide
# high-water mark would still hold the peak of loading the weights). Rows as the engine decodes
# them: each leader with two followers (different streams), hidden states compared, attention
# captured; the count is of all rows, leaders and followers.
_MEMORY_PROBE = """
import sys
from measure.bench import PeakMemory
from measure.engine.decode import DecodeRow, Follower, decode_rows
from measure.model.load import load_model
loaded = load_model(sys.argv[1], sys.argv[2], sys.argv[3])
leaders, new_tokens = int(sys.argv[4]) // 3, int(sys.argv[5])
vocab = loaded.model.config.get_text_config(decoder=True).vocab_size
spans = {"prompt": (0, 200), "after": (200, 200 + new_tokens)}
# Every row its own prompt: streams that start alike would share a batch row (measure.engine.decode).
prompts = [[(token + 211 * leader) % vocab for token in range(1000, 1200)] for leader in range(leaders)]
rows = [DecodeRow(None, prompt, new_tokens, hidden_states=True, attention_spans=spans,
                  references={"a": Follower(None, prompt[:-1] + [7]), "b": Follower(None, prompt[:-1] + [8])})
        for prompt in prompts]
with PeakMemory() as memory:
    decode_rows(loaded.model, rows, set(), loaded.tokenizer.pad_token_id, batch_size=3 * leaders)
print(memory.grown)
"""


def decode_memory_per_row(loaded, rows_small: int = 6, rows_large: int = 24, new_tokens: int = 64) -> tuple[float, float]:
    """Peak memory growth of decoding ``rows_small`` vs ``rows_large`` rows of 200 + 64 positions
    (a third of them leaders, the rest their followers), each in a fresh process (an allocator
    that keeps freed memory would blur a second measurement in the same process):
    (MB per row, MB fixed)."""
    grown = []
    for rows in (rows_small, rows_large):
        result = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, loaded.name, loaded.device, loaded.dtype,
                                 str(rows), str(new_tokens)], capture_output=True, text=True, check=True)
        grown.append(int(result.stdout.split()[-1]))
    per_row = (grown[1] - grown[0]) / (rows_large - rows_small)
    return per_row / 1e6, (grown[0] - per_row * rows_small) / 1e6


def gpu_decode_rates(loaded, batch_sizes=(1, 8, 32), new_tokens: int = 64) -> dict[int, float]:
    vocab = loaded.model.config.get_text_config(decoder=True).vocab_size
    rates = {}
    for size in batch_sizes:
        # Every row its own prompt: rows that are the same stream would share one batch row.
        rows = [DecodeRow(None, [(token + 211 * row) % vocab for token in range(1000, 1100)], new_tokens)
                for row in range(size)]
        torch.cuda.synchronize()
        start = time.perf_counter()
        decode_rows(loaded.model, rows, set(), loaded.tokenizer.pad_token_id, batch_size=size)
        torch.cuda.synchronize()
        rates[size] = size * new_tokens / (time.perf_counter() - start)
    return rates


def best_decode_step_rate(loaded, rows: int, positions: int = 200, new_tokens: int = 16) -> float:
    """Useful arithmetic (GFLOP/s) of decode-step forwards at their best: ``rows`` rows over a
    cache of ``positions`` positions, every row live, no references, hidden states, attention
    capture or step metrics. The engine's decode steps (three quarters of its time, over caches of
    100-330 positions in the bench workload: shorter ones attend faster, longer ones slower) stay
    near or below it however they are batched or scheduled, so while this figure, as a share of
    the matmul rate, is below the useful-share target, only a faster forward can meet the target.
    One prompt is prefilled once and its cache shared by every row: each row is then fed a
    different token, so each is its own stream (its own batch row)."""
    model = loaded.model
    vocab = model.config.get_text_config(decoder=True).vocab_size
    _, cache = prefill(model, None, [(1000 + token) % vocab for token in range(positions)])
    batch = [DecodeRow(cache, [(2000 + 37 * row) % vocab], new_tokens) for row in range(rows)]
    timings = Timings()
    decode_rows(model, batch, set(), loaded.tokenizer.pad_token_id, batch_size=rows, timings=timings)
    parameters = sum(p.numel() for p in model.parameters())
    return 2 * parameters * timings.row_steps / timings["decode steps"] / 1e9


TARGETS = {"engine / naive time": 0.12, "useful share of matmul rate": 0.50, "2x tokens time ratio": 2.0}


def print_breakdown(engine: Engine, seconds: float) -> None:
    """Where the engine's time went (measure.engine.decode.Timings): prefill forwards, decode-step
    forwards, the per-step comparisons with the references (metrics), Python bookkeeping, forks,
    assembling results, the optional recompute check; ``other`` is what no part accounts for."""
    parts = dict(engine.timings)
    parts["other"] = seconds - sum(parts.values())
    print("  where the time went: " + ", ".join(
        f"{name} {value:.1f} s ({value / seconds:.0%})" for name, value in sorted(parts.items(), key=lambda kv: -kv[1])))
    rows = engine.timings.row_steps
    if rows:
        # What a decode step costs per row bounds the engine however its rows are batched.
        print(f"  decode steps: {rows} row-steps, {1000 * parts.get('decode steps', 0.0) / rows:.2f} ms a row-step")


def run_bench(args: argparse.Namespace) -> int:
    loaded = load_model(args.model, args.device, args.dtype)
    points = tuple(args.points.split(","))
    problems = load_pairs("builtin", limit=args.problems)
    parameters = sum(p.numel() for p in loaded.model.parameters())
    print(f"model {loaded.name}: {parameters / 1e6:.1f}M parameters on {loaded.device} ({loaded.dtype}); "
          f"{len(problems)} problems, ignore + oracle + 5 conditions x {len(points)} points, all references "
          f"and metrics inputs, {args.max_new_tokens} new tokens; torch threads {torch.get_num_threads()}; "
          f"linear layers on {loaded.linear_kernel}")
    rate_before = matmul_gflops() if loaded.device == "cpu" else None

    with PeakMemory() as engine_memory:
        engine, results, engine_seconds = timed_engine(loaded, problems, points, args.max_new_tokens, args.batch_size)
    positions = engine.positions_evaluated
    useful = 2 * parameters * positions / engine_seconds / 1e9
    figures: dict[str, float] = {}
    print(f"engine, {args.max_new_tokens} tokens: {engine_seconds:.1f} s, {positions} token positions, "
          f"useful arithmetic {useful:.1f} GFLOP/s, peak memory +{engine_memory.grown / 1e9:.2f} GB")
    print_breakdown(engine, engine_seconds)

    if not args.skip_long:
        long_engine, _, long_seconds = timed_engine(loaded, problems, points, 2 * args.max_new_tokens, args.batch_size)
        figures["2x tokens time ratio"] = long_seconds / engine_seconds
        print(f"engine, {2 * args.max_new_tokens} tokens: {long_seconds:.1f} s "
              f"({figures['2x tokens time ratio']:.2f}x the time of {args.max_new_tokens})")
        print_breakdown(long_engine, long_seconds)

    if not args.skip_naive:
        start = time.perf_counter()
        mismatches = 0
        config = EngineConfig(max_new_tokens=args.max_new_tokens, points=points, attention=False,
                              batch_size=args.batch_size, verify_recompute=False)
        naive_engine = Engine(loaded, config)
        for problem, result in zip(problems, results):
            tokens, _ = naive_problem(naive_engine, problem)
            mismatches += sum(1 for run in [*result.references.values(), *result.runs]
                              if tokens.get((run.condition, run.point), run.generated_ids) != run.generated_ids)
        naive_seconds = time.perf_counter() - start
        figures["engine / naive time"] = engine_seconds / naive_seconds
        print(f"naive, {args.max_new_tokens} tokens: {naive_seconds:.1f} s; engine / naive = "
              f"{figures['engine / naive time']:.3f} (speed-up {naive_seconds / engine_seconds:.1f}x); "
              f"runs with different tokens: {mismatches}")
        if mismatches:
            print("FAIL: the two ways disagree on tokens")
            return 1

    if loaded.device == "cpu":
        rate_after = matmul_gflops()
        rates = {name: max(rate_before[name], rate_after[name]) for name in rate_after}
        # The reference is the fastest fp32 product this process can run, whichever kernel the
        # model's layers use: a slower reference would flatter the engine.
        rate = max(rates.values())
        figures["useful share of matmul rate"] = useful / rate
        print("fp32 matmul rate measured in this run (best of 10): " + ", ".join(
            f"{name} {value:.1f} GFLOP/s" for name, value in rates.items())
            + f" (the model's linear layers: {loaded.linear_kernel}); useful arithmetic is "
            f"{figures['useful share of matmul rate']:.0%} of the fastest")
        best_step = best_decode_step_rate(loaded, args.batch_size)
        print(f"a decode step at its best ({args.batch_size} rows of 200 positions, every row live, nothing but "
              f"the forward): {best_step:.1f} GFLOP/s, {best_step / rate:.0%} of the fastest, about the most the "
              "engine's decode steps can reach")
        per_row, fixed = decode_memory_per_row(loaded)
        longest = 320 + args.max_new_tokens
        print(f"decode memory, rows of 264 positions (leaders and followers): {per_row:.1f} MB per row measured "
              f"({fixed:+.0f} MB fixed), "
              f"{row_bytes(loaded.model, 264) / 1e6:.1f} MB estimated; at {longest} positions "
              f"{row_bytes(loaded.model, longest) / 1e6:.1f} MB per row estimated, so the batch cap from free "
              f"memory is {batch_cap(loaded.model, longest)} rows")
    elif loaded.device.startswith("cuda"):
        for size, rate in gpu_decode_rates(loaded).items():
            print(f"GPU decode, batch {size}: {rate:.0f} tokens/s")

    failed = []
    for name, figure in figures.items():
        ok = figure <= TARGETS[name] if name != "useful share of matmul rate" else figure >= TARGETS[name]
        print(f"target {name}: {figure:.3f} ({'<=' if name != 'useful share of matmul rate' else '>='} "
              f"{TARGETS[name]}) {'met' if ok else 'MISSED'}")
        failed += [] if ok else [name]
    return 1 if failed else 0


if __name__ == "__main__":
    from measure.cli import main  # `python -m measure.bench` is `measure bench`

    sys.exit(main(["bench", *sys.argv[1:]]))
