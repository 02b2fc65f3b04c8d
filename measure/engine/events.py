"""What the engine tells a listener while it works: one event per generated token, one per run.

A listener is any callable taking an event; ``measure run`` passes none (the engine then builds
no events at all), the live web view (``measure serve``) passes one that forwards events to the
browser. Events are plain data so that they can cross a thread or a process boundary.

- :class:`TokenEvent`: a run chose a token. ``index`` counts the run's generated tokens from 0
  (for a forked run, index ``t0`` is the first token after the change; the shared tokens before
  it are the ignore run's and are not announced again). ``log_ratio`` and ``kl`` are the per-token
  metric inputs (r(t) and KL(run || P_ref) per reference) when the engine knows them at decode
  time, else None; they are always in the :class:`RunEvent` that follows.
- :class:`RunEvent`: a run is complete and scored; ``run`` is its :class:`~measure.engine.results.RunResult`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from measure.engine.results import RunResult


@dataclass(frozen=True)
class TokenEvent:
    problem_id: str
    condition: str
    point: str  # the injection point's label, "-" for the reference runs
    index: int  # position among the run's generated tokens
    token_id: int
    piece: str  # the token decoded alone
    log_ratio: float | None = None  # r(t) at this token, when known during decoding
    kl: dict[str, float] | None = None  # KL(run || P_ref) per reference name, when known during decoding


@dataclass(frozen=True)
class RunEvent:
    run: RunResult


Event = TokenEvent | RunEvent
Listener = Callable[[Event], None]
