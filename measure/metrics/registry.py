"""Every per-run metric column with its direction and aggregation, declared in one place.

Reports and ``measure.analysis.stats.aggregate`` read :data:`METRICS` (or :func:`spec_for` for a column
name) to know how to aggregate a column across runs and which way is better:

- direction: ``"higher"`` (higher is better), ``"lower"``, or ``"neutral"`` (descriptive only;
  e.g. KL to the ignore run is good under a real change and bad under a control).
- aggregation: ``"mean"`` (mean with bootstrap CI), ``"km_median"`` (Kaplan-Meier median of a
  right-censored latency whose flag is in ``censor_column``), ``"rate"`` (share of True with a
  Wilson CI), or ``"none"`` (identifiers, texts, flags).

Column names produced by :func:`measure.metrics.summarize.summarize_run`:
``kl_{ref}_{window}``, ``js_{ref}_{window}``, ``log_ratio_{window}``, ``attention_ratio_{window}``,
``attention_inserted_{window}``, ``hidden_cos_{ref}_{window}`` (mean over layers) and
``hidden_cos_{ref}_L{i}_{window}`` (per layer; row 0 = embeddings), the latencies and their
``*_censored`` flags, ``attr_{label}_count`` / ``attr_{label}_share``, the outcome columns, and
(separately, from :func:`measure.metrics.semantic.semantic_similarity`) ``semantic_*``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from measure.engine.results import REFERENCES
from measure.metrics.attribution import LABELS
from measure.metrics.windows import WINDOWS


@dataclass(frozen=True)
class MetricSpec:
    direction: str  # "higher" | "lower" | "neutral"
    aggregation: str  # "mean" | "km_median" | "rate" | "none"
    description: str
    censor_column: str | None = None


METRICS: dict[str, MetricSpec] = {}
_FAMILIES: dict[str, MetricSpec] = {}  # windowed bases and per-layer families


def register(name: str, direction: str, aggregation: str, description: str, *, windowed: bool = False) -> None:
    """Declare a metric; ``windowed`` declares ``{name}_{window}`` for every window too."""
    assert direction in ("higher", "lower", "neutral"), direction
    assert aggregation in ("mean", "km_median", "rate", "none"), aggregation
    censor = f"{name}_censored" if aggregation == "km_median" else None
    spec = MetricSpec(direction, aggregation, description, censor)
    if windowed:
        _FAMILIES[name] = spec
        for w in WINDOWS:
            METRICS[f"{name}_{w}"] = MetricSpec(direction, aggregation, f"{description} ({w} window)")
    else:
        METRICS[name] = spec
        if censor:
            METRICS[censor] = MetricSpec("neutral", "rate", f"{name} was right-censored (event not seen)")


_DIR = {"ignore": "neutral", "oracle": "lower", "matched": "lower"}
for _ref in REFERENCES:
    register(f"kl_{_ref}", _DIR[_ref], "mean", f"KL(run || P_{_ref}) per token, nats", windowed=True)
    register(f"js_{_ref}", _DIR[_ref], "mean", f"JS(run, P_{_ref}) per token, nats (<= ln 2)", windowed=True)
    register(
        f"hidden_cos_{_ref}",
        "neutral" if _ref == "ignore" else "higher",
        "mean",
        f"cosine of run vs {_ref} hidden states, mean over layers 1..L",
        windowed=True,
    )
register("log_ratio", "higher", "mean", "r(t) = log P_oracle(y_t) - log P_ignore(y_t)", windowed=True)
register("attention_ratio", "neutral", "mean", "attention per token on the inserted span / on prompt+prefix", windowed=True)
register("attention_inserted", "neutral", "mean", "attention mass onto the inserted span (mean over layers, heads)",
         windowed=True)

# Calibrated on control runs across a run's records (measure.analysis.calibration), not per run:
# each a latency in tokens after the change, lower is faster, summarised by its Kaplan-Meier median.
_CALIBRATED_LATENCIES = {
    "detection_latency": "tokens until r(t) exceeds what (1 - alpha) of control runs ever reach (calibrated)",
    "adaptation_latency": "tokens until the w-token mean of r(t) exceeds the control-calibrated margin (calibrated)",
    "adaptation_latency_kl": ("tokens until the w-token mean of KL(run||ignore) - KL(run||oracle) exceeds the "
                              "control-calibrated margin"),
    "cusum_latency": "tokens until Page's CUSUM of r(t) exceeds what (1 - alpha) of control runs ever reach (calibrated)",
    "cusum_latency_kl": "tokens until Page's CUSUM of KL(run||ignore) - KL(run||oracle) exceeds the control-calibrated level",
    "cumulative_llr_latency": ("tokens until the cumulative log-likelihood ratio r_1 + ... + r_k exceeds the "
                               "control-calibrated level"),
    "lead_latency": ("tokens until the lead event (the calibrated event chosen on the positive control of its fold's "
                     "fitting set) fires"),
}
for _name, _what in _CALIBRATED_LATENCIES.items():
    register(_name, "lower", "km_median", _what)
register("lead_fired", "higher", "rate", "the lead event fired within the run's tokens (changed problems)")
register("lead_observable", "neutral", "rate",
         "a perfect adapter could fire the lead event on the run's tokens (changed problems)")
register("lead_event", "neutral", "none", "the calibrated event the run's lead latency comes from")
register("observability", "neutral", "mean",
         "sum over the tokens after the change of KL(P_oracle || P_ignore) on the run's own tokens, nats")
register("stabilization_latency", "lower", "km_median",
         "tokens until the rolling variance of r(t) stays below eps (fixed eps: descriptive, not calibrated)")
register("adaptation_gap", "lower", "mean", "mean KL(run || P_matched) over the first 20 tokens after the change, nats")
register("attention_stabilization_latency", "neutral", "km_median",
         "tokens until the rolling variance of attention onto the inserted span stays below eps (no inserted text: none)")

_ATTR_DIR = {"injected": "higher", "original": "lower", "mixed": "neutral", "neither": "neutral"}
for _lab in LABELS:
    register(f"attr_{_lab}_count", "neutral", "mean", f"tokens after t0 attributed {_lab}")
    register(f"attr_{_lab}_share", _ATTR_DIR[_lab], "mean", f"share of tokens after t0 attributed {_lab}")

register("outcome_adapted", "higher", "rate", "stated final answer equals B's")
register("outcome_stale", "lower", "rate", "stated final answer equals A's (and not B's)")
register("outcome_other", "neutral", "rate", "stated final answer equals neither")
register("outcome_unfinished", "neutral", "rate", "no final answer stated (never guessed from the last number)")
register("answers_identical", "neutral", "none", "A and B have the same answer (controls)")
register("em_a", "lower", "rate", "QA exact match against A's answers")
register("em_b", "higher", "rate", "QA exact match against B's answers")
register("f1_a", "lower", "mean", "QA token F1 against A's answers")
register("f1_b", "higher", "mean", "QA token F1 against B's answers")
register("contains_a", "lower", "rate", "QA: the text contains one of A's answers")
register("contains_b", "higher", "rate", "QA: the text contains one of B's answers")
register("answer_chars", "neutral", "mean", "characters of the generated text")
register("n_generated", "neutral", "mean", "tokens generated in total")
register("n_after", "neutral", "mean", "tokens generated after the change")
register("semantic_oracle", "higher", "mean", "MiniLM cosine of the continuation to the oracle's")
register("semantic_ignore", "neutral", "mean", "MiniLM cosine of the continuation to the ignore run's")
register("semantic_margin", "higher", "mean", "semantic_oracle - semantic_ignore")
for _name in ("problem_id", "condition", "point", "variation_type", "kind", "t0", "stop_reason", "outcome", "answer",
              "answer_method", "last_number"):
    register(_name, "neutral", "none", "identifier or text")

_LAYER = re.compile(r"^(hidden_cos_(?:ignore|oracle|matched))_L(\d+)_(" + "|".join(WINDOWS) + r")$")


def spec_for(column: str) -> MetricSpec | None:
    """The spec of a summary column, per-layer hidden-state columns included; None if unknown."""
    if column in METRICS:
        return METRICS[column]
    m = _LAYER.match(column)
    if m:
        base = _FAMILIES[m.group(1)]
        ref = m.group(1).rsplit("_", 1)[1]
        desc = f"cosine of run vs {ref} hidden states at layer {m.group(2)} ({m.group(3)} window)"
        return MetricSpec(base.direction, base.aggregation, desc)
    return None
