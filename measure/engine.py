"""Run one problem pair through every condition at every injection point.

Per problem: the ignore run (prompt A) and the oracle run (prompt B) are generated once; at each
injection point the ignore run's cache is forked (a cropped copy) and every condition continues
from it, all rows of a point decoding together in one batch. Every run is then scored against
its teacher-forced references (P_ignore, P_oracle, P_matched) in one batched pass.

What this module does not know: where problems come from, how per-run arrays become metrics,
and how anything is stored or reported.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from measure import cache as kv
from measure.conditions import (
    CONDITION_NAMES,
    Condition,
    ConditionStart,
    ForkPoint,
    build_conditions,
)
from measure.decode import Decoded, DecodeRow, decode_rows, prefill
from measure.events import Listener, RunEvent, TokenEvent
from measure.metrics.divergence import kl_divergence
from measure.model import LoadedModel
from measure.points import InjectionPoint, parse_points
from measure.prompts import PromptFormat, inserted_ids, length_matched_ids
from measure.results import REFERENCES, RunResult
from measure.scoring import Stream, chosen_logprobs, compare, positions_in, score_streams, stream_key

log = logging.getLogger(__name__)
UPDATE_FORMS = ("erratum", "restatement")


@dataclass
class EngineConfig:
    max_new_tokens: int = 64
    points: tuple = ("8", "0.5")
    conditions: tuple[str, ...] = CONDITION_NAMES
    prompt: PromptFormat = field(default_factory=PromptFormat)
    update_form: str = "erratum"
    seed: int = 0
    temperature: float = 0.0  # 0: greedy (the seed is then irrelevant to the tokens)
    partial_recompute_last: int = 1
    batch_size: int = 16
    hidden_states: bool = True
    attention: bool = True
    verify_recompute: bool = False  # also compare each exact stream with a cache-free recompute
    score_positions: int = 4096  # token positions per teacher-forced batch (bounds logits memory)

    def __post_init__(self) -> None:
        self.points = check_config(self.max_new_tokens, self.points, self.conditions, self.update_form)


def check_config(max_new_tokens: int, points, conditions, update_form: str,
                 name: Callable[[str], str] = str) -> tuple[InjectionPoint, ...]:
    """Check the settings an :class:`EngineConfig` cannot run without; return the parsed points.

    Raises ValueError naming each setting as ``name(field)``: the field itself by default, the
    command-line flag from :func:`measure.settings.validate`, which reuses these checks so a bad
    setting fails before any model is loaded.
    """
    build_conditions(conditions)  # validates the names
    try:
        parsed = (tuple(points) if points and all(isinstance(p, InjectionPoint) for p in points)
                  else parse_points(points))
    except ValueError as error:
        raise ValueError(f"{name('points')}: {error}") from None
    for point in parsed:
        if not point.is_fraction and point.value >= max_new_tokens:
            raise ValueError(f"{name('points')}: injection point {point.label} lies at or beyond the generation "
                             f"length ({name('max_new_tokens')} {max_new_tokens})")
    if max_new_tokens < 2:
        raise ValueError(f"{name('max_new_tokens')} must be at least 2")
    if update_form not in UPDATE_FORMS:
        raise ValueError(f"{name('update_form')} {update_form!r}: unknown update form; "
                         f"choose one of {', '.join(UPDATE_FORMS)}")
    return parsed


@dataclass
class ProblemResult:
    problem_id: str
    runs: list[RunResult]
    skipped: list[tuple[str, str]]  # (point label, why no condition ran there)
    positions_evaluated: int = 0  # positions through the model for this call of run_problems (on its first result)
    references: dict[str, RunResult] = field(default_factory=dict)  # ignore and oracle, always


def row_generator(seed: int, *parts: str) -> torch.Generator:
    """A generator seeded from the run's identity, so batching never changes what it samples."""
    digest = hashlib.sha256("/".join((str(seed), *parts)).encode()).digest()
    generator = torch.Generator()
    generator.manual_seed(int.from_bytes(digest[:8], "little"))
    return generator


@dataclass
class _ScoreJob:
    """Streams to score together, and how their outputs become a RunResult."""

    streams: list[Stream]
    finish: Callable[[list], RunResult]


