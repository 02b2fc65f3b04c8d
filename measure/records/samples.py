"""The sample record: one JSON object per problem x condition x point.

A record holds everything the reports need, so ``measure report DIR`` can re-render from the
files alone: identifiers, tokens and texts, spans, per-token curves, attention summaries, the
flat per-run metrics, and the invariant checks made while producing the run. Every field is
defined, with its meaning, in :mod:`measure.records.record`.

:func:`problem_records` turns one problem's engine results into its records, metrics computed;
``measure run`` and the pytest plugin both make their records with it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from measure.engine.results import REFERENCE_RUNS, REFERENCES, SPAN_NAMES, RunResult
from measure.metrics.notes import notes_before_change
from measure.metrics.semantic import get_embedder, semantic_similarity
from measure.metrics.summarize import summarize_run
from measure.records.record import SCHEMA_VERSION

if TYPE_CHECKING:  # the engine imports torch; records only read its results
    from measure.engine.engine import ProblemResult


def record_key(problem_id: str, condition: str, point: str) -> str:
    """The key of a record: ``<problem>/<condition>/<point>`` (point ``-`` for a reference run)."""
    return f"{problem_id}/{condition}/{point}"


def skipped_key(problem_id: str, point: str, condition: str | None = None) -> str:
    """The key of a line of ``skipped.jsonl``: ``<problem>/<point>`` (one line per skipped point),
    ``<problem>/<point>/<condition>`` when one condition was skipped there."""
    return f"{problem_id}/{point}" if condition is None else f"{problem_id}/{point}/{condition}"


def _floats(array) -> list:
    """A JSON-safe list: NaN and infinities become None (JSON has no NaN)."""
    values = np.asarray(array, dtype=float).tolist()

    def clean(value):
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value if math.isfinite(value) else None

    return clean(values)


def run_record(run: RunResult, problem, metrics: dict, notes: bool | None = None) -> dict:
    """Serialise a run with its problem's identity and its flat metrics row; ``notes`` is the
    notes flag (:mod:`measure.metrics.notes`; None for a reference run, or unknown)."""
    arrays = {
        "logprob_run": _floats(run.logprob_run),
        "logprob_ref": {ref: _floats(run.logprob_ref[ref]) for ref in REFERENCES},
        "kl": {ref: _floats(run.kl[ref]) for ref in REFERENCES},
        "js": {ref: _floats(run.js[ref]) for ref in REFERENCES},
        # Per layer, averaged over the continuation: the full (layers, positions) grid is large
        # and the reports plot the layer profile and the mean-over-layers curve.
        "hidden_cosine_layers": {ref: _floats(cos[:, run.t0:].mean(axis=1)) for ref, cos in run.hidden_cosine.items()
                                 if cos.shape[1] > run.t0},
        "hidden_cosine": {ref: _floats(cos.mean(axis=0)) for ref, cos in run.hidden_cosine.items()},
    }
    if run.kl_oracle_ignore is not None:  # records written before it existed lack it
        arrays["kl_oracle_ignore"] = _floats(run.kl_oracle_ignore)
    if run.attention_mass is not None:
        mass = np.asarray(run.attention_mass)  # (layers, heads, n_after, spans)
        arrays["attention_layers_tokens"] = {  # (layers, n_after) per span, heads averaged
            span: _floats(mass[..., i].mean(axis=1)) for i, span in enumerate(SPAN_NAMES)}
        arrays["attention_layers_heads"] = {  # (layers, heads) per span, positions averaged
            span: _floats(mass[..., i].mean(axis=2)) for i, span in enumerate(SPAN_NAMES)}
    return {
        "schema": SCHEMA_VERSION,
        "key": record_key(run.problem_id, run.condition, run.point),
        "problem_id": run.problem_id,
        "condition": run.condition,
        "point": run.point,
        "t0": run.t0,
        "source": problem.source,
        "kind": problem.kind,
        "variation_type": problem.variation_type,
        "answer_a": problem.answer_a,
        "answer_b": problem.answer_b,
        "stop_reason": run.stop_reason,
        "tokens": {"prompt": run.prompt_ids, "inserted": run.inserted_ids, "generated": run.generated_ids},
        "texts": {"prompt": run.prompt_text, "inserted": run.inserted_text, "generated": run.generated_text,
                  "continuation": run.continuation_text, "generated_pieces": run.generated_pieces},
        "spans": {name: list(span) for name, span in run.spans.items()},
        "arrays": arrays,
        "metrics": metrics,
        "checks": {name: (value if math.isfinite(value) else None) for name, value in run.checks.items()},
        # A strategy run's updates and the problem it ends with (None for other conditions).
        "schedule": run.schedule,
        "final_problem": run.final_problem,
        "answer_final": final_answer(problem, run.final_problem),
        # Did the text generated before the change already hold a quantity the change affects (a
        # story: an answer to A)? Records written before this field lack it: read as unknown.
        "notes_before_change": notes,
    }


def final_answer(problem, final_problem: str | None) -> str | None:
    """The canonical answer of the problem a strategy run ends with ("a", "b" or "c")."""
    if final_problem is None:
        return None
    return problem.chain.answer_c if final_problem == "c" else {"a": problem.answer_a, "b": problem.answer_b}[final_problem]


def scored_pair(problem, final_problem: str | None):
    """The pair a run's outcome is classified against: A -> C for a run ending with C (a chain),
    else the problem's own pair (a retraction ending with A is told apart from B by it too)."""
    return problem.final_pair() if final_problem == "c" else problem


def problem_records(result: ProblemResult, problem, tokenizer, semantic: bool) -> list[dict]:
    """Every run of a problem as a record, its metrics computed; ``semantic`` adds the
    sentence-embedding similarities (loads the embedder)."""
    embedder = None
    if semantic:
        embedder = get_embedder()
    ignore, oracle = result.references["ignore"], result.references["oracle"]
    records = []
    for run in result.runs:
        metrics = summarize_run(run, scored_pair(problem, run.final_problem))
        if embedder is not None:
            # Compare continuations from the same position: the reference runs' text after t0.
            oracle_text, ignore_text = (tokenizer.decode(reference.generated_ids[run.t0:], skip_special_tokens=True)
                                        for reference in (oracle, ignore))
            metrics.update(semantic_similarity(run.continuation_text, oracle_text, ignore_text, embedder=embedder))
        notes = None if run.condition in REFERENCE_RUNS else notes_before_change(
            problem, tokenizer.decode(run.generated_ids[:run.t0], skip_special_tokens=True))
        records.append(run_record(run, problem, metrics, notes))
    return records


def skipped_records(result: ProblemResult, conditions: list[str] | tuple[str, ...]) -> list[dict]:
    """The lines of ``skipped.jsonl``: one per skipped point (or point and condition, for a
    strategy the problem has no data for), with the record keys it stands for and its own ``key``
    (``<problem>/<point>`` or ``<problem>/<point>/<condition>``), which the record store requires
    of every line."""
    return [{"key": skipped_key(result.problem_id, label, condition), "problem_id": result.problem_id, "point": label,
             "condition": condition, "reason": reason,
             "keys": [record_key(result.problem_id, c, label) for c in conditions
                      if c not in REFERENCE_RUNS and condition in (None, c)]}
            for label, reason, condition in result.skipped]
