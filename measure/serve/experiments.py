"""Experiments and the queue that runs them one at a time per model, in a worker thread.

The engine is synchronous and holds the model, so one thread runs every experiment in turn;
a request while one runs waits in the queue (at most ``max_waiting`` of them, a further one is
refused with :class:`QueueFull`). An experiment's messages are kept in order in the experiment
itself, so a page that subscribes late (or reconnects) gets all of them from the start.

Cancellation: the engine calls a listener for every token it chooses; the listener raises
:class:`Cancelled` once the experiment is cancelled, which unwinds ``run_problems`` from inside
its decode loop. An experiment is cancelled by :meth:`Experiment.cancel` (the page's cancel
button), when its last subscriber goes away (the tab was closed), or when nobody subscribed
within ``subscribe_grace`` seconds of its start (a request whose page never listened).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, CANCELLED, FAILED = "queued", "running", "done", "cancelled", "failed"
FINISHED = (DONE, CANCELLED, FAILED)
#: Finished experiments kept for late subscribers; older ones are forgotten.
KEEP_FINISHED = 16


class Cancelled(Exception):
    """Raised from the engine's listener to stop an experiment; the message says why."""


class QueueFull(Exception):
    """Another experiment is running and the queue is full; the message says what to do."""


class Experiment:
    """One submitted experiment: its work, its state and its messages for the page."""

    _ids = itertools.count(1)

    def __init__(self, work: Callable[[Experiment], dict | None], subscribe_grace: float = 15.0):
        """``work`` runs the experiment, publishing its messages as it goes, and returns the
        message announcing its end (or None): the queue publishes that one when the experiment's
        state turns done, so a page that reads it finds the model free."""
        self.id = f"x{next(self._ids)}"
        self.work = work
        self.state = QUEUED
        self.created = time.monotonic()
        self.started: float | None = None
        self.subscribe_grace = subscribe_grace
        self.subscribers = 0
        self.ever_subscribed = False
        self.cancel_reason: str | None = None
        self.messages: list[dict] = []
        self._lock = threading.Lock()

    # -- messages ----------------------------------------------------------------------------
    def publish(self, message: dict) -> None:
        with self._lock:
            self.messages.append({**message, "t": round(time.monotonic() - self.created, 4)})

    def messages_from(self, index: int) -> list[dict]:
        with self._lock:
            return self.messages[index:]

    def messages_and_state(self, index: int) -> tuple[list[dict], bool]:
        """The messages from ``index`` on and whether the experiment has finished, read together:
        a finished experiment's last message is already among its messages."""
        with self._lock:
            return self.messages[index:], self.state in FINISHED

    def finish(self, state: str, message: dict | None) -> None:
        """Turn ``state`` and publish its message in one step (see :meth:`messages_and_state`)."""
        with self._lock:
            self.state = state
            if message is not None:
                self.messages.append({**message, "t": round(time.monotonic() - self.created, 4)})

    # -- subscribers and cancellation ---------------------------------------------------------
    def subscribe(self) -> None:
        with self._lock:
            self.subscribers += 1
            self.ever_subscribed = True

    def unsubscribe(self) -> None:
        with self._lock:
            self.subscribers -= 1
            last = self.subscribers == 0
        if last and self.state not in FINISHED:
            self.cancel("the page was closed")

    def cancel(self, reason: str) -> None:
        """Stop the experiment: a queued one at once, a running one at its next engine event."""
        with self._lock:
            if self.cancel_reason is not None or self.state in FINISHED:
                return
            self.cancel_reason = reason
            if self.state == QUEUED:
                self.state = CANCELLED
                self.messages.append({"type": "cancelled", "reason": reason,
                                      "t": round(time.monotonic() - self.created, 4)})

    def begin(self) -> bool:
        """Queued -> running; False when it was cancelled while it waited."""
        with self._lock:
            if self.state != QUEUED:
                return False
            self.state = RUNNING
            self.started = time.monotonic()
            return True

    def check(self) -> None:
        """Raise :class:`Cancelled` when the experiment should stop; called for every engine event."""
        waited = time.monotonic() - (self.started or self.created)
        if self.cancel_reason is None and not self.ever_subscribed and waited > self.subscribe_grace:
            self.cancel_reason = f"no page subscribed to its events within {self.subscribe_grace:g} s"
        if self.cancel_reason is not None:
            raise Cancelled(self.cancel_reason)

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