class Engine:
    def __init__(self, loaded: LoadedModel, config: EngineConfig):
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.config = config
        self.conditions: list[Condition] = build_conditions(config.conditions, config.partial_recompute_last)
        for condition in self.conditions:
            condition.check_supported(loaded.uses_rotary_positions)
        self.rotary = kv.rotary_embedding_of(self.model)
        self.pad_id = self.tokenizer.pad_token_id
        self.positions_evaluated = 0  # every token position run through the model, for throughput
        self.listener: Listener | None = None  # set for the duration of run_problems(..., listener=)
        self.eos_ids = {self.tokenizer.eos_token_id}
        generation_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        if generation_eos is not None:
            self.eos_ids |= set(generation_eos if isinstance(generation_eos, list) else [generation_eos])

    # -- decoding -----------------------------------------------------------------------------
    def _row(self, problem_id, name, label, cache, feed, budget, offset=0, **flags) -> DecodeRow:
        generator = row_generator(self.config.seed, problem_id, name, label) if self.config.temperature > 0 else None
        on_token = None
        if self.listener is not None:
            listener = self.listener

            def on_token(index: int, token: int) -> None:
                listener(TokenEvent(problem_id, name, label, offset + index, token, self.tokenizer.decode([token])))

        return DecodeRow(cache, feed, budget, generator, on_token=on_token, **flags)

    def _decode(self, rows: list[DecodeRow]) -> list[Decoded]:
        decoded = decode_rows(self.model, rows, self.eos_ids, self.pad_id,
                              temperature=self.config.temperature or 1.0, batch_size=self.config.batch_size)
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

        ``listener`` receives a :class:`~measure.events.TokenEvent` per generated token and a
        :class:`~measure.events.RunEvent` per finished run (measure.events).
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
        rows = []
        for problem, (prompt_a, prompt_b) in zip(problems, prompts):
            rows.append(self._row(problem.id, "ignore", "-", None, prompt_a, budget, keep_cache=True))
            rows.append(self._row(problem.id, "oracle", "-", None, prompt_b, budget, keep_logprobs=True))
        decoded = self._decode(rows)
        ignores, oracles = decoded[0::2], decoded[1::2]
        jobs = []
        for problem, (prompt_a, prompt_b), ignore, oracle in zip(problems, prompts, ignores, oracles):
            jobs.append(self._reference_job(problem, "ignore", prompt_a, prompt_b, ignore))
            jobs.append(self._reference_job(problem, "oracle", prompt_b, prompt_a, oracle))
        references = self._score_jobs(jobs)
        self._announce(references)

        results, forked = [], []
        for index, (problem, (prompt_a, prompt_b), ignore) in enumerate(zip(problems, prompts, ignores)):
            ignore_run, oracle_run = references[2 * index], references[2 * index + 1]
            runs = [run for run in (ignore_run, oracle_run) if run.condition in self.config.conditions]
            result = ProblemResult(problem.id, runs, [], 0, {"ignore": ignore_run, "oracle": oracle_run})
            results.append(result)
            for point in self.config.points:
                t0 = point.resolve(len(ignore.tokens))
                if t0 >= len(ignore.tokens):
                    result.skipped.append((point.label, f"the ignore run stopped after {len(ignore.tokens)} tokens, "
                                                        f"at or before the injection point t0={t0}"))
                elif self.conditions:
                    fork = self._fork(problem, point, t0, prompt_a, prompt_b, ignore)
                    forked.extend((result, problem, fork, condition, condition.prepare(fork))
                                  for condition in self.conditions)
        decoded = self._decode([
            self._row(problem.id, condition.name, fork.label, state.cache, state.feed, budget - fork.t0, offset=fork.t0)
            for _, problem, fork, condition, state in forked])
        jobs = [self._forked_job(problem, condition.name, fork, state, after, result.references["ignore"])
                for (result, problem, fork, condition, state), after in zip(forked, decoded)]
        runs = self._score_jobs(jobs)
        self._announce(runs)
        for (result, *_), run in zip(forked, runs):
            result.runs.append(run)
        # Throughput is reported for the batch as a whole: rows of all problems share passes.
        results[0].positions_evaluated = self.positions_evaluated - start_positions
        return results

    def _fork(self, problem, point, t0, prompt_a, prompt_b, ignore: Decoded) -> ForkPoint:
        shared = ignore.tokens[:t0]
        update_text = getattr(problem, self.config.update_form)
        update_ids = inserted_ids(self.tokenizer, update_text)
        ignore_before_last = kv.crop_copy(ignore.cache, len(prompt_a) + t0 - 1, self.model.config)
        # B + y[:t0-1] is A + y[:t0-1] when the prompts are identical: reuse it (exact controls).
        oracle_before_last = (ignore_before_last if prompt_b == prompt_a
                              else self._prefill(prompt_b + shared[:-1]))
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
        )

    # -- scoring ------------------------------------------------------------------------------
    def _score_jobs(self, jobs: list[_ScoreJob]) -> list[RunResult]:
        """Score jobs in batches bounded by padded positions, so full distributions never pile up.

        Jobs are batched in order of their longest feed, so that rows of one forward have
        similar lengths and little of the batch is padding.
        """
        def width(job: _ScoreJob) -> int:
            return max(len(stream.feed) for stream in job.streams)

        order = sorted(range(len(jobs)), key=lambda i: width(jobs[i]))
        results: dict[int, RunResult] = {}
        batch: list[int] = []
        for index in order:
            rows = sum(len(jobs[i].streams) for i in batch) + len(jobs[index].streams)
            if batch and rows * width(jobs[index]) > self.config.score_positions:
                results.update(zip(batch, self._score_batch([jobs[i] for i in batch])))
                batch = []
            batch.append(index)
        if batch:
            results.update(zip(batch, self._score_batch([jobs[i] for i in batch])))
        return [results[i] for i in range(len(jobs))]

    def _score_batch(self, jobs: list[_ScoreJob]) -> list[RunResult]:
        """Score the jobs' streams, regrouped by length so that forwards carry little padding.

        A job's streams differ in length (the run and P_matched carry the inserted text, P_ignore
        and P_oracle do not), so the streams of all jobs here are deduplicated, sorted by length
        and cut into forwards of similar lengths; each job then gets its outputs back.
        """
        streams: dict[tuple, Stream] = {}
        for job in jobs:
            for stream in job.streams:
                key = stream_key(stream)
                if key not in streams or (stream.attention_spans is not None and streams[key].attention_spans is None):
                    streams[key] = stream
        self.positions_evaluated += positions_in(list(streams.values()))
        outputs: dict[tuple, object] = {}
        pending: list[tuple] = []
        for key in sorted(streams, key=lambda k: len(streams[k].feed)):
            length = len(streams[key].feed)
            too_big = (len(pending) + 1) * length > self.config.score_positions
            # A new forward once lengths grow by a third, if the current one is already wide.
            too_ragged = len(pending) >= 8 and length > 1.33 * len(streams[pending[0]].feed)
            if pending and (too_big or too_ragged):
                outputs.update(zip(pending, score_streams(self.model, [streams[k] for k in pending], self.pad_id,
                                                          hidden_states=self.config.hidden_states)))
                pending = []
            pending.append(key)
        outputs.update(zip(pending, score_streams(self.model, [streams[k] for k in pending], self.pad_id,
                                                  hidden_states=self.config.hidden_states)))
        return [job.finish([outputs[stream_key(stream)] for stream in job.streams]) for job in jobs]

    def _reference_job(self, problem, name, own_prompt, other_prompt, decoded: Decoded) -> _ScoreJob:
        """An ignore or oracle run: its own stream against the other prompt's."""
        tokens = decoded.tokens
        n = len(tokens)
        p = len(own_prompt)
        spans = {"prompt": (0, p), "prefix": (p, p), "inserted": (p, p), "after": (p, p + n)}
        streams = [Stream(None, own_prompt + tokens[:-1], n, self._attention(spans)),
                   Stream(None, other_prompt + tokens[:-1], n)]

        def finish(outputs) -> RunResult:
            own, other = outputs
            self_cmp, other_cmp = compare(own, own, tokens), compare(own, other, tokens)
            # For the ignore run the ignore reference is itself; for the oracle run, the oracle is.
            by_ref = ({"ignore": self_cmp, "oracle": other_cmp} if name == "ignore"
                      else {"ignore": other_cmp, "oracle": self_cmp})
            by_ref["matched"] = by_ref["oracle"]
            checks = {"decode_vs_recompute_max_abs_logprob": float(np.max(np.abs(
                np.asarray(decoded.token_logprobs) - chosen_logprobs(own.logprobs, tokens))))}
            if decoded.logprobs is not None:
                checks["decode_vs_teacher_forced_max_kl"] = float(
                    kl_divergence(decoded.logprobs, own.logprobs.cpu()).max())
            return RunResult(
                problem_id=problem.id, condition=name, point="-", t0=0,
                prompt_ids=list(own_prompt), generated_ids=list(tokens), inserted_ids=[],
                prompt_text=self._text(own_prompt), inserted_text="",
                generated_text=self._text(tokens), continuation_text=self._text(tokens),
                generated_pieces=self._pieces(tokens),
                stop_reason=decoded.stop_reason, spans=spans,
                logprob_run=chosen_logprobs(own.logprobs, tokens),
                logprob_ref={ref: by_ref[ref]["logprob"] for ref in REFERENCES},
                kl={ref: by_ref[ref]["kl"] for ref in REFERENCES},
                js={ref: by_ref[ref]["js"] for ref in REFERENCES},
                hidden_cosine={ref: by_ref[ref]["hidden_cosine"] for ref in REFERENCES
                               if "hidden_cosine" in by_ref[ref]},
                attention_mass=own.attention,
                checks=checks,
            )

        return _ScoreJob(streams, finish)

    def _forked_job(self, problem, name, fork: ForkPoint, state: ConditionStart, decoded: Decoded,
                    ignore_run: RunResult) -> _ScoreJob:
        after = decoded.tokens
        n = len(after)
        last = fork.shared[-1:]
        inserted = state.inserted_ids
        t0 = fork.t0
        prompt_len = len(state.prompt_ids)
        inserted_end = prompt_len + t0 + len(inserted)
        spans = {"prompt": (0, prompt_len), "prefix": (prompt_len, prompt_len + t0),
                 "inserted": (prompt_len + t0, inserted_end), "after": (inserted_end, inserted_end + n)}
        streams = [
            Stream(state.cache, state.feed + after[:-1], n, self._attention(spans)),  # the run, via its edited cache
            Stream(fork.ignore_before_last, last + after[:-1], n),  # P_ignore: A, y[:t0], after
            Stream(fork.oracle_before_last, last + after[:-1], n),  # P_oracle: B, y[:t0], after
        ]
        if inserted:
            streams.append(Stream(fork.oracle_before_last, last + inserted + after[:-1], n))  # P_matched

        def finish(outputs) -> RunResult:
            run_out = outputs[0]
            refs = dict(zip(REFERENCES, outputs[1:] if inserted else [outputs[1], outputs[2], outputs[2]]))
            cmp = {ref: compare(run_out, out, after) for ref, out in refs.items()}
            checks = {"decode_vs_recompute_max_abs_logprob": float(np.max(np.abs(
                np.asarray(decoded.token_logprobs) - chosen_logprobs(run_out.logprobs, after))))}
            if self.config.verify_recompute and state.exact_stream:
                checks.update(self._full_recompute_check(state, fork, after, run_out))

            def joined(pre: np.ndarray, post: np.ndarray) -> np.ndarray:
                return np.concatenate([pre[..., :t0], post], axis=-1)

            # Before t0 the run is the ignore run: its arrays there are the ignore run's (whose
            # matched reference is the oracle's: no X before t0 either).
            return RunResult(
                problem_id=problem.id, condition=name, point=fork.label, t0=t0,
                prompt_ids=list(state.prompt_ids), generated_ids=fork.shared + after, inserted_ids=list(inserted),
                prompt_text=self._text(state.prompt_ids), inserted_text=self._text(inserted),
                generated_text=self._text(fork.shared + after), continuation_text=self._text(after),
                generated_pieces=self._pieces(fork.shared + after),
                stop_reason=decoded.stop_reason, spans=spans,
                logprob_run=joined(ignore_run.logprob_run, chosen_logprobs(run_out.logprobs, after)),
                logprob_ref={ref: joined(ignore_run.logprob_ref[ref], cmp[ref]["logprob"]) for ref in REFERENCES},
                kl={ref: joined(ignore_run.kl[ref], cmp[ref]["kl"]) for ref in REFERENCES},
                js={ref: joined(ignore_run.js[ref], cmp[ref]["js"]) for ref in REFERENCES},
                hidden_cosine={ref: joined(ignore_run.hidden_cosine[ref], cmp[ref]["hidden_cosine"])
                               for ref in REFERENCES if "hidden_cosine" in cmp[ref]},
                attention_mass=run_out.attention,
                checks=checks,
            )

        return _ScoreJob(streams, finish)

    def _full_recompute_check(self, state: ConditionStart, fork: ForkPoint, after, run_out) -> dict[str, float]:
        """Logits through the edited cache vs a cache-free pass over the same token stream."""
        stream = state.prompt_ids + fork.shared + state.inserted_ids + after[:-1]
        # A check, not a measurement: kept out of positions_evaluated.
        (fresh,) = score_streams(self.model, [Stream(None, stream, len(after))], self.pad_id, hidden_states=False)
        return {
            "full_recompute_max_abs_logprob": float((fresh.logprobs - run_out.logprobs).abs().max()),
            "full_recompute_max_kl": float(kl_divergence(run_out.logprobs, fresh.logprobs).max()),
        }
