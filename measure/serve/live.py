"""One live experiment: the engine on one problem pair, its events turned into page messages.

Messages (each a JSON object with ``type``), in order:

- ``started``: the problem, the update and where it came from, the lanes (one per run:
  ``ignore@-``, ``oracle@-``, then ``<condition>@<point>``), the settings and the calibration;
- ``token``: one generated token of a lane: ``i`` (its index among the run's generated tokens;
  a forked run's first is its t0), ``piece``, and ``r`` (r(t)) and ``kl`` (KL(run || P_matched))
  when the engine knows them during decoding, else null;
- ``run``: a lane is complete and scored: its t0, inserted text, pieces, the complete ``r`` and
  ``kl`` curves (these fill the sparklines where tokens came without values), the attribution of
  each token after t0 (:mod:`measure.metrics.attribution`), the adaptation gap, the stop reason;
- ``mark``: a detection/adaptation event reached (or, at a run's end, not reached: ``censored``)
  under the chosen calibration (:mod:`measure.serve.marks`);
- ``done``: seconds taken, seconds to the first token, skipped points. Or ``cancelled`` /
  ``error`` from the queue (:mod:`measure.serve.experiments`).
"""

from __future__ import annotations

import math
import time

import numpy as np

from measure.data import load_pairs
from measure.engine.conditions import CONDITIONS
from measure.engine.engine import Engine, EngineConfig
from measure.engine.events import RunEvent, TokenEvent
from measure.metrics.attribution import attribute_tokens
from measure.metrics.latency import adaptation_gap
from measure.prompts import PromptFormat
from measure.serve.experiments import Experiment
from measure.serve.marks import Calibration, LaneMarks
from measure.serve.requests import ExperimentSpec

REFERENCE_LANES = ("ignore", "oracle")


def lane_of(condition: str, point: str) -> str:
    return f"{condition}@{point}"


def _number(value) -> float | None:
    """A JSON-safe float with 6 significant digits (the page draws, it does not compute)."""
    if value is None:
        return None
    value = float(value)
    return float(f"{value:.6g}") if math.isfinite(value) else None


def _curve(values) -> list[float | None]:
    return [_number(v) for v in np.asarray(values, dtype=float).tolist()]


