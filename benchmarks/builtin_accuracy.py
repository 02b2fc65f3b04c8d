"""How often the embedded model solves the built-in math problems uninterrupted, per tier.

    .venv/bin/python benchmarks/builtin_accuracy.py                  # easy and standard tiers
    .venv/bin/python benchmarks/builtin_accuracy.py --tier easy      # the easy tier only (faster)
    .venv/bin/python benchmarks/builtin_accuracy.py --show-failures  # print the texts it got wrong

Each distinct question is generated once, greedily, from the project's prompt
(``PromptFormat().prompt_ids``: the default system prompt asks for 'The answer is N.'), with
``measure.engine.decode.decode_rows`` in left-padded batches, up to --max-new-tokens new tokens (96).
The "oracle" run answers question_b, the "ignore" run question_a (identical controls share one
generation). A run counts as solved only when its text states a final answer explicitly ("The
answer is N", "#### N" or \\boxed{N}: ``extract_math_answer`` methods other than "last_number" /
"none"), that answer equals the pair's answer, and the run was not cut by the token limit right
after a digit (the answer could be a truncated number). The tier comes from ``metadata.tier``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from measure.data.builtin import load_builtin
from measure.engine.decode import DecodeRow, decode_rows
from measure.metrics.answers import extract_math_answer, numbers_equal, parse_number
from measure.model.load import EMBEDDED_MODEL, load_model
from measure.prompts import PromptFormat

NOT_STATED = ("last_number", "none")


def eos_ids(loaded) -> set[int]:
    """The tokenizer's end of sequence and the generation config's, as the engine uses them."""
    ids = {loaded.tokenizer.eos_token_id}
    extra = getattr(getattr(loaded.model, "generation_config", None), "eos_token_id", None)
    if extra is not None:
        ids |= set(extra if isinstance(extra, list) else [extra])
    return ids


def generate(loaded, questions: list[str], max_new_tokens: int = 96, batch_size: int = 32,
             contexts: list[str | None] | None = None) -> list[tuple[str, bool]]:
    """(text, finished) per question, greedy; finished = ended by end of sequence."""
    tokenizer, prompt = loaded.tokenizer, PromptFormat()
    contexts = contexts or [None] * len(questions)
    rows = [DecodeRow(None, prompt.prompt_ids(tokenizer, question, context), max_new_tokens)
            for question, context in zip(questions, contexts)]
    decoded = decode_rows(loaded.model, rows, eos_ids(loaded), tokenizer.pad_token_id, batch_size=batch_size)
    return [(tokenizer.decode(d.tokens, skip_special_tokens=True), d.stop_reason == "eos") for d in decoded]


def judge(text: str, finished: bool, gold: str) -> dict:
    """Whether the text states the gold answer explicitly (see the module docstring)."""
    found = extract_math_answer(text)
    cut = not finished and bool(re.search(r"\d\s*$", text))
    stated = found.method not in NOT_STATED and not cut
    solved = stated and numbers_equal(found.value, parse_number(gold))
    return {"solved": solved, "stated": stated, "answer": found.text, "method": found.method}


def score(loaded, pairs, max_new_tokens: int, batch_size: int) -> dict[str, dict]:
    """{question text: judgement and text} for every distinct question of the pairs."""
    gold = {}
    for pair in pairs:
        gold.setdefault(pair.question_a, pair.answer_a)
        gold.setdefault(pair.question_b, pair.answer_b)
    questions = list(gold)
    outputs = generate(loaded, questions, max_new_tokens, batch_size)
    return {question: {**judge(text, finished, gold[question]), "text": text, "finished": finished}
            for question, (text, finished) in zip(questions, outputs)}


def summarize(pairs, results, run: str) -> tuple[int, int, dict]:
    question = (lambda p: p.question_b) if run == "oracle" else (lambda p: p.question_a)
    by_type = defaultdict(lambda: [0, 0])
    for pair in pairs:
        cell = by_type[pair.variation_type or "control"]
        cell[0] += results[question(pair)]["solved"]
        cell[1] += 1
    solved = sum(cell[0] for cell in by_type.values())
    return solved, len(pairs), dict(by_type)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tier", choices=("easy", "standard", "all"), default="all")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--show-failures", action="store_true", help="print every unsolved question and its text")
    parser.add_argument("--json", default=None, help="write per-question results to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    pairs = load_builtin(kind="math")
    tiers = ("easy", "standard") if args.tier == "all" else (args.tier,)
    chosen = {tier: [p for p in pairs if p.metadata.get("tier", "standard") == tier] for tier in tiers}
    started = time.perf_counter()
    loaded = load_model(EMBEDDED_MODEL, "cpu", "float32")
    loaded_at = time.perf_counter()
    everything = [pair for tier in tiers for pair in chosen[tier]]
    results = score(loaded, everything, args.max_new_tokens, args.batch_size)
    finished_at = time.perf_counter()

    print(f"model {EMBEDDED_MODEL} (cpu, float32), greedy, {args.max_new_tokens} new tokens, torch threads "
          f"{torch.get_num_threads()}; {len(results)} distinct questions generated in "
          f"{finished_at - loaded_at:.1f} s (model load {loaded_at - started:.1f} s)")
    print("solved = the text states 'The answer is N' / '#### N' / \\boxed{N} and N equals the pair's answer")
    for tier in tiers:
        for run, which in (("oracle", "question_b"), ("ignore", "question_a")):
            solved, total, by_type = summarize(chosen[tier], results, run)
            parts = ", ".join(f"{name} {cell[0]}/{cell[1]}" for name, cell in sorted(by_type.items()))
            share = solved / total if total else float("nan")
            print(f"{tier:8s} {run:6s} (on {which}): {solved}/{total} = {share:.0%}   [{parts}]")
    if args.show_failures:
        for question, result in results.items():
            if not result["solved"]:
                print(f"\n--- unsolved ({result['method']}, {result['answer']}): {question}\n{result['text']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
