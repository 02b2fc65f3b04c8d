"""Does a listener slow the engine? ``run_problems`` without one, with a bare one, and with the one
``measure serve`` uses, side by side in one process.

    python benchmarks/listener_bench.py                    # embedded SmolLM2, 3 built-in problems, 32 tokens
    python benchmarks/listener_bench.py --model tiny:llama # a tiny random model (seconds)

The engine is configured as ``measure run`` configures it by default (attention, hidden states and
the recompute check on; only the token budget and point are smaller). After one untimed warm-up,
each variant runs ``--repeats`` times round-robin, the order rotating every round so that a slow
spell of a shared machine does not fall on one variant; each variant's time is the median.
Variants: ``none`` (no listener: the engine builds no events, as in ``measure run``), ``bare``
(a listener that only counts events: the cost of building them, one token decode per token) and
``serve`` (the live page's listener, :meth:`measure.serve.live.LiveRun.listener`, turning every
event into page messages, marks from a calibration included; the page runs one problem, here its
lanes receive every problem's events, which is the same work per event). Prints the medians, the ratio of
each to ``none`` in wall-clock and in process CPU time (with ``--threads 1`` CPU time measures
the work itself, which a busy shared machine does not distort), and checks that every variant
generated the same tokens.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from measure.data import load_pairs
from measure.engine.engine import Engine, EngineConfig
from measure.model.load import EMBEDDED_MODEL, load_model
from measure.settings import RunSettings

ROOT = Path(__file__).resolve().parents[1]


def serve_listener(problem, settings: RunSettings):
    """The listener `measure serve` runs, with the committed baseline's calibration for marks."""
    from measure.serve.experiments import Experiment
    from measure.serve.live import LiveRun
    from measure.serve.marks import read_calibration
    from measure.serve.requests import parse_experiment

    spec = parse_experiment({"question_a": problem.question_a, "question_b": problem.question_b,
                             "points": settings.points, "max_new_tokens": settings.max_new_tokens})
    calibration = read_calibration(ROOT / "reports" / "baselines" / "smollm2", "baseline")
    live = LiveRun(None, spec, problem, "the pair's erratum", calibration)
    experiment = Experiment(live, subscribe_grace=1e9)
    return live.listener(experiment, time.monotonic()), experiment


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=EMBEDDED_MODEL)
    parser.add_argument("--problems", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--point", default="6")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads; 1 makes CPU time a clean measure of work on a shared machine")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    settings = RunSettings(model=args.model, max_new_tokens=args.max_new_tokens, points=[args.point])
    loaded = load_model(settings.model, settings.device, settings.dtype)
    problems = load_pairs("builtin-easy", limit=args.problems)
    engine = Engine(loaded, EngineConfig.from_settings(settings))
    print(f"model {loaded.name} on {loaded.device}; {len(problems)} problems, all conditions at t{args.point}, "
          f"{args.max_new_tokens} new tokens, `measure run`'s engine settings; torch threads {torch.get_num_threads()}",
          flush=True)

    def tokens(results):
        return [(run.condition, run.point, tuple(run.generated_ids)) for result in results for run in result.runs]

    engine.run_problems(problems)  # warm-up: allocator, kernels, tokenizer caches
    times: dict[str, list[float]] = {"none": [], "bare": [], "serve": []}
    cpu: dict[str, list[float]] = {name: [] for name in times}
    generated: dict[str, list] = {}
    events: dict[str, int] = {}
    names = list(times)
    for round_index in range(args.repeats):
        order = names[round_index % len(names):] + names[:round_index % len(names)]
        for name in order:
            count = [0]
            experiment = None
            if name == "none":
                listener = None
            elif name == "bare":
                def listener(event, count=count):
                    count[0] += 1
            else:
                listener, experiment = serve_listener(problems[0], settings)
            start, start_cpu = time.perf_counter(), time.process_time()
            results = engine.run_problems(problems, listener=listener)
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
            print(f"  round {round_index + 1} {name}: {times[name][-1]:.2f} s, cpu {cpu[name][-1]:.2f} s", flush=True)
            generated.setdefault(name, tokens(results))
            events[name] = count[0] if name == "bare" else len(experiment.messages_from(0)) if experiment else 0
    base, base_cpu = statistics.median(times["none"]), statistics.median(cpu["none"])
    for name in names:
        median, median_cpu = statistics.median(times[name]), statistics.median(cpu[name])
        runs = ", ".join(f"{t:.2f}" for t in times[name])
        extra = (f"; {events[name]} events" if name == "bare" else
                 f"; {events[name]} page messages" if name == "serve" else "")
        print(f"{name:>5}: median {median:.2f} s (runs {runs}), ratio to none {median / base:.3f}; "
              f"cpu {median_cpu:.2f} s, ratio {median_cpu / base_cpu:.3f}{extra}")
    same = all(generated[name] == generated["none"] for name in names)
    print(f"same tokens in every variant: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
