"""One process's measurements: the model loaded once, each problem's engine run computed once.

A problem's engine run (ignore + oracle, every selected condition at every selected point) is
computed on the first test of that problem that this process runs and kept for the others; a
failure is kept too, so the problem's other tests fail at once with the same error instead of
recomputing. The engine runs only the conditions and points that this session's selected tests
ask for (``-k injection`` computes ignore, oracle and injection), so a selection is as cheap as
it looks. Records come from :func:`measure.records.samples.problem_records`, the code ``measure run``
uses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

import pytest

from measure.engine.results import REFERENCE_RUNS
from measure.pytest_plugin.cases import Case
from measure.records.samples import problem_records, record_key


@dataclass
class Measured:
    """One case's measurement: its run, its record, and the problem it came from."""

    case: Case
    problem: object  # measure.data.ProblemPair
    run: object  # measure.engine.results.RunResult
    record: dict
    references: dict = field(default_factory=dict)  # "ignore" / "oracle" -> RunResult


@dataclass
class _ProblemRun:
    problem: object
    runs: dict  # record key -> RunResult
    records: dict  # record key -> record dict
    skipped: dict  # point label -> reason
    references: dict
    unsupported: dict  # condition -> reason


class Suite:
    """Measurements for the cases collected in this process (one worker, or a serial run)."""

    def __init__(self, settings, problems: list, cases: list[Case], threads: int, log):
        self.settings = settings
        self.problems = {problem.id: problem for problem in problems}
        self.cases = cases
        self.threads = threads
        self.log = log
        self.loaded = None
        self._done: dict[str, _ProblemRun | BaseException] = {}

    # -- the model ------------------------------------------------------------------------------
    def model(self):
        if self.loaded is None:
            # torch and the model loader: only once a measurement test runs (the plugin's import stays cheap)
            import torch

            from measure.model.load import ModelLoadError, load_model

            if self.threads > 0:
                torch.set_num_threads(self.threads)
            try:
                self.loaded = load_model(self.settings.model, self.settings.device, self.settings.dtype,
                                         self.settings.trust_remote_code)
            except ModelLoadError as error:
                self.loaded = error
            info = (self.loaded.info() if not isinstance(self.loaded, BaseException)
                    else {"name": self.settings.model, "error": str(self.loaded)})
            self.log.event("model", info=info, torch_threads=torch.get_num_threads())
        if isinstance(self.loaded, BaseException):
            # A failure, not a skip: a session whose model does not load has measured nothing.
            pytest.fail(f"measure: --measure-model {self.settings.model!r} cannot be loaded: {self.loaded}",
                        pytrace=False)
        return self.loaded

    # -- measurements ---------------------------------------------------------------------------
    def measure(self, case: Case) -> Measured:
        """The case's run and record; skips the test when the engine could not run the case."""
        done = self._problem_run(case.problem_id)
        if case.condition in done.unsupported:
            pytest.skip(done.unsupported[case.condition])
        for skip in ((case.point, None), (case.point, case.condition)):
            if skip in done.skipped:
                pytest.skip(f"{case.condition} at injection point {case.point} skipped: {done.skipped[skip]}")
        if case.key not in done.records:
            raise LookupError(f"the engine produced no run {case.key}; it produced {sorted(done.records)}")
        return Measured(case, done.problem, done.runs[case.key], dict(done.records[case.key]), done.references)

    def _problem_run(self, problem_id: str) -> _ProblemRun:
        if problem_id not in self._done:
            loaded = self.model()
            try:
                self._done[problem_id] = self._run(loaded, self.problems[problem_id])
            except Exception as error:  # kept: the problem's other tests fail with it, fast
                self._done[problem_id] = error
        done = self._done[problem_id]
        if isinstance(done, BaseException):
            raise RuntimeError(f"the engine run of {problem_id} failed: {done!r}") from done
        return done

    def _run(self, loaded, problem) -> _ProblemRun:
        from measure.engine.engine import Engine, EngineConfig  # torch, as above

        wanted = [case for case in self.cases if case.problem_id == problem.id]
        conditions = [c for c in self.settings.conditions if any(case.condition == c for case in wanted)]
        unsupported = {}
        if "partial" in conditions and not loaded.uses_rotary_positions:
            conditions.remove("partial")
            unsupported["partial"] = (f"partial needs rotary positions; {loaded.name} uses learned absolute "
                                      "positions, whose cached keys cannot be re-rotated")
        labels = {case.point for case in wanted}
        config = EngineConfig.from_settings(self.settings)
        points = tuple(point for point in config.points if point.label in labels) or config.points[:1]
        # verify_partial: the suite checks partial's cache against an independent build (the
        # partial_independent invariant); `measure run` skips those extra prefills.
        config = replace(config, conditions=tuple(dict.fromkeys([*REFERENCE_RUNS, *conditions])),
                         points=points, verify_partial=True)
        result = Engine(loaded, config).run_problem(problem)
        records = problem_records(result, problem, loaded.tokenizer, self.settings.semantic)
        return _ProblemRun(
            problem=problem,
            runs={record_key(run.problem_id, run.condition, run.point): run for run in result.runs},
            records={record["key"]: record for record in records},
            skipped={(label, condition): reason for label, reason, condition in result.skipped},
            references=dict(result.references),
            unsupported=unsupported,
        )


def auto_threads(requested: int, workers: int) -> int:
    """Torch threads for one process: as requested, else cores / workers under xdist, else 0
    (torch's own default)."""
    if requested > 0:
        return requested
    if workers > 1:
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cores = os.cpu_count() or 1
        return max(1, cores // workers)
    return 0
