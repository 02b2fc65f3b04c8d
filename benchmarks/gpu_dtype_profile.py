"""Why is bfloat16 slower than float32 on a GPU for a small model? Time and profile one decode step.

Three views of the same batch-1 decode, in float32 and bfloat16, each in one process:

1. transformers alone: ``model(...)`` with a DynamicCache, one token per step, with PyTorch's
   SDPA backend choice and with its cuDNN backend off (measure.model.sdpa.without_cudnn_attention);
2. the engine's decode loop (measure.engine.decode.decode_rows) at batch 1 and 8;
3. torch.profiler over a few engine decode steps: kernels launched per step, and the operators
   taking the most CPU and GPU time, so a per-step cast, copy or synchronisation shows by name.

usage: python benchmarks/gpu_dtype_profile.py MODEL [--device cuda] [--steps 64]
  MODEL  a model folder. A folder holding only config.json and tokenizer files gets random
         weights (seeded) saved beside them first: timing needs the architecture, not the weights,
         and decoding a fixed number of steps keeps the token count equal across dtypes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch


def ensure_weights(folder: Path) -> None:
    if any(folder.glob("*.safetensors")):
        return
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder), dtype=torch.float32)
    model.save_pretrained(folder)
    print(f"random weights saved in {folder}")


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.inference_mode()
def hf_step_ms(model, device: str, steps: int) -> float:
    """Milliseconds per decode step with transformers alone (batch 1, prompt of 100 tokens)."""
    from transformers import DynamicCache

    ids = torch.arange(1000, 1100, device=device)[None]
    cache = DynamicCache(config=model.config)
    out = model(input_ids=ids, past_key_values=cache, use_cache=True)
    token = out.logits[:, -1].argmax(-1, keepdim=True)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        out = model(input_ids=token, past_key_values=cache, use_cache=True)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
    synchronize(device)
    return (time.perf_counter() - start) / steps * 1e3


def engine_step_ms(loaded, device: str, steps: int, rows: int) -> float:
    """Milliseconds per decode step of measure.engine.decode.decode_rows (prefill excluded by difference)."""
    from measure.engine.decode import DecodeRow, decode_rows

    prompt = list(range(1000, 1100))

    def run(n: int) -> float:
        synchronize(device)
        start = time.perf_counter()
        # Every row its own prompt: rows that are the same stream would share one batch row.
        vocab = loaded.model.config.get_text_config(decoder=True).vocab_size
        decode_rows(loaded.model, [DecodeRow(None, [(token + 211 * row) % vocab for token in prompt], n)
                                   for row in range(rows)], set(),
                    loaded.tokenizer.pad_token_id, batch_size=rows)
        synchronize(device)
        return time.perf_counter() - start

    run(4)  # warm-up
    return (run(steps + 1) - run(1)) / steps * 1e3


def profile_steps(loaded, device: str, steps: int = 8) -> None:
    from torch.profiler import ProfilerActivity, profile

    from measure.engine.decode import DecodeRow, decode_rows

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    prompt = list(range(1000, 1100))
    with profile(activities=activities) as prof:
        decode_rows(loaded.model, [DecodeRow(None, prompt, steps + 1)], set(), loaded.tokenizer.pad_token_id,
                    batch_size=1)
        synchronize(device)
    events = prof.key_averages()
    kernels = sum(e.count for e in events if getattr(e, "device_type", None) is not None
                  and str(e.device_type).endswith("CUDA"))
    print(f"  kernels launched: {kernels} in {steps + 1} steps (prefill included), "
          f"about {kernels / (steps + 1):.0f} per step")
    sort = "self_cuda_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    print(events.table(sort_by=sort, row_limit=14, max_name_column_width=48))
    print(events.table(sort_by="self_cpu_time_total", row_limit=10, max_name_column_width=48))


def main() -> None:
    from measure.model.load import load_model
    from measure.model.sdpa import without_cudnn_attention

    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args()
    ensure_weights(Path(args.model))
    table = []
    for dtype in args.dtypes.split(","):
        loaded = load_model(args.model, args.device, dtype)
        print(f"== {dtype}: attention implementation {loaded.model.config._attn_implementation}", flush=True)
        hf_step_ms(loaded.model, args.device, 4)  # warm-up
        row = {"dtype": dtype, "transformers alone, batch 1": hf_step_ms(loaded.model, args.device, args.steps)}
        with without_cudnn_attention(args.device):
            row["transformers, cuDNN SDPA off"] = hf_step_ms(loaded.model, args.device, args.steps)
        for rows in (1, 8):
            row[f"engine decode, batch {rows}"] = engine_step_ms(loaded, args.device, args.steps, rows)
        table.append(row)
        print("  " + ", ".join(f"{k}: {v:.2f} ms/step" for k, v in row.items() if k != "dtype"))
        if not args.no_profile:
            profile_steps(loaded, args.device)
        del loaded
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    print("ms per decode step:")
    for key in table[0]:
        if key != "dtype":
            print(f"  {key:32s} " + "  ".join(f"{row['dtype']} {row[key]:7.2f}" for row in table))


if __name__ == "__main__":
    main()
