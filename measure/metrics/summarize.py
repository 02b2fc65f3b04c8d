"""``summarize_run``: every per-run metric of one RunResult as a flat JSON-serialisable dict.

The row carries identifiers (problem_id, condition, point, variation_type, kind, t0), the window
means of KL/JS to each reference and of r(t), the latencies (each ``name`` plus
``name_censored``), attribution counts and shares, attention-mass summaries (None when the run
has no ``attention_mass``), hidden-state cosine window means (per layer and averaged over
layers), and the outcome. Column meanings, directions and aggregations are in
:mod:`measure.metrics.registry`. Missing values are None, never NaN.

Semantic similarity needs the oracle and ignore continuations, which a single run does not
carry: call :func:`measure.metrics.semantic.semantic_similarity` and merge its dict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Protocol

import numpy as np

from measure.engine.results import REFERENCES
from measure.metrics import attribution, latency
from measure.metrics.answers import OUTCOMES, QA_F1_THRESHOLD, classify_math, classify_qa
from measure.metrics.attention_curves import attention_ratio, span_mass
from measure.metrics.similarity import layer_window_means, mean_over_layers
from measure.metrics.windows import WINDOWS, window_means


class ProblemPairLike(Protocol):
    kind: str  # "math" | "qa"
    answer_a: str
    answer_b: str
    answers_a: tuple[str, ...]
    answers_b: tuple[str, ...]


@dataclass(frozen=True)
class Thresholds:
    """Every tunable constant of the per-run metrics, with its documented default."""

    gap_tokens: int = latency.DEFAULT_GAP_TOKENS  # tokens after the change in the adaptation gap
    stabilization_eps: float = latency.DEFAULT_STAB_EPS  # nats^2, rolling variance of r(t)
    stabilization_window: int = latency.DEFAULT_STAB_WINDOW  # tokens per rolling window
    attention_eps: float = 1e-3  # probability^2, rolling variance of attention onto X
    attention_window: int = latency.DEFAULT_STAB_WINDOW
    attribution_likely: float = attribution.DEFAULT_LIKELY  # probability
    qa_f1: float = QA_F1_THRESHOLD

    @classmethod
    def coerce(cls, value: Thresholds | dict | None) -> Thresholds:
        """None -> defaults; a dict overrides named fields (unknown names raise)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        unknown = set(value) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown thresholds: {sorted(unknown)}")
        return replace(cls(), **value)


def _clean(x):
    if x is None:
        return None
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return None if not math.isfinite(float(x)) else float(x)
    return x


def _windowed(prefix: str, curve, t0: int, out: dict) -> None:
    for w, v in window_means(curve, t0).items():
        out[f"{prefix}_{w}"] = v


def _none_windows(prefix: str, out: dict) -> None:
    for w in WINDOWS:
        out[f"{prefix}_{w}"] = None


def _lat(name: str, lat: latency.Latency | None, out: dict) -> None:
    if lat is None:
        out[name], out[f"{name}_censored"] = None, None
    else:
        out.update(lat.as_dict(name))


def summarize_run(run, problem: ProblemPairLike | None = None, thresholds: Thresholds | dict | None = None) -> dict:
    """All per-run metrics of ``run`` (a RunResult) as a flat dict of JSON-safe scalars."""
    th = Thresholds.coerce(thresholds)
    t0 = int(run.t0)
    out: dict = {
        "problem_id": run.problem_id,
        "condition": run.condition,
        "point": run.point,
        "variation_type": getattr(problem, "variation_type", None),
        "kind": getattr(problem, "kind", None),
        "t0": t0,
        "n_generated": run.n_generated,
        "n_after": run.n_after,
        "stop_reason": run.stop_reason,
    }

    # divergences and r(t)
    for ref in REFERENCES:
        for name, table in (("kl", run.kl), ("js", run.js)):
            if ref in table:
                _windowed(f"{name}_{ref}", table[ref], t0, out)
            else:
                _none_windows(f"{name}_{ref}", out)
    has_ratio = "oracle" in run.logprob_ref and "ignore" in run.logprob_ref
    r = run.log_ratio if has_ratio else None
    if r is not None:
        _windowed("log_ratio", r, t0, out)
    else:
        _none_windows("log_ratio", out)

    # Latencies whose events need calibration on control runs (detection, adaptation) are not
    # per-run metrics: measure.analysis.calibration computes them across the runs of a whole run folder.
    kl = run.kl
    _lat(
        "stabilization_latency",
        latency.stabilization_latency(r, t0, th.stabilization_eps, th.stabilization_window) if r is not None else None,
        out,
    )
    out["adaptation_gap"] = (
        latency.adaptation_gap(kl["matched"], t0, th.gap_tokens) if "matched" in kl else None)
    schedule = getattr(run, "schedule", None)
    if schedule:  # a strategy run: also measured from its last delivered update
        delivered = [update for update in schedule if update["delivered"]]
        out["updates_delivered"] = len(delivered)
        out["last_update_t"] = delivered[-1]["t"]
        out["adaptation_gap_since_last"] = (
            latency.adaptation_gap(kl["matched"], delivered[-1]["t"], th.gap_tokens) if "matched" in kl else None)

    # attribution
    if has_ratio:
        labels = attribution.attribute_tokens(run.logprob_ref["oracle"], run.logprob_ref["ignore"], t0, th.attribution_likely)
        counts, shares = attribution.attribution_counts(labels), attribution.attribution_shares(labels)
    else:
        counts = shares = dict.fromkeys(attribution.LABELS)
    for lab in attribution.LABELS:
        out[f"attr_{lab}_count"] = counts[lab]
        out[f"attr_{lab}_share"] = shares[lab]

    # attention (curves start at the change: t0 = 0)
    if run.attention_mass is not None and np.asarray(run.attention_mass).size:
        inserted = span_mass(run.attention_mass, "inserted")
        _windowed("attention_inserted", inserted, 0, out)
        _windowed("attention_ratio", attention_ratio(run.attention_mass, run.spans), 0, out)
        # Stabilization of attention onto the inserted text: no event for runs with no inserted text.
        stab = (latency.stabilization_latency(inserted, 0, th.attention_eps, th.attention_window)
                if run.inserted_ids else None)
        _lat("attention_stabilization_latency", stab, out)
    else:
        _none_windows("attention_inserted", out)
        _none_windows("attention_ratio", out)
        _lat("attention_stabilization_latency", None, out)

    # hidden-state cosine
    for ref in REFERENCES:
        hc = run.hidden_cosine.get(ref) if run.hidden_cosine else None
        if hc is None or np.asarray(hc).size == 0:
            _none_windows(f"hidden_cos_{ref}", out)
            continue
        _windowed(f"hidden_cos_{ref}", mean_over_layers(hc, t0), 0, out)
        for win, per_layer in layer_window_means(hc, t0).items():
            for i, v in enumerate(per_layer):
                out[f"hidden_cos_{ref}_L{i}_{win}"] = v

    # outcome
    out["answer_chars"] = len(run.generated_text or "")
    if problem is not None:
        finished = run.stop_reason != "max_new_tokens"
        if problem.kind == "qa":
            res = classify_qa(run.generated_text, problem.answers_a, problem.answers_b, th.qa_f1, finished)
        else:
            res = classify_math(run.generated_text, problem.answer_a, problem.answer_b, finished)
        out.update(res)
        for o in OUTCOMES:
            out[f"outcome_{o}"] = res["outcome"] == o
    return {k: _clean(v) for k, v in out.items()}
