"""The typed sample record: every field of a line of ``samples.jsonl``, defined once.

A record is one measured run (problem x condition x point). :func:`measure.records.samples.run_record`
builds it; the readers validate each line against :class:`Record` as they read it, so a corrupt
or foreign line is one error naming the file, the line and the field (:func:`validate_line`).
The JSON Schema of a record (:func:`json_schema`) is checked in as ``docs/record.schema.json`` so
that other tools can read runs.

Layouts (``schema``):

- 1: every record carries its per-token arrays inline (``arrays``);
- 2: ``measure run`` stores the per-token arrays in a columnar file per problem group
  (:mod:`measure.records.columnar`), named by ``arrays_file``; a record written elsewhere (the
  pytest plugin) may still carry them inline. ``measure upgrade RUN`` converts layout 1 to 2.

Records written by measurement tests of the pytest plugin may carry only their identity and
metrics, and fields of their own: unknown fields are kept (``extra="allow"``).
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

#: The layout this version of measure writes (see the module docstring).
SCHEMA_VERSION = 2
#: Layouts this version reads.
READABLE_SCHEMAS = (1, 2)

#: A per-token value; None where it is not finite (JSON has no NaN).
Value = float | None
#: One scalar of a record's flat metrics row.
Scalar = float | int | bool | str | None


class RecordError(ValueError):
    """A stored line is not a record this version reads; the message names file, line and field."""


class _Model(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")


class Tokens(_Model):
    prompt: list[int]
    """Token ids of the prompt (problem A, or B for oracle and flush), chat template included."""
    inserted: list[int]
    """Token ids injected at t0 (the update, noise or restatement); empty for references."""
    generated: list[int]
    """Token ids the run generated, the shared prefix y[:t0] included."""


class Texts(_Model):
    prompt: str
    """The prompt as text."""
    inserted: str
    """The injected text."""
    generated: str
    """Every generated token decoded."""
    continuation: str
    """The text generated after t0."""
    generated_pieces: list[str]
    """Each generated token decoded on its own, in order."""


class Arrays(BaseModel):
    """Per-token curves of a run, over its generated positions (``n_generated``) unless said otherwise.
    ``measure run`` writes every group; a record made elsewhere (a test) may carry only some. An
    array not declared here is kept unchecked (a metric added since: declare it here)."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="allow")

    logprob_run: list[Value] | None = None
    """Log-probability of each generated token under the run itself."""
    logprob_ref: dict[str, list[Value]] = Field(default_factory=dict)
    """Per reference (ignore, oracle, matched): log-probability of each generated token under it."""
    kl: dict[str, list[Value]] = Field(default_factory=dict)
    """Per reference: KL(run || reference) of the next-token distributions at each position."""
    js: dict[str, list[Value]] = Field(default_factory=dict)
    """Per reference: Jensen-Shannon divergence of the next-token distributions at each position."""
    hidden_cosine_layers: dict[str, list[Value]] = Field(default_factory=dict)
    """Per reference: hidden-state cosine to the reference per layer (embeddings first), averaged after t0."""
    hidden_cosine: dict[str, list[Value]] = Field(default_factory=dict)
    """Per reference: hidden-state cosine to the reference at each position, averaged over layers."""
    kl_oracle_ignore: list[Value] | None = None
    """KL(P_oracle || P_ignore) per position on the run's own tokens (observability); absent in older records."""
    attention_layers_tokens: dict[str, list[list[Value]]] | None = None
    """Per span: attention mass on it, (layers, tokens after t0), heads averaged; None without attention."""
    attention_layers_heads: dict[str, list[list[Value]]] | None = None
    """Per span: attention mass on it, (layers, heads), positions after t0 averaged; None without attention."""


class Update(_Model):
    """One update of a strategy run, in the order the run planned them."""

    index: int
    """Its position in the run's schedule (0: the update at the injection point)."""
    t: int
    """Generated tokens before it was (or would have been) delivered."""
    stream_start: int | None = None
    """Where its tokens start in the run's token stream; None when it was not delivered."""
    n_tokens: int
    """How many tokens the update's text has."""
    text: str
    """The update's text."""
    delivered: bool
    """Whether the run reached it before it ended."""


class TestOutcome(BaseModel):
    """Pytest plugin: the measurement test that wrote a record."""

    __test__ = False  # not a pytest test class despite its name
    model_config = ConfigDict(use_attribute_docstrings=True, extra="allow")

    nodeid: str | None = None
    """The test's node id, without the xdist group suffix."""
    outcome: str | None = None
    """passed, failed, skipped or unknown."""
    failed_invariants: list[str] = Field(default_factory=list)
    """Names of the record's invariants that did not hold."""
    worker: str | None = None
    """The pytest process (xdist worker id, or main) that ran the test."""


