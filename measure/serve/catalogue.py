"""Problem pairs for live experiments: a picked pair (built-in, augmented or from a file), edited
or not, or two problems typed by the user, as the :class:`~measure.data.pairs.ProblemPair` the
engine consumes.

An update the user leaves empty is generated from A and B as the data layer generates it for
pairs that come without one (:func:`measure.data.pairs.infer_erratum`, or the restatement form);
the noise and repeat controls are always rebuilt for the update actually injected
(:func:`measure.data.updates.build_update_texts`), so noise stays long enough for it.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from pathlib import Path

from measure.data import BUILTIN_SETS, DataError, load_pairs
from measure.data.pairs import ProblemPair, infer_erratum
from measure.data.updates import build_update_texts, restatement
from measure.serve.requests import ExperimentSpec, RequestError

#: Pairs listed per dataset at most (the built-in set has 182); augmented sets are generated to it.
PAIR_LIST_LIMIT = 200
#: Datasets generated from a data folder: the math ones through the augmentation generator.
FOLDER_DATASETS = ("mawps", "svamp", "gsm8k", "fairytaleqa", "nq_open")
LIVE_ID = "live"
_NUMBER = re.compile(r"(?<![\w.])\d+(?:,\d{3})*(?:\.\d+)?(?![\w]|\.\d)")


class PairCatalogue:
    """The datasets a user can pick pairs from, each loaded once on first use."""

    def __init__(self, data_dir: str | None = None, pair_files: tuple[str, ...] = ()):
        self.data_dir = data_dir
        self.files = {Path(path).name: str(path) for path in pair_files}
        self._loaded: dict[str, list[ProblemPair]] = {}
        self._lock = threading.Lock()

    def datasets(self) -> list[dict]:
        """Every dataset name with whether it can be loaded here and, if not, why."""
        out = [{"name": name, "available": True, "note": "the project's own pairs"
                if name == "builtin" else "built-in pairs the embedded model solves uninterrupted"}
               for name in BUILTIN_SETS]
        for name in FOLDER_DATASETS:
            if self.data_dir is None:
                out.append({"name": name, "available": False, "note": "start `measure serve` with --data-dir"})
            else:
                note = "augmented pairs (seed 0)" if name in ("mawps", "svamp", "gsm8k") else "question pairs"
                out.append({"name": name, "available": True, "note": note})
        out.extend({"name": name, "available": True, "note": f"pairs from {path}"} for name, path in self.files.items())
        return out

    def pairs(self, dataset: str) -> list[ProblemPair]:
        known = {entry["name"]: entry for entry in self.datasets()}
        if dataset not in known:
            raise RequestError("dataset", f"unknown dataset {dataset[:40]!r}; choose one of {', '.join(known)}")
        if not known[dataset]["available"]:
            raise RequestError("dataset", f"{dataset} is not available: {known[dataset]['note']}")
        with self._lock:
            if dataset not in self._loaded:
                source = self.files.get(dataset, dataset)
                try:
                    self._loaded[dataset] = load_pairs(source, self.data_dir, limit=PAIR_LIST_LIMIT)
                except DataError as error:
                    raise RequestError("dataset", str(error)) from None
            return self._loaded[dataset]

    def pair(self, dataset: str, pair_id: str) -> ProblemPair:
        for pair in self.pairs(dataset):
            if pair.id == pair_id:
                return pair
        raise RequestError("pair_id", f"no pair {pair_id[:40]!r} in {dataset}")


def pair_summary(pair: ProblemPair) -> dict:
    """What the page shows of a pair and fills its form with."""
    return {"id": pair.id, "kind": pair.kind, "variation_type": pair.variation_type,
            "question_a": pair.question_a, "question_b": pair.question_b, "context": pair.context,
            "erratum": pair.erratum, "restatement": pair.restatement}


def infer_variation_type(kind: str, question_a: str, question_b: str) -> str | None:
    """A label for a typed pair: None for identical problems, else what changed."""
    if question_a == question_b:
        return None
    if kind == "qa":
        return "question_switch"
    numbers_a, numbers_b = _NUMBER.findall(question_a), _NUMBER.findall(question_b)
    if len(numbers_a) == len(numbers_b):
        changed = sum(a != b for a, b in zip(numbers_a, numbers_b))
        if changed:
            return "single_number" if changed == 1 else "multi_number"
    if question_b.startswith(question_a.rstrip("?. ")):
        return "added_step"
    return "question_switch"


def generated_update(kind: str, question_a: str, question_b: str, form: str = "erratum") -> str:
    """The update a pair without one gets: an erratum naming what changed, or B restated."""
    if form == "restatement":
        return restatement(question_b)
    return infer_erratum(question_a, question_b, infer_variation_type(kind, question_a, question_b))


def build_pair(spec: ExperimentSpec, catalogue: PairCatalogue) -> tuple[ProblemPair, str]:
    """The pair to run, with the update it injects always in ``erratum`` (the engine then runs
    with update form "erratum"), and where that update came from."""
    base = catalogue.pair(spec.dataset, spec.pair_id) if spec.pair_id else None
    kind = spec.kind or (base.kind if base else "math")
    question_a = spec.question_a or (base.question_a if base else "")
    question_b = spec.question_b or (base.question_b if base else question_a)
    context = spec.context if spec.context is not None else (base.context if base else None)
    if base is not None and (kind, question_a, question_b, context) == (base.kind, base.question_a, base.question_b,
                                                                        base.context):
        pair = base
    else:
        variation = infer_variation_type(kind, question_a, question_b)
        pair = ProblemPair(
            id=LIVE_ID, source="live", kind=kind, variation_type=variation,
            question_a=question_a, question_b=question_b,
            answer_a=base.answer_a if base else "", answer_b=base.answer_b if base else "",
            answers_a=base.answers_a if base else (), answers_b=base.answers_b if base else (),
            equation_a=None, equation_b=None, context=context,
            erratum="", restatement="", repeat="", noise="", metadata={"edited_from": base.id} if base else {},
        )
    own_updates = {base.erratum: "erratum", base.restatement: "restatement"} if pair is base else {}
    if spec.update and spec.update in own_updates:
        update, source = spec.update, f"the pair's {own_updates[spec.update]}"
    elif spec.update:
        update, source = spec.update, "typed"
    elif pair is base:
        update, source = getattr(base, spec.update_form), f"the pair's {spec.update_form}"
    else:
        update, source = generated_update(kind, question_a, question_b, spec.update_form), f"generated {spec.update_form}"
    texts = build_update_texts(question_a, question_b, update, pair.id)
    pair = dataclasses.replace(pair, erratum=update, restatement=texts.restatement, repeat=texts.repeat,
                               noise=pair.noise if pair is base and update in (base.erratum, base.restatement) else texts.noise)
    return pair, source