class LiveRun:
    """The work of one experiment (called by the queue's worker thread)."""

    def __init__(self, loaded, spec: ExperimentSpec, pair, update_source: str,
                 calibration: Calibration | None = None, calibration_note: str | None = None,
                 prompt: PromptFormat | None = None):
        self.loaded = loaded
        self.spec = spec
        self.pair = pair
        self.update_source = update_source
        self.calibration = calibration
        self.calibration_note = calibration_note
        self.prompt = prompt or PromptFormat()
        self.marks: dict[str, LaneMarks] = {}
        self.first_token: float | None = None

    def config(self) -> EngineConfig:
        # Attention and hidden states are not drawn live; leaving them out keeps the first
        # tokens fast. Greedy, as `measure run` by default.
        return EngineConfig(max_new_tokens=self.spec.max_new_tokens, points=self.spec.points,
                            conditions=self.spec.conditions, prompt=self.prompt, update_form="erratum",
                            attention=False, hidden_states=False, verify_recompute=False)

    def lanes(self) -> list[dict]:
        lanes = [{"lane": lane_of(name, "-"), "condition": name, "point": "-"} for name in REFERENCE_LANES]
        forked = [name for name in self.spec.conditions if name in CONDITIONS]
        lanes += [{"lane": lane_of(name, point.label), "condition": name, "point": point.label}
                  for point in self.spec.points for name in forked]
        return lanes

    def _calibration_message(self) -> dict:
        if self.calibration is None:
            return {"calibrated": False, "note": self.calibration_note or
                    "uncalibrated: no run folder's calibration chosen, so no detection or adaptation marks"}
        points = {}
        for point in self.spec.points:
            events, why = self.calibration.for_point(point.label)
            points[point.label] = {"events": [rules.as_dict() for rules in events.values()], "note": why}
        return {"calibrated": True, "source": self.calibration.source, "model": self.calibration.model,
                "alpha": self.calibration.alpha, "points": points, "note": self.calibration_note}

    def __call__(self, experiment: Experiment) -> dict:
        start = time.monotonic()
        pair = self.pair
        experiment.publish({
            "type": "started",
            "problem": {"kind": pair.kind, "variation_type": pair.variation_type, "question_a": pair.question_a,
                        "question_b": pair.question_b, "context": pair.context, "pair_id": pair.id},
            "update": pair.erratum, "update_source": self.update_source,
            "lanes": self.lanes(), "settings": self.spec.settings(), "calibration": self._calibration_message(),
        })
        engine = Engine(self.loaded, self.config())
        (result,) = engine.run_problems([pair], listener=self.listener(experiment, start))
        # Returned, not published: the queue publishes it as the state turns done (measure.serve.experiments).
        return {"type": "done", "seconds": round(time.monotonic() - start, 3),
                "first_token_s": None if self.first_token is None else round(self.first_token - start, 3),
                "skipped": [{"point": label, "reason": reason, "condition": condition}
                            for label, reason, condition in result.skipped]}

    def listener(self, experiment: Experiment, start: float):
        """The engine listener: every event becomes page messages; a cancelled experiment raises."""

        def listen(event) -> None:
            experiment.check()
            if isinstance(event, TokenEvent):
                self._token(experiment, event, start)
            elif isinstance(event, RunEvent):
                self._run(experiment, event.run)

        return listen

    def _lane_marks(self, lane: str, point: str, t0: int) -> LaneMarks | None:
        if self.calibration is None or point == "-":
            return None
        if lane not in self.marks:
            events, _ = self.calibration.for_point(point)
            self.marks[lane] = LaneMarks(t0, events)
        return self.marks[lane]

    def _token(self, experiment: Experiment, event: TokenEvent, start: float) -> None:
        if self.first_token is None:
            self.first_token = time.monotonic()
        lane = lane_of(event.condition, event.point)
        kl = event.kl or {}
        experiment.publish({"type": "token", "lane": lane, "i": event.index, "piece": event.piece,
                            "r": _number(event.log_ratio), "kl": _number(kl.get("matched"))})
        marks = self._lane_marks(lane, event.point, event.index)
        if marks is not None:
            for mark in marks.add(event.log_ratio, event.kl):
                experiment.publish({"type": "mark", "lane": lane, **mark})

    def _run(self, experiment: Experiment, run) -> None:
        lane = lane_of(run.condition, run.point)
        t0 = run.t0
        r = run.log_ratio
        has_refs = {"oracle", "ignore"} <= run.logprob_ref.keys()
        labels = (attribute_tokens(run.logprob_ref["oracle"], run.logprob_ref["ignore"], t0).tolist()
                  if has_refs else [])
        experiment.publish({
            "type": "run", "lane": lane, "condition": run.condition, "point": run.point, "t0": t0,
            "inserted": run.inserted_text, "pieces": list(run.generated_pieces), "text": run.generated_text,
            "r": _curve(r), "kl": _curve(run.kl["matched"]) if "matched" in run.kl else [],
            "attribution": labels, "stop_reason": run.stop_reason,
            "gap": _number(adaptation_gap(run.kl["matched"], t0)) if "matched" in run.kl and run.point != "-" else None,
        })
        marks = self._lane_marks(lane, run.point, t0)
        if marks is not None:
            curves = {"log_ratio": np.asarray(r, dtype=float)[t0:],
                      "kl_gap": (np.asarray(run.kl["ignore"], dtype=float) - np.asarray(run.kl["oracle"], dtype=float))[t0:]}
            for mark in marks.finish(curves):
                experiment.publish({"type": "mark", "lane": lane, **mark})


def warm_up(loaded, prompt: PromptFormat | None = None) -> float:
    """Run one short experiment's engine work once, untimed by any page; returns its seconds.

    The first forward passes of a fresh process are several times slower than later ones (kernel
    and thread-pool set-up, first allocations): measured on the embedded model on 2 busy CPU cores,
    15.7 s to the first token of a cold process against 2.4 s warm. Paying it at start-up keeps the
    first experiment a user runs as fast as every later one.
    """
    start = time.monotonic()
    pair = load_pairs("builtin-easy", limit=1)[0]
    config = EngineConfig(max_new_tokens=3, points=("1",), conditions=("ignore", "oracle", "injection", "flush"),
                          prompt=prompt or PromptFormat(), attention=False, hidden_states=False, verify_recompute=False)
    Engine(loaded, config).run_problems([pair], listener=lambda event: None)
    return time.monotonic() - start
