"""Measurement cases: condition x injection point x problem, as pytest parameters.

A test that takes the ``measure_case`` fixture is parametrized over every case. Ids read
``<condition>-<point>-<problem>`` (``injection-t6-builtin_03``), or ``<condition>-<problem>`` for
the once-per-problem reference runs (``oracle-builtin_03``), so ``-k injection``, ``-k t6`` and
``-k builtin_03`` select what they say. Each case also carries keywords for its variation type
(``single_number``, ``control`` for an identical pair, ...), its dataset and its problem kind, so
``-k control`` or ``-k "injection and multi_number"`` work too, and an ``xdist_group`` mark
named after its problem, so one worker runs all of a problem's cases (see the plugin for --dist).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from measure.engine.results import REFERENCE_RUNS
from measure.records.samples import record_key
from measure.settings import CONTROL


@dataclass(frozen=True)
class Case:
    problem_id: str
    condition: str
    point: str  # an injection point label ("t6", "f0.3"), or "-" for ignore and oracle
    variation_type: str | None
    dataset: str
    kind: str

    @property
    def id(self) -> str:
        if self.point == "-":
            return f"{self.condition}-{self.problem_id}"
        return f"{self.condition}-{self.point}-{self.problem_id}"

    @property
    def key(self) -> str:
        return record_key(self.problem_id, self.condition, self.point)

    @property
    def variation(self) -> str:
        return CONTROL if self.variation_type is None else self.variation_type

    @property
    def keywords(self) -> set[str]:
        return {self.condition, self.variation, self.dataset, self.kind, self.problem_id,
                self.point if self.point != "-" else "reference"}


def dataset_keyword(dataset: str) -> str:
    return Path(dataset).stem if dataset.endswith(".jsonl") else dataset


def build_cases(problems: list, conditions, point_labels, dataset: str) -> list[Case]:
    """Every case, problem-major: a problem's cases are adjacent, references first. A strategy that
    needs a chain (A -> B -> C) has no case on a problem without one: there is nothing to measure."""
    from measure.engine.conditions import CHAIN_CONDITIONS  # torch: only once measurement tests are collected

    cases, dataset = [], dataset_keyword(dataset)
    for problem in problems:
        for condition in conditions:
            if condition in CHAIN_CONDITIONS and getattr(problem, "chain", None) is None:
                continue
            points = ["-"] if condition in REFERENCE_RUNS else list(point_labels)
            for point in points:
                cases.append(Case(problem.id, condition, point, problem.variation_type, dataset, problem.kind))
    return cases
