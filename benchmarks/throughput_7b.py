"""Token positions per second of `measure run`'s work on a 7B-shaped model: the README's cost estimate.

No 7B weights can be downloaded here, so the model is a Llama at a real model's shape with random
weights (the tiny tokenizer: a vocabulary of ~400 instead of 32,000, about 2% of a 7B model's
arithmetic left out), in bfloat16. Speed does not depend on the weights' values, only on how many
positions are evaluated; end of sequence is switched off so that every run goes to
``--tokens`` (a real model stops early on most problems: this is the upper bound). Each problem
runs as ``measure run`` runs it by default (all seven conditions, attention, hidden states and the
recompute check on), in groups of ``--group-size``, and its records are built
(measure.records.samples.problem_records, without the semantic embedder).

usage: python benchmarks/throughput_7b.py [--device cuda] [--shapes 1b,7b] [--problems 6]
       [--tokens 128] [--points 8,16,32,0.5] [--group-size 3] [--batch-size 64]
Prints, per shape: parameters, positions evaluated, seconds, positions/s, GPU memory peak.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from measure.data import load_pairs
from measure.engine.engine import Engine, EngineConfig
from measure.model.load import LoadedModel
from measure.model.sdpa import use_grouped_sdpa
from measure.model.tiny import tiny_tokenizer
from measure.records.samples import problem_records
from measure.settings import RunSettings

SHAPES = {  # Llama 2 7B (multi-head attention: the largest KV cache of the 7B models), TinyLlama 1.1B
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32),
    "1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
}
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def random_model(shape: str, device: str, dtype: str) -> LoadedModel:
    tokenizer = tiny_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=4096, tie_word_embeddings=False,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **SHAPES[shape])
    config._attn_implementation = "sdpa"
    default = torch.get_default_dtype()
    torch.set_default_dtype(DTYPES[dtype])
    try:
        with torch.device(device):  # initialised in place: a 7B model built on the CPU first takes minutes
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    model.eval()
    use_grouped_sdpa(model)
    return LoadedModel(model, tokenizer, f"random:{shape}", "random", device, dtype)


def measure_shape(shape: str, args) -> None:
    loaded = random_model(shape, args.device, args.dtype)
    parameters = sum(p.numel() for p in loaded.model.parameters())
    settings = RunSettings(model=loaded.name, points=args.points.split(","), max_new_tokens=args.tokens,
                           device=args.device, dtype=args.dtype, semantic=False, batch_size=args.batch_size)
    engine = Engine(loaded, EngineConfig.from_settings(settings))
    engine.eos_ids = set()  # random weights: never stop early, every run decodes --tokens tokens
    problems = load_pairs("builtin", None, limit=args.problems)
    warm = engine.run_problems(problems[:1])  # kernels chosen and compiled before the clock starts
    problem_records(warm[0], problems[0], loaded.tokenizer, False)
    engine.positions_evaluated = 0
    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    records = 0
    for first in range(0, len(problems), args.group_size):
        group = problems[first:first + args.group_size]
        for problem, result in zip(group, engine.run_problems(group)):
            records += len(problem_records(result, problem, loaded.tokenizer, False))
    if args.device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    positions = engine.positions_evaluated
    peak = torch.cuda.max_memory_allocated() / 1e9 if args.device == "cuda" else float("nan")
    print(f"{shape}: {parameters / 1e9:.2f}B parameters, {args.dtype} on {args.device} "
          f"({torch.cuda.get_device_name(0) if args.device == 'cuda' else 'cpu'}); {len(problems)} problems x "
          f"7 conditions x {len(settings.points)} points ({args.points}), {args.tokens} tokens, group size "
          f"{args.group_size}, batch size {args.batch_size}: {records} records, "
          f"{positions} positions ({positions / len(problems):.0f} per problem) "
          f"in {seconds:.1f} s = {positions / seconds:.0f} positions/s, {seconds / len(problems):.2f} s per problem; "
          f"peak GPU memory {peak:.1f} GB", flush=True)
    del engine, loaded
    if args.device == "cuda":
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    parser.add_argument("--shapes", default="1b,7b")
    parser.add_argument("--problems", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--points", default="8,16,32,0.5")
    parser.add_argument("--group-size", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    for shape in args.shapes.split(","):
        measure_shape(shape, args)


if __name__ == "__main__":
    main()