class InvariantCheck(BaseModel):
    """Pytest plugin: one invariant checked on a record's run."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="allow")

    value: float | None = None
    """The measured value (None when it could not be measured)."""
    bound: float | None = None
    """The bound it is held to."""
    relation: str | None = None
    """How value must relate to bound: ``<`` or ``==``."""
    ok: bool = True
    """Whether it held."""
    what: str | None = None
    """What it checks, in words."""


class Record(BaseModel):
    """One measured run: problem x condition x injection point."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="allow")

    schema_: int = Field(1, alias="schema", ge=1)
    """Layout version of the record (1: arrays inline; 2: arrays in the columnar file ``arrays_file``)."""
    key: str
    """Unique key ``<problem>/<condition>/<point>`` (a resumed run may rewrite one; the last line wins)."""
    problem_id: str
    """Identifier of the problem pair."""
    condition: str
    """Experimental condition (ignore, oracle, injection, flush, partial, noise, repeat, or a strategy)."""
    point: str
    """Injection point label (t8, f0.5, ...); ``-`` for the reference runs ignore and oracle."""
    t0: int | None = None
    """Generated tokens before the change (0 for the reference runs)."""
    source: str | None = None
    """Dataset the problem comes from."""
    kind: str | None = None
    """Problem kind: math or qa."""
    variation_type: str | None = None
    """How B differs from A (single_number, multi_number, added_step, ...); None for identical controls."""
    answer_a: str | None = None
    """Canonical answer of problem A."""
    answer_b: str | None = None
    """Canonical answer of problem B."""
    stop_reason: str | None = None
    """Why generation stopped: eos or max_new_tokens."""
    tokens: Tokens | None = None
    """Token ids of the run."""
    texts: Texts | None = None
    """Texts of the run."""
    spans: dict[str, tuple[int, int]] | None = None
    """Per span name (prompt, prefix, inserted, after): its [start, end) in the run's token stream."""
    arrays: Arrays | None = None
    """The per-token curves, when stored inline (layout 1, or a record not written by ``measure run``)."""
    arrays_file: str | None = None
    """Columnar file holding this record's per-token curves, relative to the run folder (layout 2)."""
    metrics: dict[str, Scalar] = Field(default_factory=dict)
    """The flat per-run metrics row (names and definitions in docs/METHOD.md)."""
    checks: dict[str, float | None] = Field(default_factory=dict)
    """Invariant checks made while producing the run (cache vs recompute differences)."""
    schedule: list[Update] | None = None
    """A strategy run's updates in order; None for other conditions."""
    notes_before_change: bool | None = None
    """The notes flag: text before the change already holds an affected quantity (measure.metrics.notes); None: unknown."""
    final_problem: str | None = None
    """The problem a strategy run ends with (a, b or c); None for other conditions."""
    answer_final: str | None = None
    """Canonical answer of the problem a strategy run ends with."""
    worker: str | None = None
    """The worker that measured the run (``<executor>/<host>/<worker id>``): where, not what."""
    test: TestOutcome | None = None
    """Pytest plugin: the measurement test that wrote the record."""
    invariants: dict[str, InvariantCheck] | None = None
    """Pytest plugin: the test's invariants, by name."""


def _first_error(error: ValidationError) -> str:
    detail = error.errors(include_url=False)[0]
    field = ".".join(str(part) for part in detail["loc"]) or "(record)"
    return f"field {field}: {detail['msg']}"


def check_schema(record: dict, where: str) -> None:
    """RecordError when ``record`` is in a layout this version cannot read."""
    schema = record.get("schema", 1)
    if isinstance(schema, int) and not isinstance(schema, bool) and schema > SCHEMA_VERSION:
        raise RecordError(f"{where}: record schema {schema} is newer than this version of measure reads "
                          f"(schemas {', '.join(map(str, READABLE_SCHEMAS))}): upgrade measure")


def validate_record(record: dict, where: str) -> Record:
    """``record`` (a decoded line) as a :class:`Record`, or RecordError naming ``where`` and the field."""
    check_schema(record, where)
    try:
        return Record.model_validate(record)
    except ValidationError as error:
        raise RecordError(f"{where}: not a measure record: {_first_error(error)}") from None


def validate_line(line: bytes | str, path: str | Path, number: int) -> Record:
    """One line of a store file as a :class:`Record`; RecordError names file, line and field."""
    where = f"{path}:{number}"
    try:
        decoded = json.loads(line)
    except ValueError as error:
        raise RecordError(f"{where}: not JSON ({error})") from None
    if not isinstance(decoded, dict):
        raise RecordError(f"{where}: not a measure record: a JSON {type(decoded).__name__}, not an object")
    return validate_record(decoded, where)


def as_dict(record: Record) -> dict:
    """The record as the dict a line of samples.jsonl holds (fields left unset are left out)."""
    return record.model_dump(mode="json", by_alias=True, exclude_unset=True)


def as_record(record: Record | dict, where: str = "record") -> Record:
    """``record`` as a :class:`Record`: a Record as it is; a dict (a stored line) validated, a
    RecordError naming ``where`` and the field when it is not a record."""
    return record if isinstance(record, Record) else validate_record(record, where)


def as_records(records: list[Record] | list[dict]) -> list[Record]:
    """``records`` typed (:func:`as_record`); a dict that is no record is named by its position."""
    return [as_record(record, f"record {i + 1}") for i, record in enumerate(records)]


def with_metrics(record: Record, metrics: dict) -> Record:
    """A copy of ``record`` with the metrics row ``metrics``, its other values shared (not copied),
    as is its set of given fields: pydantic's model_copy copies that set for each copy (2 KB a
    record, 80 MB for a study's 37,000 records)."""
    given = record.model_fields_set
    return Record.model_construct(_fields_set=given if "metrics" in given else given | {"metrics"},
                                  **{**dict(record), "metrics": metrics})


def json_schema() -> dict:
    """The JSON Schema of a record (checked in as docs/record.schema.json)."""
    schema = Record.model_json_schema(by_alias=True)
    schema["title"] = f"measure sample record (schema {SCHEMA_VERSION})"
    return schema


def schema_text() -> str:
    """docs/record.schema.json as written: ``python -m measure.records.record > docs/record.schema.json``."""
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(schema_text(), end="")
