"""Fixtures for the report tests: real records from a tiny random model, made once per session.

``records_file`` runs the engine on 3 built-in problems (tiny llama, 24 tokens, points t4 and
f0.5; ~10 s on a laptop CPU) and writes ``samples.jsonl``; ``report_dir`` writes the reports for
those records once. Tests that change records work on deep copies (:func:`fresh_records`).
"""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest

from measure.records.record import Record
from measure.records.store import RecordStore, read_store

N_PROBLEMS = 3
TEST_RESAMPLES = 200  # bootstrap resamples in tests: enough for a CI, fast on 2 cores
PROVENANCE = {"run_name": "report-test", "model": "tiny:llama", "dataset": "builtin", "git": "0" * 40,
              "settings": {"max_new_tokens": 24, "points": ["4", "0.5"], "seed": 0}}


def _pairs():
    try:
        from measure.data import load_pairs

        return list(load_pairs("builtin", limit=N_PROBLEMS))
    except Exception:  # the loader is being finished elsewhere: build pairs by hand
        from measure.data.pairs import ProblemPair

        pairs = []
        for i, (a, b, ans_a, ans_b) in enumerate([(5, 7, "12", "14"), (3, 4, "10", "11"), (6, 2, "13", "9")]):
            qa = f"Sarah has {a} apples. She buys 7 more apples. How many apples does she have now?"
            qb = f"Sarah has {b} apples. She buys 7 more apples. How many apples does she have now?"
            pairs.append(ProblemPair(
                id=f"hand_{i}", source="builtin", kind="math", variation_type="single_number",
                question_a=qa, question_b=qb, answer_a=ans_a, answer_b=ans_b, answers_a=(ans_a,), answers_b=(ans_b,),
                equation_a=None, equation_b=None, context=None, erratum=f"Correction: Sarah has {b} apples, not {a}.",
                restatement=f"Update: the problem is now: {qb}", repeat=f"To restate the problem: {qa}",
                noise="The weather is sunny today and the birds sing in the tall green trees.", metadata={}))
        return pairs


def make_records_file(path) -> list[tuple[str, str]]:
    """Write real records of a tiny model into ``path``; return the engine's skipped points."""
    from measure.engine.engine import Engine, EngineConfig
    from measure.model.load import load_model
    from measure.records.samples import problem_records

    loaded = load_model("tiny:llama")
    # With the recompute checks, as `measure run` makes them by default: the report shows them.
    engine = Engine(loaded, EngineConfig(max_new_tokens=24, points=("4", "0.5"), verify_recompute=True))
    store = RecordStore(path)
    skipped = []
    for pair in _pairs():
        result = engine.run_problem(pair)
        skipped += [(pair.id, *s) for s in result.skipped]
        for record in problem_records(result, pair, loaded.tokenizer, semantic=False):
            store.append(record)
    return skipped


@pytest.fixture(scope="session")
def records_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("records") / "samples.jsonl"
    make_records_file(path)
    return path


@pytest.fixture(scope="session")
def session_records(records_file) -> list[Record]:
    records, warnings = read_store(records_file, typed=True)
    assert not warnings and records
    return records


@pytest.fixture
def fresh_records(session_records) -> list[Record]:
    return copy.deepcopy(session_records)


def add_attention(records: list[Record], layers: int = 3, seed: int = 0) -> list[Record]:
    """Give runs with a change a synthetic ``attention_layers_tokens`` grid (layers, n_after)."""
    rng = np.random.default_rng(seed)
    for r in records:
        if r.condition in ("ignore", "oracle"):
            continue
        n_after = len(r.tokens.generated) - r.t0
        grid = {span: rng.uniform(0, 0.5, size=(layers, n_after)).tolist()
                for span in ("prompt", "prefix", "inserted", "after")}
        r.arrays.attention_layers_tokens = grid
    return records


XSS = "<script>alert(1)</script>"


def add_hostile(records: list[Record]) -> list[Record]:
    """Put markup into every data string a report shows: texts, ids, answers, pieces."""
    for r in records[:4]:
        r.texts = r.texts.model_copy(update={k: f"{getattr(r.texts, k)} {XSS}"
                                             for k in ("prompt", "inserted", "generated", "continuation")})
        r.texts.generated_pieces = [XSS] * len(r.tokens.generated)
        r.variation_type = r.variation_type and f"{r.variation_type}{XSS}"
        r.metrics["outcome"] = XSS
    injection = next(r for r in records if r.condition == "injection")
    injection.texts.inserted = f"Correction: {XSS}"
    return records


@pytest.fixture(scope="session")
def report_dir(tmp_path_factory, session_records, records_file):
    """A run directory with samples.jsonl, metrics.json and report.html (attention included)."""
    from measure.report.summary import write_reports

    out = tmp_path_factory.mktemp("run")
    records = add_attention(copy.deepcopy(session_records))
    store = RecordStore(out / "samples.jsonl")
    for r in records:
        store.append(r)
    write_reports(out, records, PROVENANCE, [{"problem_id": "x", "point": "f0.9", "reason": "ignore run too short"}],
                  n_resamples=TEST_RESAMPLES)
    return out


def strict_json(path):
    """Load JSON refusing NaN/Infinity (which json.loads accepts by default)."""
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name} in {path}")

    return json.loads(open(path, encoding="utf-8").read(), parse_constant=refuse)


def copy_run(src, dst):
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="session")
def helpers():
    """The helpers above for test modules (no imports from conftest across test directories)."""
    from types import SimpleNamespace

    return SimpleNamespace(add_attention=add_attention, add_hostile=add_hostile, strict_json=strict_json,
                           copy_run=copy_run, XSS=XSS, PROVENANCE=PROVENANCE, RESAMPLES=TEST_RESAMPLES)
