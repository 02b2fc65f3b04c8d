"""Time attention capture against plain SDPA and eager ``output_attentions`` on one long sequence.

    python benchmarks/attention_bench.py                 # SmolLM2-135M-Instruct, 1,024 tokens
    python benchmarks/attention_bench.py --tiny llama    # a tiny random model instead (no download)

Three forwards over the same tokens, each timed as the median of --repeats runs after a warm-up:
plain SDPA, eager with output_attentions=True (every layer, every query row), and
AttentionCapture (every layer, the last --n-query query rows) on SDPA, run round-robin. Prints times, ratios to
plain SDPA, and the capture's max |diff| against the eager probabilities as a sanity check.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from measure.engine.attention import AttentionCapture

TEXT = (
    "Sarah has 5 apples. She buys 7 more apples at the market, then gives 3 of them to her brother. "
    "A farmer had 12 cows and sold 3 of them. Each box holds 6 eggs. Tom reads 20 pages a day. "
    "Once upon a time a king lived in a castle with his three daughters near the forest. "
)


def load(args):
    if args.tiny:
        from measure.model.tiny import tiny_model

        model, tokenizer = tiny_model(args.tiny, seed=0, attn_implementation="sdpa")
        return model, tokenizer, f"tiny:{args.tiny}"
    from measure.model.load import load_model

    loaded = load_model()
    return loaded.model, loaded.tokenizer, "SmolLM2-135M-Instruct (float32)"


def timed(variants: dict, repeats: int) -> dict[str, float]:
    """Median seconds per variant; variants run round-robin so that load from other processes
    on a shared machine falls on all of them alike."""
    for fn in variants.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {label: [] for label in variants}
    for _ in range(repeats):
        for label, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - start)
    return {label: statistics.median(values) for label, values in times.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", metavar="FAMILY", help="use a tiny random model of this family instead of SmolLM2")
    parser.add_argument("--tokens", type=int, default=1024, help="sequence length (default 1024)")
    parser.add_argument("--n-query", type=int, default=64, help="query rows captured (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant (default 3)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared machine more threads time the neighbours)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    model, tokenizer, name = load(args)
    ids = tokenizer(TEXT * (args.tokens // 20 + 1), return_tensors="pt").input_ids[:, : args.tokens]
    if ids.shape[1] < args.tokens:
        raise SystemExit(f"could only build {ids.shape[1]} tokens; lower --tokens")
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and args.tokens > limit:
        raise SystemExit(f"{name} takes at most {limit} positions; lower --tokens")
    layers = model.config.num_hidden_layers
    previous = model.config._attn_implementation

    def sdpa():
        with torch.no_grad():
            return model(input_ids=ids).logits

    def eager():
        model.set_attn_implementation("eager")
        try:
            with torch.no_grad():
                return model(input_ids=ids, output_attentions=True).attentions
        finally:
            model.set_attn_implementation(previous)

    def capture():
        with torch.no_grad(), AttentionCapture(model, n_query=args.n_query) as cap:
            model(input_ids=ids)
        return cap.probabilities()

    results = timed({
        "sdpa forward": sdpa,
        "eager + output_attentions": eager,
        f"capture ({layers} layers, last {args.n_query} rows)": capture,
    }, args.repeats)
    reference, captured = eager(), capture()
    diff = max((captured[layer] - reference[layer][:, :, -args.n_query :].float()).abs().max().item() for layer in captured)

    print(f"model: {name}; sequence: {ids.shape[1]} tokens; torch threads: {torch.get_num_threads()}; "
          f"median of {args.repeats} round-robin runs after 1 warm-up")
    base = results["sdpa forward"]
    width = max(len(k) for k in results)
    print(f"{'variant':<{width}}  {'seconds':>8}  {'x sdpa':>7}")
    for label, seconds in results.items():
        print(f"{label:<{width}}  {seconds:8.3f}  {seconds / base:7.2f}")
    print(f"eager / capture: {results['eager + output_attentions'] / list(results.values())[2]:.2f}x")
    print(f"capture vs eager probabilities, last {args.n_query} rows, all layers: max |diff| {diff:.2e}")


if __name__ == "__main__":
    main()
