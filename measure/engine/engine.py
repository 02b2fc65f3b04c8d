"""Run one problem pair through every condition at every injection point.

Per problem: the ignore run (prompt A) and the oracle run (prompt B) are generated once; at each
injection point the ignore run's cache is forked (a cropped copy) and every condition continues
from it, all rows of a point decoding together in one batch. A run's references (P_ignore,
P_oracle, P_matched) are rows of the same forwards as the run: they start from their own caches
and are fed the run's tokens as it chooses them (measure.engine.decode), so every per-token comparison
is made while the run decodes and no stream is run through the model a second time (but for the
optional recompute check, ``verify_recompute``).

Injection strategies (several updates per run, measure.engine.conditions.Scheduled) decode in stages:
each run goes until its next update, then every run waiting for an update gets it appended to
its cache (and to its P_matched reference's) and all of them resume in one batch.

What this module does not know: where problems come from, how per-run arrays become metrics,
and how anything is stored or reported.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import torch

from measure.data.updates import retraction_text
from measure.engine import cache as kv
from measure.engine import partial_check
from measure.engine.conditions import (
    ChainFork,
    Condition,
    ConditionStart,
    Delivery,
    ForkPoint,
    NotApplicable,
    ScheduledStart,
    build_conditions,
)
from measure.engine.decode import (
    Decoded,
    DecodeRow,
    Follower,
    StepValues,
    Timings,
    cross_name,
    decode_rows,
    merge_stages,
    prefill,
)
from measure.engine.events import Listener, RunEvent, TokenEvent
from measure.engine.results import REFERENCES, RunResult
from measure.engine.scoring import Stream, chosen_logprobs, score_streams
from measure.metrics.divergence import kl_divergence, log_ratio
from measure.model.load import LoadedModel
from measure.points import InjectionPoint, PointNotReached, parse_points
from measure.prompts import PromptFormat, inserted_ids, length_matched_ids
from measure.settings import DEFAULTS, RunSettings, check_bounds

log = logging.getLogger(__name__)
UPDATE_FORMS = ("erratum", "restatement")


@dataclass
class EngineConfig:
    """What the engine measures. Every default is the run's (measure.settings, stated once there);
    :meth:`from_settings` takes a whole RunSettings."""

    max_new_tokens: int = DEFAULTS.max_new_tokens
    points: tuple = tuple(DEFAULTS.points)
    conditions: tuple[str, ...] = tuple(DEFAULTS.conditions)
    prompt: PromptFormat = field(default_factory=PromptFormat)
    update_form: str = DEFAULTS.update_form
    seed: int = DEFAULTS.seed
    temperature: float = DEFAULTS.temperature  # 0: greedy (the seed is then irrelevant to the tokens)
    partial_recompute_last: int = DEFAULTS.partial_recompute_last
    update_gap: int = DEFAULTS.update_gap
    gradual_pieces: int = DEFAULTS.gradual_pieces
    batch_size: int = DEFAULTS.batch_size
    hidden_states: bool = DEFAULTS.hidden_states
    attention: bool = DEFAULTS.attention
    verify_recompute: bool = DEFAULTS.verify_recompute  # also compare each exact stream with a cache-free recompute
    # also compare each partial run's starting cache with one built independently of the cache
    # edits (measure.engine.partial_check): two extra prefills per partial run
    verify_partial: bool = False
    score_positions: int = 4096  # token positions per recompute-check batch (bounds logits memory)

    def __post_init__(self) -> None:
        check_bounds(self, name=str)  # one statement of each least value, the conditions' included
        self.points = check_config(self.max_new_tokens, self.points, self.conditions, self.update_form)

    @classmethod
    def from_settings(cls, settings: RunSettings) -> EngineConfig:
        return cls(
            max_new_tokens=settings.max_new_tokens, points=settings.injection_points(),
            conditions=tuple(settings.conditions),
            prompt=PromptFormat(settings.prompt_style, settings.system_prompt, settings.qa_system_prompt),
            update_form=settings.update_form, seed=settings.seed, temperature=settings.temperature,
            partial_recompute_last=settings.partial_recompute_last, update_gap=settings.update_gap,
            gradual_pieces=settings.gradual_pieces, batch_size=settings.batch_size,
            hidden_states=settings.hidden_states, attention=settings.attention,
            verify_recompute=settings.verify_recompute,
        )


def check_config(max_new_tokens: int, points, conditions, update_form: str,
                 name: Callable[[str], str] = str) -> tuple[InjectionPoint, ...]:
    """Check the settings an :class:`EngineConfig` cannot run without; return the parsed points.

    Raises ValueError naming each setting as ``name(field)``: the field itself by default, the
    command-line flag from :func:`measure.run.preflight.validate`, which reuses these checks so a
    bad setting fails before any model is loaded.
    """
    check_bounds(SimpleNamespace(max_new_tokens=max_new_tokens), name)
    build_conditions(conditions)  # validates the names
    try:
        parsed = (tuple(points) if points and all(hasattr(p, "resolve_in") for p in points)
                  else parse_points(points))
    except ValueError as error:
        raise ValueError(f"{name('points')}: {error}") from None
    for point in parsed:
        if point.min_tokens > max_new_tokens:
            raise ValueError(f"{name('points')}: injection point {point.label} lies at or beyond the generation "
                             f"length ({name('max_new_tokens')} {max_new_tokens})")
    if update_form not in UPDATE_FORMS:
        raise ValueError(f"{name('update_form')} {update_form!r}: unknown update form; "
                         f"choose one of {', '.join(UPDATE_FORMS)}")
    return parsed


#: P_oracle against P_ignore on a run's own tokens: KL(P_oracle || P_ignore) per token is how much
#: the problem (B vs A) still matters given them, the expected increment of r(t) under P_oracle.
ORACLE_IGNORE = ("oracle", "ignore")


def _kl_oracle_ignore(references: dict) -> np.ndarray | None:
    """KL(P_oracle || P_ignore) per decoded token, or None when the row did not compare them."""
    pair = references.get(cross_name(*ORACLE_IGNORE))
    return None if pair is None else np.asarray(pair["kl"], dtype=np.float32)


@dataclass
class ProblemResult:
    problem_id: str
    runs: list[RunResult]
    # (point label, why nothing ran, the condition skipped or None for every condition at the point)
    skipped: list[tuple[str, str, str | None]]
    positions_evaluated: int = 0  # positions through the model for this call of run_problems (on its first result)
    references: dict[str, RunResult] = field(default_factory=dict)  # ignore and oracle, always


@dataclass(frozen=True)
class Skipped:
    """Why a point, or one condition at it, did not run: (point label, reason, condition or None)."""

    why: tuple[str, str, str | None]


def row_generator(seed: int, *parts: str) -> torch.Generator:
    """A generator seeded from the run's identity, so batching never changes what it samples."""
    digest = hashlib.sha256("/".join((str(seed), *parts)).encode()).digest()
    generator = torch.Generator()
    generator.manual_seed(int.from_bytes(digest[:8], "little"))
    return generator