class ExperimentQueue:
    """Runs experiments one at a time in a daemon worker thread, in the order submitted."""

    def __init__(self, max_waiting: int = 2):
        self.max_waiting = max_waiting
        self.experiments: dict[str, Experiment] = {}
        self.current: Experiment | None = None
        self._waiting: deque[Experiment] = deque()
        self._condition = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="measure-serve-engine", daemon=True)
        self._thread.start()

    def submit(self, experiment: Experiment) -> int:
        """Queue ``experiment``; returns how many run or wait before it (0: it starts now)."""
        with self._condition:
            # Ahead of it: the running experiment and those waiting (whether or not the worker
            # has picked the first of them up yet); cancelled ones are about to be dropped.
            ahead = [e for e in (self.current, *self._waiting) if e is not None and not e.finished
                     and e.cancel_reason is None]
            if len(ahead) > self.max_waiting:
                raise QueueFull(f"the model is busy: one experiment is running and {len(ahead) - 1} "
                                f"{'is' if len(ahead) == 2 else 'are'} waiting (at most {self.max_waiting}); "
                                "wait for them to finish or cancel one, then run again")
            self._prune()
            self.experiments[experiment.id] = experiment
            self._waiting.append(experiment)
            position = len(ahead)
            experiment.publish({"type": "queued", "position": position})
            self._condition.notify_all()
            return position

    def get(self, experiment_id: str) -> Experiment | None:
        return self.experiments.get(experiment_id)

    def status(self) -> dict:
        with self._condition:
            return {"running": self.current.id if self.current else None,
                    "waiting": [e.id for e in self._waiting if not e.finished], "max_waiting": self.max_waiting}

    def stop(self) -> None:
        with self._condition:
            self._stopped = True
            for experiment in [*self._waiting, *([self.current] if self.current else [])]:
                experiment.cancel("the server is shutting down")
            self._condition.notify_all()

    def _prune(self) -> None:
        finished = [key for key, e in self.experiments.items() if e.finished]
        for key in finished[:max(0, len(finished) - KEEP_FINISHED)]:
            del self.experiments[key]

    def _next(self) -> Experiment | None:
        with self._condition:
            while not self._stopped and not self._waiting:
                self._condition.wait()
            if self._stopped:
                return None
            experiment = self._waiting.popleft()
            self.current = experiment
            for position, waiting in enumerate(self._waiting, start=1):
                waiting.publish({"type": "queued", "position": position})
            return experiment

    def _loop(self) -> None:
        while (experiment := self._next()) is not None:
            ending = None
            try:
                ending = self._run(experiment)
            finally:
                # The queue lets go of the experiment before its end shows: a page that sees
                # "cancelled" or "done" then finds the model free (queue.running is None).
                with self._condition:
                    self.current = None
                    if ending is not None:
                        experiment.finish(*ending)

    @staticmethod
    def _run(experiment: Experiment) -> tuple[str, dict | None] | None:
        """Run the experiment; returns its final state and the message announcing it (None when
        it was cancelled while it waited: its "cancelled" message is out already)."""
        if not experiment.begin():
            return None
        try:
            experiment.publish({"type": "running"})
            experiment.check()
            final = experiment.work(experiment)
        except Cancelled as reason:
            return CANCELLED, {"type": "cancelled", "reason": str(reason)}
        except Exception as error:  # shown on the page; the worker must survive any experiment
            log.exception("experiment %s failed", experiment.id)
            return FAILED, {"type": "error", "message": f"{type(error).__name__}: {error}"}
        return DONE, final
