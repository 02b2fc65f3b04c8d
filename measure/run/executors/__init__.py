"""Where `measure run` measures its problem groups: in this process, or on Ray actors.

An executor loads the model (once per worker), takes the run's problem groups and yields each
group's :class:`GroupOutcome` as it completes: the group's records
(:func:`measure.records.samples.problem_records`, each stamped with the ``worker`` that made it)
and its skipped points, or the error it failed with. Executors write no files: the driver
(:func:`measure.run.runner.run_measurement`) appends what they yield to the crash-safe store, so the
store, the reports and ``--resume`` are the same whichever executor measured a group.

- ``local`` (:class:`LocalExecutor`): one worker, this process, groups in order; an error stops
  the run, as it always has.
- ``ray`` (:class:`measure.run.executors.ray.RayExecutor`): one actor per worker, each holding a loaded
  model, on a local Ray instance or an existing cluster; a group whose worker dies or raises is
  retried a bounded number of times, then reported as failed while the other groups go on.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from measure.engine.engine import EngineConfig
from measure.records.samples import problem_records, skipped_records
from measure.run.preflight import check_context_length
from measure.settings import RunSettings

#: The record field naming the worker that measured it (``<executor>/<host>/<worker id>``). It says
#: where a record was made, not what was measured: comparisons of records leave it out.
WORKER_FIELD = "worker"


@dataclass
class GroupOutcome:
    """What became of one problem group: its records and skipped points, or its error."""

    index: int  # the group's position in the list handed to Executor.run
    records: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # lines of skipped.jsonl (measure.records.samples.skipped_records)
    worker: str = ""
    error: str | None = None  # set when the group failed on every attempt; records and skipped are then empty
    attempts: int = 1


class ExecutorError(RuntimeError):
    """The workers could not be started or disagree; the message says why and what to do."""


class GroupsFailed(ExecutorError):
    """Some groups failed on every attempt; the records of all other groups are saved in ``out``."""

    def __init__(self, out, failures: list[dict]):
        self.out, self.failures = out, failures
        listed = "; ".join(f"{', '.join(f['problems'])}: {f['error'].strip().splitlines()[-1] if f['error'].strip() else '?'}"
                           for f in failures)
        super().__init__(f"{len(failures)} problem group(s) failed after {failures[0]['attempts']} attempt(s) "
                         f"({listed}); every other group's records are saved in {out}: rerun with --resume "
                         "to measure the failed groups again")


def measure_group(engine, tokenizer, problems: list, settings: RunSettings, worker: str) -> tuple[list[dict], list[dict]]:
    """Measure one group on a loaded engine: its records (stamped with ``worker``) and skipped points.
    The one place where a group becomes records, for every executor."""
    results = engine.run_problems(problems)
    records, skipped = [], []
    for problem, result in zip(problems, results):
        skipped.extend(skipped_records(result, settings.conditions))
        for record in problem_records(result, problem, tokenizer, settings.semantic):
            record[WORKER_FIELD] = worker
            records.append(record)
    return records, skipped


class Executor:
    """Start the workers (:meth:`start`), measure groups (:meth:`run`), stop them (:meth:`close`)."""

    name = ""

    def start(self, n_groups: int) -> dict:
        """Start the workers (at most ``n_groups``, at least one) and load the model in each; return
        the model block of the run's provenance."""
        raise NotImplementedError

    def preflight(self, problems: list) -> None:
        """measure.run.preflight's checks on the loaded model (the prompts fit its context); SettingsError if not."""
        raise NotImplementedError

    def run(self, groups: list[list]) -> Iterator[GroupOutcome]:
        """Measure every group (a list of problems); yield their outcomes in completion order."""
        raise NotImplementedError

    def describe(self) -> dict:
        """The executor block of the run's provenance: name, worker count, each worker's node."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LocalExecutor(Executor):
    """One worker: this process. ``load`` and ``engine_class`` are the runner's, so a test that
    replaces them there replaces them here."""

    name = "local"

    def __init__(self, settings: RunSettings, load: Callable, engine_class: type):
        self.settings, self.load, self.engine_class = settings, load, engine_class
        self.worker = f"local/{socket.gethostname()}/pid{os.getpid()}"

    def start(self, n_groups: int) -> dict:
        s = self.settings
        self.loaded = self.load(s.model, s.device, s.dtype, s.trust_remote_code)
        self.engine = self.engine_class(self.loaded, EngineConfig.from_settings(s))
        return self.loaded.info()

    def preflight(self, problems: list) -> None:
        check_context_length(self.loaded, problems, self.settings)

    def run(self, groups: list[list]) -> Iterator[GroupOutcome]:
        for index, problems in enumerate(groups):
            records, skipped = measure_group(self.engine, self.loaded.tokenizer, problems, self.settings, self.worker)
            yield GroupOutcome(index, records, skipped, self.worker)

    def describe(self) -> dict:
        return {"name": self.name, "workers": 1, "worker_ids": [self.worker]}


def make_executor(settings: RunSettings, load: Callable, engine_class: type) -> Executor:
    """The executor that ``settings.executor`` names; Ray is imported only when asked for."""
    if settings.executor == "ray":
        from measure.run.executors.ray import RayExecutor  # Ray, an optional dependency: only when asked for

        return RayExecutor(settings)
    return LocalExecutor(settings, load, engine_class)