class Engine:
    def __init__(self, loaded: LoadedModel, config: EngineConfig):
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.config = config
        self.conditions: list[Condition] = build_conditions(config.conditions, config)
        for condition in self.conditions:
            condition.check_supported(loaded.uses_rotary_positions)
        self.rotary = kv.rotary_embedding_of(self.model)
        self.pad_id = self.tokenizer.pad_token_id
        self.positions_evaluated = 0  # every token position run through the model, for throughput
        self.timings = Timings()  # seconds per part of the work (measure bench prints them)
        self.listener: Listener | None = None  # set for the duration of run_problems(..., listener=)
        self.eos_ids = {self.tokenizer.eos_token_id}
        generation_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        if generation_eos is not None:
            self.eos_ids |= set(generation_eos if isinstance(generation_eos, list) else [generation_eos])

    # -- decoding -----------------------------------------------------------------------------
    def _row(self, problem_id, name, label, cache, feed, budget, offset=0, stage=0, **options) -> DecodeRow:
        # A run decoded in stages (a strategy resumes after each update) draws each stage from its
        # own stream: the run's first stream again would repeat the first stage's random numbers.
        key = (problem_id, name, label) if stage == 0 else (problem_id, name, label, f"stage{stage}")
        generator = row_generator(self.config.seed, *key) if self.config.temperature > 0 else None
        on_token = None
        if self.listener is not None:
            listener = self.listener

            def on_token(index: int, token: int, step: StepValues | None) -> None:
                kl = ratio = None
                if step is not None:
                    kl = dict(step.kl)
                    # As RunResult.log_ratio computes it, from the same float32 log-probabilities.
                    ratio = float(log_ratio(np.float32(step.ref_logprob["oracle"]),
                                            np.float32(step.ref_logprob["ignore"])))
                listener(TokenEvent(problem_id, name, label, offset + index, token, self.tokenizer.decode([token]),
                                    log_ratio=ratio, kl=kl))

        if {"oracle", "ignore"} <= set(options.get("references") or {}):
            options.setdefault("cross_references", (ORACLE_IGNORE,))
        return DecodeRow(cache, feed, budget, generator, on_token=on_token, hidden_states=self.config.hidden_states,
                         **options)

    def _decode(self, rows: list[DecodeRow]) -> list[Decoded]:
        decoded = decode_rows(self.model, rows, self.eos_ids, self.pad_id, temperature=self.config.temperature or 1.0,
                              batch_size=self.config.batch_size, timings=self.timings)
        self.positions_evaluated += sum(d.positions_evaluated for d in decoded)
        return decoded

    def _prefill(self, feed: list[int]):
        self.positions_evaluated += len(feed)
        return prefill(self.model, None, feed)[1]

    def _attention(self, spans):
        """The spans to capture attention onto, or None when attention is not measured."""
        return spans if self.config.attention else None

    def _text(self, ids) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _pieces(self, ids) -> list[str]:
        return [self.tokenizer.decode([token]) for token in ids]

    # -- problems ------------------------------------------------------------------------------
    def run_problem(self, problem, listener: Listener | None = None) -> ProblemResult:
        return self.run_problems([problem], listener)[0]

    def run_problems(self, problems, listener: Listener | None = None) -> list[ProblemResult]:
        """Every condition of every problem; rows of all problems and points decode together.

        ``listener`` receives a :class:`~measure.engine.events.TokenEvent` per generated token (with its
        KL to each reference and r(t)) and a :class:`~measure.engine.events.RunEvent` per finished run
        (measure.engine.events).
        """
        self.listener = listener
        try:
            return self._run_problems(problems)
        finally:
            self.listener = None

    def _announce(self, runs) -> None:
        if self.listener is not None:
            for run in runs:
                self.listener(RunEvent(run))

    def _run_problems(self, problems) -> list[ProblemResult]:
        start_positions = self.positions_evaluated
        prompt = self.config.prompt
        prompts = [(prompt.prompt_ids(self.tokenizer, p.question_a, p.context, getattr(p, "kind", "math")),
                    prompt.prompt_ids(self.tokenizer, p.question_b, p.context, getattr(p, "kind", "math"))) for p in problems]
        budget = self.config.max_new_tokens
        points = list(enumerate(self.config.points))
        # Points at a token count fork as soon as the ignore run has t0 + 1 tokens: the ignore and
        # oracle runs stop there (stage 1), and go on in the same batches as those forks (stage 2),
        # instead of decoding alone, a few rows a step, for their whole length first.
        fixed = {k: t0 for k, point in points if (t0 := getattr(point, "fixed_t0", None)) is not None}
        first_stage = min(budget, max(fixed.values()) + 1) if fixed and self.conditions else budget
        early = [(k, point) for k, point in points if k in fixed and first_stage < budget]
        late = [(k, point) for k, point in points if (k, point) not in early]
        rows = []
        for problem, (prompt_a, prompt_b) in zip(problems, prompts):
            # Each run follows the other prompt's stream; its own reference is itself (the same stream).
            references = {"ignore": Follower(None, prompt_a), "oracle": Follower(None, prompt_b)}
            references["matched"] = references["oracle"]
            for name, own in (("ignore", prompt_a), ("oracle", prompt_b)):
                rows.append(self._row(problem.id, name, "-", None, own, first_stage, references=references,
                                      attention_spans=self._attention(self._reference_spans(own, budget)),
                                      keep_cache=name == "ignore" or first_stage < budget,
                                      keep_logprobs=self.config.verify_recompute))  # ignore_self_kl, oracle_self_kl
        decoded = self._decode(rows)

        forks: dict[tuple[int, int], list] = {}  # (problem, point) -> its forked runs, or why none ran
        forks.update(self._forks_at(problems, prompts, decoded[0::2], early))
        # rows and decoded alternate ignore, oracle per problem (in the order of prompts' pairs).
        more = [self._continued_row(problems[i // 2], ("ignore", "oracle")[i % 2], prompts[i // 2][i % 2], rows[i],
                                    decoded[i], budget) for i in range(len(rows))]
        early_forked = [entry for k in sorted(forks) for entry in forks[k] if not isinstance(entry, Skipped)]
        continued = self._decode([row for row in more if row is not None]
                                 + [self._forked_row(problem, condition.name, fork, state, budget)
                                    for problem, fork, condition, state in early_forked])
        after_first = iter(continued[:sum(row is not None for row in more)])
        decoded = [stage if row is None else merge_stages([stage, next(after_first)]) for row, stage in zip(more, decoded)]
        first_decoded = dict(zip(map(id, early_forked), continued[len(continued) - len(early_forked):]))

        ignores, oracles = decoded[0::2], decoded[1::2]
        started = time.perf_counter()
        references = []
        for problem, (prompt_a, prompt_b), ignore, oracle in zip(problems, prompts, ignores, oracles):
            references.append(self._reference_run(problem, "ignore", prompt_a, ignore))
            references.append(self._reference_run(problem, "oracle", prompt_b, oracle))
        started = self.timings.add("results", started)
        if self.config.verify_recompute:
            streams = [Stream(None, run.prompt_ids + run.generated_ids[:-1], run.n_generated) for run in references]
            for run, decoded_run, fresh in zip(references, decoded, self._recompute(streams)):
                run.checks.update(self._recompute_checks(decoded_run, fresh, full=False))
        self._announce(references)

        forks.update(self._forks_at(problems, prompts, ignores, late))
        late_forked = [entry for k in sorted(forks) for entry in forks[k]
                       if not isinstance(entry, Skipped) and id(entry) not in first_decoded]
        first_decoded.update(zip(map(id, late_forked), self._decode(
            [self._forked_row(problem, condition.name, fork, state, budget)
             for problem, fork, condition, state in late_forked])))
        results = []
        forked, decoded = [], []  # (result, problem, fork, condition, state) and its first stage, in order
        for index, problem in enumerate(problems):
            ignore_run, oracle_run = references[2 * index], references[2 * index + 1]
            runs = [run for run in (ignore_run, oracle_run) if run.condition in self.config.conditions]
            result = ProblemResult(problem.id, runs, [], 0, {"ignore": ignore_run, "oracle": oracle_run})
            results.append(result)
            for k, _ in points:
                for entry in forks.get((index, k), []):
                    if isinstance(entry, Skipped):
                        result.skipped.append(entry.why)
                    else:
                        forked.append((result, *entry))
                        decoded.append(first_decoded[id(entry)])
        decoded = self._continue_schedules(forked, decoded, budget)
        started = time.perf_counter()
        runs = [self._forked_run(problem, condition.name, fork, state, after, result.references["ignore"])
                for (result, problem, fork, condition, state), after in zip(forked, decoded)]
        self.timings.add("results", started)
        if self.config.verify_recompute:
            self._verify_forked(forked, decoded, runs)
        if self.config.verify_partial:
            self._verify_partial(forked, runs)
        self._announce(runs)
        for (result, *_), run in zip(forked, runs):
            result.runs.append(run)
        # Throughput is reported for the batch as a whole: rows of all problems share passes.
        results[0].positions_evaluated = self.positions_evaluated - start_positions
        return results

    @staticmethod
    def _reference_spans(own_prompt, budget: int) -> dict[str, tuple[int, int]]:
        p = len(own_prompt)
        return {"prompt": (0, p), "prefix": (p, p), "inserted": (p, p), "after": (p, p + budget)}

    def _continued_row(self, problem, name, own_prompt, row: DecodeRow, stage: Decoded, budget: int) -> DecodeRow | None:
        """Stage 2 of an ignore or oracle run (None when stage 1 ended it): its cache and its
        references' go on from stage 1's, fed its last token, with the same random stream."""
        generated = len(stage.tokens)
        if stage.stop_reason == "eos" or generated >= budget:
            return None
        last = stage.tokens[-1:]
        references = {ref: Follower(stage.reference_caches[ref], last) for ref in ("ignore", "oracle")}
        references["matched"] = references["oracle"]
        continued = self._row(problem.id, name, "-", stage.cache, last, budget - generated, offset=generated,
                              references=references,
                              attention_spans=self._attention(self._reference_spans(own_prompt, budget)),
                              keep_cache=name == "ignore", keep_logprobs=row.keep_logprobs)
        continued.generator = row.generator  # one run, one stream of random numbers
        return continued

    def _forks_at(self, problems, prompts, ignores: list[Decoded], points) -> dict[tuple[int, int], list]:
        """Each problem's forked runs at ``points`` ((index, point) pairs) as (problem, fork,
        condition, start) tuples, or :class:`Skipped` where a point or a condition does not apply."""
        started = time.perf_counter()
        forks: dict[tuple[int, int], list] = {}
        for index, (problem, (prompt_a, prompt_b), ignore) in enumerate(zip(problems, prompts, ignores)):
            for k, point in points:
                entries = forks.setdefault((index, k), [])
                try:
                    t0 = point.resolve_in(self._pieces(ignore.tokens), problem)
                except PointNotReached as reason:  # content never written, or the run ended first
                    entries.append(Skipped((point.label, str(reason), None)))
                    continue
                if self.conditions:
                    fork = self._fork(problem, point, t0, prompt_a, prompt_b, ignore)
                    for condition in self.conditions:
                        try:
                            entries.append((problem, fork, condition, condition.prepare(fork)))
                        except NotApplicable as reason:  # a strategy this problem has no data for
                            entries.append(Skipped((point.label, str(reason), condition.name)))
        self.timings.add("forks", started)
        return forks

    def _fork(self, problem, point, t0, prompt_a, prompt_b, ignore: Decoded) -> ForkPoint:
        shared = ignore.tokens[:t0]
        update_text = getattr(problem, self.config.update_form)
        update_ids = inserted_ids(self.tokenizer, update_text)
        ignore_before_last = kv.crop_copy(ignore.cache, len(prompt_a) + t0 - 1, self.model.config)
        # B + y[:t0-1] is A + y[:t0-1] when the prompts are identical: reuse it (exact controls).
        # Otherwise it is a prefix of the ignore run's P_oracle reference (B, then the ignore
        # run's tokens), whose cache the ignore row kept: no second pass over B.
        oracle_before_last = (ignore_before_last if prompt_b == prompt_a
                              else kv.crop_copy(ignore.reference_caches["oracle"], len(prompt_b) + t0 - 1,
                                                self.model.config))
        chain = None
        if getattr(problem, "chain", None) is not None and any(c.needs_chain for c in self.conditions):
            prompt_c = self.config.prompt.prompt_ids(self.tokenizer, problem.chain.question_c, problem.context,
                                                     getattr(problem, "kind", "math"))
            chain = ChainFork(prompt_c, self._prefill(prompt_c + shared[:-1]),
                              inserted_ids(self.tokenizer, getattr(problem.chain, self.config.update_form)))
        return ForkPoint(
            t0=t0,
            label=point.label,
            prompt_a=prompt_a,
            prompt_b=prompt_b,
            shared=shared,
            ignore_before_last=ignore_before_last,
            oracle_before_last=oracle_before_last,
            update_ids=update_ids,
            noise_ids=length_matched_ids(self.tokenizer, problem.noise, len(update_ids)),
            repeat_ids=inserted_ids(self.tokenizer, problem.repeat),
            model_config=self.model.config,
            rotary_embedding=self.rotary,
            update_pieces=self._pieces(update_ids),
            retraction_ids=inserted_ids(self.tokenizer, retraction_text(problem)),
            chain=chain,
        )

    # -- runs ---------------------------------------------------------------------------------
    @staticmethod
    def _forked_spans(fork: ForkPoint, state: ConditionStart, n: int) -> dict[str, tuple[int, int]]:
        prompt_len = len(state.prompt_ids)
        inserted_end = prompt_len + fork.t0 + len(state.inserted_ids)
        return {"prompt": (0, prompt_len), "prefix": (prompt_len, prompt_len + fork.t0),
                "inserted": (prompt_len + fork.t0, inserted_end), "after": (inserted_end, inserted_end + n)}

    def _forked_row(self, problem, name, fork: ForkPoint, state: ConditionStart, budget: int) -> DecodeRow:
        last = fork.shared[-1:]
        # A strategy's references use the problem it ends with; every other condition's, B.
        final_before_last = getattr(state, "final_before_last", None)
        if final_before_last is None:
            final_before_last = fork.oracle_before_last
        references = {
            "ignore": Follower(fork.ignore_before_last, last),  # P_ignore: A, y[:t0], after
            "oracle": Follower(final_before_last, last),  # P_oracle: B, y[:t0], after
        }
        # P_matched: B, y[:t0], X, after (the oracle reference when nothing is inserted)
        references["matched"] = (Follower(final_before_last, last + state.inserted_ids) if state.inserted_ids
                                 else references["oracle"])
        later = getattr(state, "later", [])
        # A strategy decodes until its next update (measure.engine.engine._continue_schedules).
        n = min(budget - fork.t0, later[0].after) if later else budget - fork.t0
        spans = self._forked_spans(fork, state, n)
        return self._row(problem.id, name, fork.label, state.cache, state.feed, n, offset=fork.t0,
                         references=references, attention_spans=self._attention(spans), keep_cache=bool(later),
                         keep_logprobs=self.config.verify_recompute and state.exact_stream)

    # -- strategies: several updates per run ----------------------------------------------------
    def _continue_schedules(self, forked, decoded: list[Decoded], budget: int) -> list[Decoded]:
        """Deliver the later updates of every strategy run: at each update the run's cache and its
        references' caches are extended (the update appended to the run's and P_matched's, the run's
        last token to all) and decoding resumes until the next update. All runs waiting for their
        k-th update decode in one batch. Returns each forked run's stages merged into one Decoded;
        each strategy run's ``schedule`` (its updates with their positions) is set on the
        ScheduledStart."""
        waiting = {}
        for index, ((_, _, fork, _, state), first) in enumerate(zip(forked, decoded)):
            if isinstance(state, ScheduledStart):
                state.schedule = [Delivery(fork.t0, state.inserted_ids, len(state.prompt_ids) + fork.t0)]
                t = fork.t0
                for update in state.later:
                    t += update.after
                    state.schedule.append(Delivery(t, update.ids, None))
                waiting[index] = [first]
        while True:
            rows, owners = [], []
            for index, stages in waiting.items():
                _, problem, fork, condition, state = forked[index]
                pending = [u for u in state.schedule if u.stream_start is None]
                generated = fork.t0 + sum(len(stage.tokens) for stage in stages)
                if not pending or stages[-1].stop_reason == "eos" or generated >= budget or generated != pending[0].t:
                    continue  # delivered everything, or the run ended before its next update
                update, later = pending[0], pending[1:]
                update.stream_start = len(state.prompt_ids) + generated + sum(
                    len(u.ids) for u in state.schedule if u.stream_start is not None and u is not update)
                n = (min(later[0].t, budget) if later else budget) - generated
                previous = stages[-1]
                last = previous.tokens[-1:]
                caches = previous.reference_caches
                references = {"ignore": Follower(caches["ignore"], last), "oracle": Follower(caches["oracle"], last),
                              "matched": Follower(caches["matched"], last + update.ids)}
                end = update.stream_start + len(update.ids)
                spans = {"prompt": (0, len(state.prompt_ids)), "prefix": (len(state.prompt_ids), update.stream_start),
                         "inserted": (update.stream_start, end), "after": (end, end + n)}
                rows.append(self._row(problem.id, condition.name, fork.label, previous.cache, last + update.ids, n,
                                      offset=generated, stage=len(stages), references=references,
                                      attention_spans=self._attention(spans),
                                      keep_cache=bool(later), keep_logprobs=self.config.verify_recompute))
                owners.append(index)
            if not rows:
                break
            for index, stage in zip(owners, self._decode(rows)):
                waiting[index].append(stage)
        merged = list(decoded)
        for index, stages in waiting.items():
            merged[index] = merge_stages(stages)
        return merged

    def _reference_run(self, problem, name, own_prompt, decoded: Decoded) -> RunResult:
        """An ignore or oracle run; its references were decoded with it (the other prompt's stream,
        and itself)."""
        tokens = decoded.tokens
        n = len(tokens)
        p = len(own_prompt)
        refs = decoded.references
        return RunResult(
            problem_id=problem.id, condition=name, point="-", t0=0,
            prompt_ids=list(own_prompt), generated_ids=list(tokens), inserted_ids=[],
            prompt_text=self._text(own_prompt), inserted_text="",
            generated_text=self._text(tokens), continuation_text=self._text(tokens),
            generated_pieces=self._pieces(tokens),
            stop_reason=decoded.stop_reason,
            spans={"prompt": (0, p), "prefix": (p, p), "inserted": (p, p), "after": (p, p + n)},
            logprob_run=np.asarray(decoded.token_logprobs, dtype=np.float32),
            logprob_ref={ref: refs[ref]["logprob"] for ref in REFERENCES},
            kl={ref: refs[ref]["kl"] for ref in REFERENCES},
            js={ref: refs[ref]["js"] for ref in REFERENCES},
            hidden_cosine={ref: refs[ref]["hidden_cosine"] for ref in REFERENCES if "hidden_cosine" in refs[ref]},
            attention_mass=decoded.attention,
            kl_oracle_ignore=_kl_oracle_ignore(refs),
        )

    def _forked_run(self, problem, name, fork: ForkPoint, state: ConditionStart, decoded: Decoded,
                    ignore_run: RunResult) -> RunResult:
        after = decoded.tokens
        t0 = fork.t0
        refs = decoded.references
        schedule = getattr(state, "schedule", None)
        delivered = [update for update in schedule if update.delivered] if schedule else []
        inserted = [token for update in delivered for token in update.ids] if schedule else state.inserted_ids

        def joined(pre: np.ndarray, post: np.ndarray) -> np.ndarray:
            return np.concatenate([pre[..., :t0], post], axis=-1)

        # Before t0 the run is the ignore run: its arrays there are the ignore run's (whose
        # matched reference is the oracle's: no X before t0 either).
        run = RunResult(
            problem_id=problem.id, condition=name, point=fork.label, t0=t0,
            prompt_ids=list(state.prompt_ids), generated_ids=fork.shared + after, inserted_ids=list(inserted),
            prompt_text=self._text(state.prompt_ids),
            inserted_text="\n".join(self._text(u.ids) for u in delivered) if schedule else self._text(inserted),
            generated_text=self._text(fork.shared + after), continuation_text=self._text(after),
            generated_pieces=self._pieces(fork.shared + after),
            stop_reason=decoded.stop_reason, spans=self._forked_spans(fork, state, len(after)),
            logprob_run=joined(ignore_run.logprob_run, np.asarray(decoded.token_logprobs, dtype=np.float32)),
            logprob_ref={ref: joined(ignore_run.logprob_ref[ref], refs[ref]["logprob"]) for ref in REFERENCES},
            kl={ref: joined(ignore_run.kl[ref], refs[ref]["kl"]) for ref in REFERENCES},
            js={ref: joined(ignore_run.js[ref], refs[ref]["js"]) for ref in REFERENCES},
            hidden_cosine={ref: joined(ignore_run.hidden_cosine[ref], refs[ref]["hidden_cosine"])
                           for ref in REFERENCES if "hidden_cosine" in refs[ref]},
            attention_mass=decoded.attention,
        )
        after_kl = _kl_oracle_ignore(refs)
        if after_kl is not None and ignore_run.kl_oracle_ignore is not None:
            run.kl_oracle_ignore = joined(ignore_run.kl_oracle_ignore, after_kl)
        if schedule:
            run.schedule = [{"index": i, "t": u.t, "stream_start": u.stream_start, "n_tokens": len(u.ids),
                             "text": self._text(u.ids), "delivered": u.delivered} for i, u in enumerate(schedule)]
            run.final_problem = state.final
        return run

    @staticmethod
    def _scheduled_stream(run: RunResult, schedule: list[Delivery]) -> Stream:
        """A strategy run's whole stream, cache-free, scoring the positions that chose its tokens
        after t0 (the updates sit between them)."""
        stream, scored = list(run.prompt_ids), []
        arrivals = {update.t: update.ids for update in schedule if update.delivered}
        for index, token in enumerate(run.generated_ids):
            stream.extend(arrivals.get(index, []))
            if index >= run.t0:
                scored.append(len(stream) - 1)
            stream.append(token)
        return Stream(None, stream[:-1], len(scored), scored=scored)

    # -- the recompute check ------------------------------------------------------------------
    def _verify_forked(self, forked, decoded: list[Decoded], runs: list[RunResult]) -> None:
        """Each forked run against a teacher-forced pass over its stream: cache-free where the
        condition's cache equals a fresh prefill of the stream (exact streams), else (partial's
        stale cache) through the run's starting cache."""
        streams = []
        for (_, _, fork, _, state), run in zip(forked, runs):
            after = run.generated_ids[fork.t0:]
            if isinstance(state, ScheduledStart):
                streams.append(self._scheduled_stream(run, state.schedule))
            else:
                streams.append(Stream(None, state.prompt_ids + fork.shared + state.inserted_ids + after[:-1], len(after))
                               if state.exact_stream else Stream(state.cache, state.feed + after[:-1], len(after)))
        for (_, _, _, _, state), decoded_run, run, fresh in zip(forked, decoded, runs, self._recompute(streams)):
            run.checks.update(self._recompute_checks(decoded_run, fresh, full=state.exact_stream))

    def _verify_partial(self, forked, runs: list[RunResult]) -> None:
        """``partial_independent_max_abs``: each partial run's starting cache against the cache
        :mod:`measure.engine.partial_check` builds from fresh prefills and transformers' own rotary
        code (largest |difference| over every layer's keys and values)."""
        started = time.perf_counter()
        for (_, _, fork, condition, state), run in zip(forked, runs):
            if condition.name != "partial":
                continue
            stale = fork.shared[:fork.t0 - len(state.feed)]
            run.checks["partial_independent_max_abs"] = partial_check.max_partial_difference(
                self.model, kv.kv_pairs(state.cache), fork.prompt_a, fork.prompt_b, stale)
        self.timings.add("partial check", started)

    def _recompute(self, streams: list[Stream]):
        """Log-probabilities (n_out, vocab) of each stream, teacher-forced in batches bounded by
        ``score_positions`` padded positions; yielded in order. A check, not a measurement: kept
        out of positions_evaluated."""
        started = time.perf_counter()
        batch: list[Stream] = []
        for stream in streams:
            width = max([len(s.feed) for s in batch] + [len(stream.feed)])
            if batch and (len(batch) + 1) * width > self.config.score_positions:
                yield from (out.logprobs for out in score_streams(self.model, batch, self.pad_id, hidden_states=False))
                batch = []
            batch.append(stream)
        if batch:
            yield from (out.logprobs for out in score_streams(self.model, batch, self.pad_id, hidden_states=False))
        self.timings.add("recompute check", started)

    @staticmethod
    def _recompute_checks(decoded: Decoded, fresh, full: bool) -> dict[str, float]:
        """``decode_vs_recompute_max_abs_logprob``: the decode-time log-probabilities of the chosen
        tokens against the recompute's. With the run's full decode-time distributions (kept for
        exact streams and the oracle run): ``full_recompute_*`` over the whole vocabulary for exact
        forked streams, ``decode_vs_teacher_forced_max_kl`` for the ignore and oracle runs."""
        # Decode keeps its full distributions on the CPU; the recompute may be on the model's device.
        fresh = fresh.float().cpu()
        checks = {"decode_vs_recompute_max_abs_logprob": float(np.max(np.abs(
            np.asarray(decoded.token_logprobs, dtype=np.float32) - chosen_logprobs(fresh, decoded.tokens))))}
        if decoded.logprobs is not None:
            if full:
                checks["full_recompute_max_abs_logprob"] = float((fresh - decoded.logprobs).abs().max())
                checks["full_recompute_max_kl"] = float(kl_divergence(decoded.logprobs, fresh).max())
            else:
                checks["decode_vs_teacher_forced_max_kl"] = float(kl_divergence(decoded.logprobs, fresh).max())
        return checks
