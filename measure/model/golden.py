"""Golden outputs of the embedded models: a check of the converted weights against a known output.

The self-consistency invariants (cache vs recompute, decode vs teacher-forced) hold for any
weights, so a wrong GGUF conversion (a dequantization or a RoPE layout changed by a transformers
upgrade) would pass them all. A golden file pins what the model computed once: for each of a few
fixed prompts, the first greedy tokens and the top log-probabilities at each of them, with where
the numbers came from (versions, commit). ``fixtures/golden/<model>.json`` holds them;
``scripts/golden.py`` writes them; tests/model/test_golden.py compares a fresh trace with them.
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from transformers import DynamicCache

from measure.model import compat

PROMPTS = (
    "Sarah has 5 apples. She buys 7 more apples. How many apples does she have now?",
    "The capital of France is",
    "def fibonacci(n):\n    ",
)
N_TOKENS = 16
TOP_K = 5
LOGPROB_TOLERANCE = 1e-3
GOLDEN_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "golden"


def golden_path(model_name: str) -> Path:
    return GOLDEN_DIR / f"{model_name.split(':', 1)[-1]}.json"


@torch.inference_mode()
def greedy_trace(model, tokenizer, prompt: str, n_tokens: int = N_TOKENS, top_k: int = TOP_K,
                 watch: list[list[int]] | None = None) -> dict:
    """The first ``n_tokens`` greedy tokens after ``prompt`` and, at each, the ``top_k`` tokens
    with their log-probabilities (float32 log-softmax of the logits); with ``watch`` (token ids per
    step), also those tokens' log-probabilities, wherever they rank (``watched``)."""
    ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    device = next(model.parameters()).device
    cache, feed, steps = DynamicCache(), ids, []
    for _ in range(n_tokens):
        out = compat.forward(model, cache, input_ids=torch.tensor([feed], device=device), use_cache=True)
        cache = compat.returned_cache(out)
        logprobs = out.logits[0, -1].float().log_softmax(-1)
        top = torch.topk(logprobs, top_k)
        token = int(top.indices[0])
        steps.append({"token": token, "text": tokenizer.decode([token]),
                      "top": [[int(i), round(float(v), 6)] for i, v in zip(top.indices, top.values)]})
        if watch is not None and len(steps) <= len(watch):
            steps[-1]["watched"] = {int(i): float(logprobs[int(i)]) for i in watch[len(steps) - 1]}
        feed = [token]
    return {"prompt": prompt, "prompt_ids": ids, "steps": steps}


def provenance(loaded) -> dict:
    def installed(package: str) -> str | None:
        try:
            return version(package)
        except PackageNotFoundError:
            return None

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                                cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {"model": loaded.name, "weights_sha256": loaded.weights_sha256, "dtype": loaded.dtype,
            "device": loaded.device, "transformers": installed("transformers"), "torch": torch.__version__,
            "gguf": installed("gguf"), "python": platform.python_version(), "commit": commit,
            "written": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}


def golden_traces(loaded, expected: dict | None = None) -> list[dict]:
    """A trace per prompt; given a golden file's contents, watching its top tokens at each step."""
    if expected is None:
        return [greedy_trace(loaded.model, loaded.tokenizer, prompt) for prompt in PROMPTS]
    return [greedy_trace(loaded.model, loaded.tokenizer, trace["prompt"], len(trace["steps"]), len(trace["steps"][0]["top"]),
                         watch=[[token for token, _ in step["top"]] for step in trace["steps"]])
            for trace in expected["traces"]]


def write_golden(loaded, path: Path | None = None) -> Path:
    path = path or golden_path(loaded.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"provenance": provenance(loaded), "n_tokens": N_TOKENS, "top_k": TOP_K, "traces": golden_traces(loaded)}
    text = json.dumps(data, indent=1, ensure_ascii=False)
    # One line per list of numbers (token ids, [token, log-prob] pairs): a diff shows what changed.
    text = re.sub(r"\[\s+([-\d.,\se]+?)\s+\]", lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def differences(expected: dict, traces: list[dict], tolerance: float = LOGPROB_TOLERANCE) -> list[str]:
    """What differs between a golden file's traces and fresh ones, in words (empty: they agree).

    Tokens must be equal; each golden top-k log-probability must be within ``tolerance`` of the
    fresh log-probability of the same token (compared by token, so a reordering of near-ties
    outside the greedy choice is not a difference; pass traces made with ``watch``). A trace stops at its first differing token:
    what follows is conditioned on another stream.
    """
    found = []
    for want, got in zip(expected["traces"], traces):
        prompt = want["prompt"][:40]
        if want["prompt_ids"] != got["prompt_ids"]:
            found.append(f"prompt {prompt!r}: the tokenizer gives other ids ({got['prompt_ids'][:8]}... "
                         f"instead of {want['prompt_ids'][:8]}...)")
            continue
        for step, (w, g) in enumerate(zip(want["steps"], got["steps"])):
            if w["token"] != g["token"]:
                found.append(f"prompt {prompt!r}, token {step + 1}: greedy token {g['token']} ({g['text']!r}) "
                             f"instead of {w['token']} ({w['text']!r})")
                break
            fresh = {**{int(i): v for i, v in g["top"]}, **{int(i): v for i, v in g.get("watched", {}).items()}}
            for token, value in w["top"]:
                if token not in fresh:
                    found.append(f"prompt {prompt!r}, token {step + 1}: no fresh log-probability of token {token}")
                elif abs(fresh[token] - value) > tolerance:
                    found.append(f"prompt {prompt!r}, token {step + 1}: log P({token}) {fresh[token]:.5f} instead of "
                                 f"{value:.5f} (|difference| {abs(fresh[token] - value):.2e} > {tolerance:g})")
    return found


def mismatch_message(expected: dict, now: dict, found: list[str]) -> str:
    """The differences, and which versions differ from the golden file's provenance."""
    keys = ("transformers", "torch", "gguf", "weights_sha256", "dtype", "device")
    changed = [f"{key} {expected['provenance'].get(key)} -> {now.get(key)}" for key in keys
               if expected["provenance"].get(key) != now.get(key)]
    return (f"{expected['provenance']['model']}: the output differs from the golden file (written at commit "
            f"{expected['provenance'].get('commit')}, {expected['provenance'].get('written')}); "
            + (f"changed since: {'; '.join(changed)}" if changed else "no version changed since")
            + f". {len(found)} difference(s):\n" + "\n".join(found[:20]))
