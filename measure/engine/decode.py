"""Batched decoding of rows that each continue their own KV cache, with reference rows in tow.

Rows may start from caches of different lengths and feed different numbers of tokens (inserted
texts differ in length): caches are stacked with left padding, feeds right-padded and prefilled in
one forward (where a few streams feed many tokens and the rest one, those few feed all but their
last token in a forward of their own first: ``_feed_long_streams_first``), then the rows decode
in lockstep, each with its own attention mask and position ids,
so padding takes no RoPE position and a batched row produces the same tokens as the row alone.
After the prefill every row's positions are moved together at the right end of the cache axis
(``measure.engine.cache.close_padding_gaps``): sliding-window masks measure distances on that axis, and
a row's token spans then map onto it by one offset.

A row (a run, the *leader*) may bring *followers*: its reference streams (P_ignore, P_oracle,
P_matched), each starting from its own cache and feed and then fed every token the leader chooses,
one step behind it. Leader and followers are rows of the same forward, so at each step the
leader's distribution is compared with each follower's right away (measure.engine.step_metrics) and only
per-position numbers are kept. A follower identical to the leader (same cache object, same feed)
or to another follower of the same leader is not a row of its own: it shares the outputs, so two
references that are the same stream give exactly the same numbers. Streams of different leaders
that start alike (the references of several runs forked at one point) share a batch row for as
long as they are fed the same tokens, and part into rows of their own when they are not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import Cache, DynamicCache

from measure.engine import cache as kv
from measure.engine.batching import pad_batch, vocabulary_projection_at
from measure.engine.memory import batch_cap
from measure.engine.step_metrics import RowAttentionCapture, pair_metrics, span_masses, step_attention
from measure.model import compat

JOIN_SHARE = 8  # waiting rows join the running batch once the room is 1/8 of it (or all they need)


@dataclass
class Follower:
    """A reference stream: ``cache`` (None for nothing) plus ``feed``, then the leader's tokens."""

    cache: DynamicCache | None
    feed: list[int]


@dataclass
class StepValues:
    """What a leader's step gave, for a live listener: per reference name, the chosen token's
    log-probability under it and KL(run || it)."""

    logprob: float
    ref_logprob: dict[str, float]
    kl: dict[str, float]


@dataclass
class DecodeRow:
    cache: DynamicCache | None  # context already in KV, one row; None to start from nothing
    feed: list[int]  # fed before the first new token; must not be empty
    max_new_tokens: int
    generator: torch.Generator | None = None  # None: greedy
    keep_logprobs: bool = False  # keep the full decode-time log-probabilities (n_new, vocab)
    # Return the row's final cache (context + feed + new tokens but the last), and each
    # reference's (its feed + the same tokens): a scheduled strategy continues all of them after
    # its next update (measure.engine.engine).
    keep_cache: bool = False
    # Called as each token is chosen with (index, token, StepValues or None without references).
    on_token: Callable[[int, int, StepValues | None], None] | None = None
    references: dict[str, Follower] = field(default_factory=dict)  # name -> stream fed this row's tokens
    hidden_states: bool = False  # per-layer cosine of this row's hidden states with each reference's
    # Spans (start, end) of the row's own token positions: the attention mass of each step's query
    # on each span is recorded per layer and head.
    attention_spans: dict[str, tuple[int, int]] | None = None
    # Pairs (p, q) of reference names compared with each other at each step, e.g. ("oracle", "ignore"):
    # KL(p || q) over the run's own tokens (how much the problem still matters given them), kept in
    # Decoded.references under cross_name(p, q). Both are rows of the same forward: one more pair.
    cross_references: tuple[tuple[str, str], ...] = ()


def cross_name(p: str, q: str) -> str:
    """The key of a comparison between two references in :attr:`Decoded.references`."""
    return f"{p}||{q}"


@dataclass
class Decoded:
    tokens: list[int]
    token_logprobs: list[float]
    stop_reason: str  # "eos" | "max_new_tokens"
    logprobs: torch.Tensor | None = None
    cache: DynamicCache | None = None
    reference_caches: dict[str, DynamicCache] = field(default_factory=dict)  # with keep_cache
    positions_evaluated: int = 0  # token positions run through the model for this row and its followers
    # Per reference name: "logprob", "kl", "js" (n_new,) and with hidden states "hidden_cosine"
    # (layers + 1, n_new), position i comparing the distributions that chose token i; per
    # cross_name(p, q) of the row's cross_references: "kl" and "js" of reference p against q.
    references: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    attention: np.ndarray | None = None  # (layers, heads, n_new, n_spans) with attention_spans


@dataclass
class _Group:
    """A leader row and its distinct followers inside one decode batch."""

    index: int  # position of the leader among the rows asked for
    row: DecodeRow
    streams: list[tuple[DynamicCache | None, list[int]]]  # leader first, then distinct followers
    pair_of: dict[str, int]  # reference name -> stream it shares (0: the leader itself)
    decoded: Decoded = field(default_factory=lambda: Decoded([], [], "max_new_tokens"))
    done: bool = False
    rows: list[int] = field(default_factory=list)  # batch row of each stream (streams may share one)
    steps: list[torch.Tensor] = field(default_factory=list)
    step_values: list[dict[str, np.ndarray]] = field(default_factory=list)
    attention: list[np.ndarray] = field(default_factory=list)

    @property
    def width(self) -> int:
        return len(self.streams)

    @property
    def cross(self) -> list[tuple[int, int]]:
        """(stream of p, stream of q) for each of the row's cross_references whose two references it has."""
        return [(self.pair_of[p], self.pair_of[q]) for p, q in self.row.cross_references
                if p in self.pair_of and q in self.pair_of]

    def step_pairs(self) -> list[tuple[int, int]]:
        """The (stream, stream) pairs compared at each step: the leader with each distinct reference
        stream (sorted), then the cross pairs."""
        return [(0, s) for s in sorted(set(self.pair_of.values()))] + self.cross


def _stream_key(cache: DynamicCache | None, feed: list[int]) -> tuple:
    """Streams with equal keys are the same stream until they are fed different tokens: the same
    cache object (decoding never changes a row's starting cache) and the same feed."""
    return id(cache), tuple(feed)


def _group(index: int, row: DecodeRow) -> _Group:
    """Deduplicate a row's references: identical streams (same cache object, same feed) share a row."""
    streams = [(row.cache, row.feed)]
    keys = {_stream_key(row.cache, row.feed): 0}
    pair_of = {}
    for name, follower in row.references.items():
        k = _stream_key(follower.cache, follower.feed)
        if k not in keys:
            keys[k] = len(streams)
            streams.append((follower.cache, follower.feed))
        pair_of[name] = keys[k]
    return _Group(index, row, streams, pair_of)


def choose_token(logprobs: torch.Tensor, generator: torch.Generator | None, temperature: float) -> int:
    if generator is None:
        return int(logprobs.argmax())
    probs = torch.softmax(logprobs / temperature, dim=-1)
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


@torch.inference_mode()
def prefill(model, cache: DynamicCache | None, feed: list[int]) -> tuple[torch.Tensor, DynamicCache]:
    """Feed tokens after a cache; returns last-position logits (vocab,) and the extended cache."""
    device = model.device
    start = kv.kv_length(cache)
    if cache is None:
        cache = kv.new_cache(model.config)
    else:
        cache = kv.build_cache(kv.kv_pairs(cache), model.config)
    ids = torch.tensor([feed], device=device)
    positions = torch.arange(start, start + len(feed), device=device)[None]
    mask = torch.ones(1, start + len(feed), dtype=torch.long, device=device)
    out = compat.forward(model, cache, input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
    return out.logits[0, -1].float(), compat.returned_cache(out)


def _extract_row(cache, row: int, row_mask: torch.Tensor, config) -> DynamicCache:
    """The row's own positions (those its mask keeps), as a one-row cache."""
    keep = row_mask.nonzero()[:, 0]
    return kv.build_cache(
        ((k[row:row + 1].index_select(2, keep), v[row:row + 1].index_select(2, keep)) for k, v in kv.kv_pairs(cache)),
        config,
    )


def merge_stages(stages: list[Decoded]) -> Decoded:
    """One run decoded in stages (a strategy resumes after each update) as one Decoded: per-token
    values concatenated in order; the stop reason and cache of the last stage."""
    if len(stages) == 1:
        return stages[0]
    last = stages[-1]
    logprobs = (torch.cat([stage.logprobs for stage in stages])
                if all(stage.logprobs is not None for stage in stages) else None)
    attention = (np.concatenate([stage.attention for stage in stages], axis=2)
                 if all(stage.attention is not None for stage in stages) else None)
    references = {name: {key: np.concatenate([stage.references[name][key] for stage in stages], axis=-1)
                         for key in last.references[name]} for name in last.references}
    return Decoded([token for stage in stages for token in stage.tokens],
                   [value for stage in stages for value in stage.token_logprobs],
                   last.stop_reason, logprobs, last.cache, last.reference_caches,
                   sum(stage.positions_evaluated for stage in stages), references, attention)


class Timings(dict):
    """Seconds spent per part of the work, accumulated over calls (name -> seconds); and
    ``row_steps``, the batch rows of every decode-step forward (finished rows riding along
    included), so that a decode step's cost per row can be read off."""

    row_steps: int = 0

    def add(self, name: str, since: float) -> float:
        now = time.perf_counter()
        self[name] = self.get(name, 0.0) + now - since
        return now


@torch.inference_mode()
def decode_rows(
    model,
    rows: list[DecodeRow],
    eos_ids: set[int],
    pad_id: int,
    temperature: float = 1.0,
    batch_size: int = 16,
    timings: Timings | None = None,
) -> list[Decoded]:
    """Decode every row with its followers; ``batch_size`` bounds the rows (leaders and followers)
    of the running batch, a leader and its followers always sharing one.

    ``batch_size`` is capped by what fits in free memory (see measure.engine.memory.batch_cap). Rows join
    the batch in order of their number of new tokens, then of their starting length, so that rows
    decoded together finish together and need little padding; a row waiting for room joins as
    soon as rows that finished leave enough (``_decode_batches``).
    """
    timings = Timings() if timings is None else timings
    groups = [_group(index, row) for index, row in enumerate(rows)]
    if groups:
        longest = max(kv.kv_length(cache) + len(feed) + g.row.max_new_tokens for g in groups for cache, feed in g.streams)
        batch_size = min(batch_size, batch_cap(model, longest))
    # Rows of one batch decode in lockstep until the last of them finishes, so a batch holds rows
    # of the same number of new tokens first (runs forked late take fewer: mixed with early ones
    # they left half-empty batches for the second half of the steps), then of similar lengths.
    order = sorted(groups, key=lambda g: (g.row.max_new_tokens, max(kv.kv_length(c) + len(f) for c, f in g.streams)))
    results: list[Decoded | None] = [None] * len(rows)
    for done in _decode_batches(model, order, batch_size, eos_ids, pad_id, temperature, timings):
        results[done.index] = done.decoded
    return results  # type: ignore[return-value]


@dataclass
class _Batch:
    """The running batch: its cache, mask and each row's positions; its groups (those that finished
    at the last step until the next drops their rows); and the last forward's logits and hidden
    states, one row per batch row."""

    cache: Cache
    mask: torch.Tensor
    lengths: list[int]
    groups: list[_Group]
    logits: torch.Tensor
    states: torch.Tensor | None

    @property
    def active(self) -> list[_Group]:
        return [g for g in self.groups if not g.done]


def _decode_batches(model, order: list[_Group], batch_size: int, eos_ids, pad_id, temperature, timings: Timings):
    """Decode the groups in ``order`` in one running batch of at most ``batch_size`` rows (counting
    each group's streams, shared or not: each may part from those it shares a row with); yields
    each group as its leader finishes.

    Groups join in order. The first ones fill the batch; later ones wait until finished rows leave
    room, then are prefilled together in a forward of their own and join the running batch
    (``_combine``), which also drops its finished rows. They join once the room is an eighth of the
    batch or all the waiting rows: a batch that had to wait for the last of its rows to finish
    before the next started ran its slowest rows a few at a time, where a forward costs about as
    much as for many rows (the weights are read once per forward).
    """
    config = model.config
    pending = list(reversed(order))  # next to join last
    hidden = any(g.row.hidden_states and g.row.references for g in order)
    capture = None
    if any(g.row.attention_spans is not None for g in order):
        capture = RowAttentionCapture(model, n_query=1, name="measure_step_capture")
    batch: _Batch | None = None
    with step_attention(model, capture):
        while True:
            active = batch.active if batch is not None else []
            room = batch_size - sum(g.width for g in active)
            waiting = sum(g.width for g in pending)
            if pending and (not active or room >= min(waiting, max(1, batch_size // JOIN_SHARE))):
                joining = [pending.pop()]  # at least one group, however wide
                room -= joining[0].width
                while pending and pending[-1].width <= room:
                    room -= pending[-1].width
                    joining.append(pending.pop())
                new = _prefill(model, joining, pad_id, hidden, capture, timings)
                for group in _step(new.groups, new.logits, new.states, eos_ids, temperature, timings):
                    _finish(group, new.cache, new.mask, config)
                    yield group
                started = time.perf_counter()
                batch = new if batch is None or not batch.active else _combine(batch, new, model.device)
                timings.add("batch upkeep", started)
                active = batch.active
            if not active:
                if pending:
                    continue
                return
            started = time.perf_counter()
            _drop_finished_rows(batch, model.device)
            # Parting rows fit: the buffers were sized for every stream of the live groups when
            # they joined, and groups only leave until the next join (copy_rows refuses otherwise).
            tokens, parted = _feed_rows(active, len(batch.lengths), pad_id)
            if parted:
                kv.copy_rows(batch.cache, parted)
                batch.mask = torch.cat([batch.mask, batch.mask.index_select(0, torch.tensor(parted, device=model.device))])
                batch.lengths += [batch.lengths[row] for row in parted]
            started = timings.add("batch upkeep", started)
            _decode_step(model, batch, tokens, hidden, capture, timings, started)
            for group in _step(batch.groups, batch.logits, batch.states, eos_ids, temperature, timings):
                _finish(group, batch.cache, batch.mask, config)
                yield group


def _decode_step(model, batch: _Batch, tokens: list[int], hidden: bool, capture, timings: Timings,
                 started: float) -> None:
    """One forward of every batch row, one position each: sets the batch's logits and states, and
    appends each watched live leader's attention masses."""
    device = model.device
    ids = torch.tensor(tokens, device=device)[:, None]
    positions = torch.tensor(batch.lengths, device=device)[:, None]
    batch.mask = mask = torch.cat([batch.mask, batch.mask.new_ones(batch.mask.shape[0], 1)], dim=1)
    watched = []
    if capture is not None:
        watched = [g for g in batch.groups if g.row.attention_spans is not None and not g.done]
        capture.rows = torch.tensor([g.rows[0] for g in watched], dtype=torch.long, device=device)
    out = compat.forward(model, batch.cache, input_ids=ids, attention_mask=mask, position_ids=positions,
                         use_cache=True, output_hidden_states=hidden)
    batch.logits = out.logits[:, -1]
    batch.states = torch.stack([layer[:, -1] for layer in out.hidden_states]) if hidden else None
    started = timings.add("decode steps", started)
    timings.row_steps += ids.shape[0]
    if watched:
        # Gaps closed: a row's positions end at the right edge of the cache axis.
        ends = [batch.lengths[g.rows[0]] + 1 for g in watched]
        masses = span_masses(capture.probabilities(), [0] * len(watched), [g.row.attention_spans for g in watched],
                             [mask.shape[1] - end for end in ends], ends)
        for group, mass in zip(watched, masses.float().cpu().numpy()):
            group.attention.append(mass)
        timings.add("step metrics", started)
    del out
    batch.lengths = [length + 1 for length in batch.lengths]


def _prefill(model, groups: list[_Group], pad_id: int, hidden: bool, capture, timings: Timings) -> _Batch:
    """Prefill every distinct stream's feed of ``groups`` in one padded forward (measure.engine.batching):
    a batch whose logits give each group's first token.

    Streams of different groups that start alike (the same cache object and feed: a run's prompt
    and another run's reference on it; the references of several runs forked at one point) share
    one batch row for as long as they are fed the same tokens: the row is copied into a spare one
    at the step their tokens part (``_feed_rows``). Until then they are one stream, so the shared
    row's numbers are each one's own.
    """
    device = model.device
    started = time.perf_counter()
    if any(not feed for group in groups for _, feed in group.streams):
        raise ValueError("a decode row needs at least one token to feed")
    for group in groups:
        group.decoded.positions_evaluated = sum(len(feed) for _, feed in group.streams)
    if capture is not None:
        capture.rows = torch.tensor([], dtype=torch.long, device=device)  # nothing watched in long feeds
    _feed_long_streams_first(model, groups, pad_id)
    streams = [stream for group in groups for stream in group.streams]
    room = max(len(feed) for _, feed in streams) + max(g.row.max_new_tokens for g in groups)
    source, distinct = _distinct_streams(streams)
    at = 0
    for group in groups:
        group.rows = source[at:at + group.width]
        # A row's positions count once, for the first group that uses it.
        group.decoded.positions_evaluated -= sum(len(feed) for row, (_, feed) in zip(group.rows, group.streams)
                                                 if distinct[row] < at)
        at += group.width
    spare = len(streams) - len(distinct)  # every stream may part from those it shares a row with
    batch = pad_batch(model, [streams[row][0] for row in distinct], [streams[row][1] for row in distinct], pad_id,
                      room=room, spare_rows=spare)
    cache = kv.preallocated_empty(len(distinct), model, room, spare) if batch.cache is None else batch.cache
    lengths = batch.cache_lengths
    watched = [g for g in groups if g.row.attention_spans is not None]
    # Only each row's last fed position needs logits; a (positions x vocabulary) block for the
    # whole prompt would be the largest allocation of the batch.
    last_fed = torch.tensor([len(streams[row][1]) - 1 for row in distinct], device=device)
    if watched:
        # The prefill's queries of interest: each watched leader's last fed position.
        first_query = min(len(g.streams[0][1]) - 1 for g in watched)
        capture.n_query = batch.width - first_query
        capture.rows = torch.tensor([g.rows[0] for g in watched], device=device)
    with vocabulary_projection_at(model, torch.arange(len(distinct), device=device), last_fed):
        out = compat.forward(model, cache, input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                             position_ids=batch.position_ids, use_cache=True, logits_to_keep=0,
                             output_hidden_states=hidden)
    logits = out.logits[0]
    states = (torch.stack([layer[torch.arange(len(distinct), device=device), last_fed] for layer in out.hidden_states])
              if hidden else None)
    if watched:
        masses = span_masses(
            capture.probabilities(), [len(g.streams[0][1]) - 1 - first_query for g in watched],
            [g.row.attention_spans for g in watched], [batch.pads[g.rows[0]] for g in watched],
            [lengths[g.rows[0]] + len(g.streams[0][1]) for g in watched])
        for group, mass in zip(watched, masses.float().cpu().numpy()):
            group.attention.append(mass)
    del out
    cache, mask = kv.close_padding_gaps(cache, batch.attention_mask)
    lengths = [length + len(streams[row][1]) for length, row in zip(lengths, distinct)]  # positions per row
    timings.add("prefill", started)
    return _Batch(cache, mask, lengths, list(groups), logits, states)


def _combine(running: _Batch | None, joining: _Batch | None, device) -> _Batch | None:
    """The rows of the live groups of ``running`` then of ``joining``, in one new preallocated
    cache (finished rows dropped), every row's positions right-aligned on one cache axis (gaps
    stay closed, position ids are the rows' own), with room for every stream to part and for
    every live group's remaining tokens; None without live groups. Only the filled positions are
    copied."""
    parts = [batch for batch in (running, joining) if batch is not None and batch.active]
    groups = [g for batch in parts for g in batch.active]
    if not groups:
        return None
    width = max(batch.mask.shape[1] for batch in parts)
    sources, lengths, masks = [], [], []
    for batch in parts:
        used = sorted({row for g in batch.active for row in g.rows})
        renumbered = {old: len(lengths) + new for new, old in enumerate(used)}
        for group in batch.active:
            group.rows = [renumbered[row] for row in group.rows]
        index = torch.tensor(used, dtype=torch.long, device=device)
        sources.append((batch.cache, index))
        mask = batch.mask.index_select(0, index)
        masks.append(torch.cat([mask.new_zeros(len(used), width - mask.shape[1]), mask], dim=1))
        lengths += [batch.lengths[row] for row in used]
    remaining = max(g.row.max_new_tokens - len(g.decoded.tokens) for g in groups)
    cache = kv.combine_right_aligned(sources, width, sum(g.width for g in groups), width + remaining)
    return _Batch(cache, torch.cat(masks), lengths, groups, None, None)


def _drop_finished_rows(batch: _Batch, device) -> None:
    """Drop the rows no live stream uses, right after their groups finish: the live rows behind
    the first hole move into the holes, so a drop copies as many rows as it drops at most.
    (Finished rows had ridden along until they were an eighth of the batch, then every live row
    was copied: 0.8 s of batch upkeep on the bench workload, and riders in the decode steps.)"""
    active = batch.active
    used = {row for g in active for row in g.rows}
    kept = len(used)
    if kept == len(batch.lengths):
        return
    holes = [row for row in range(kept) if row not in used]
    movers = sorted(row for row in used if row >= kept)
    kv.move_rows(batch.cache, movers, holes, kept)
    if movers:
        moved = dict(zip(movers, holes))
        for group in active:
            group.rows = [moved.get(row, row) for row in group.rows]
        source, target = (torch.tensor(rows, device=device) for rows in (movers, holes))
        batch.mask.index_copy_(0, target, batch.mask.index_select(0, source))
        for old, new in moved.items():
            batch.lengths[new] = batch.lengths[old]
    batch.mask, batch.lengths, batch.groups = batch.mask[:kept], batch.lengths[:kept], active


def _feed_rows(active: list[_Group], n_rows: int, pad_id: int) -> tuple[list[int], list[int]]:
    """The token each batch row is fed next (its streams' leader's last token; ``pad_id`` for rows
    no live stream uses), and the rows to copy into new rows at the end of the batch, in order:
    streams sharing a row that are fed different tokens part there, those fed the first token
    seen staying. Updates each group's ``rows`` and counts each fed row once as evaluated."""
    fed: list[int | None] = [None] * n_rows
    parted: list[int] = []
    row_for: dict[tuple[int, int], int] = {}  # (row now, token) -> row it is fed in
    for group in active:
        token = group.decoded.tokens[-1]
        for i, row in enumerate(group.rows):
            target = row_for.get((row, token))
            if target is None:
                if fed[row] is None:
                    target = row
                else:
                    target = n_rows + len(parted)
                    parted.append(row)
                    fed.append(None)
                fed[target] = token
                row_for[row, token] = target
                group.decoded.positions_evaluated += 1
            group.rows[i] = target
    return [pad_id if token is None else token for token in fed], parted


def _distinct_streams(streams) -> tuple[list[int], list[int]]:
    """For each stream the index of its distinct stream, and each distinct stream's first row."""
    first: dict[tuple, int] = {}
    source, distinct = [], []
    for row, (cache, feed) in enumerate(streams):
        key = _stream_key(cache, feed)
        if key not in first:
            first[key] = len(distinct)
            distinct.append(row)
        source.append(first[key])
    return source, distinct


def _feed_long_streams_first(model, groups: list[_Group], pad_id: int, worth: float = 0.75) -> None:
    """Where few streams of a batch feed many tokens (an update appended to a forked cache, next
    to references fed one token), run only those streams' feeds but their last token through the
    model first, in padded forwards of their own, and leave every stream one token to feed: the
    batch's prefill is then one position wide instead of padded to the longest feed. Done when it
    costs at most ``worth`` of the padded positions of the single prefill (it copies the long
    streams' caches once more); each stream's numbers are the same up to float32 round-off.
    Streams that are the same stream (same cache object and feed) are fed once and keep sharing
    one cache object, so they still share a batch row."""
    streams = [(group, index, cache, feed) for group in groups for index, (cache, feed) in enumerate(group.streams)]
    long = [stream for stream in streams if len(stream[3]) > 1]
    if not long:
        return
    width = max(len(feed) for *_, feed in streams)
    if len(long) * (max(len(feed) for *_, feed in long) - 1) + len(streams) > worth * len(streams) * width:
        return
    alike: dict[tuple, list] = {}
    for stream in long:
        alike.setdefault(_stream_key(stream[2], stream[3]), []).append(stream)
    distinct = [same[0] for same in alike.values()]
    for same in alike.values():
        for group, *_, feed in same[1:]:
            group.decoded.positions_evaluated -= len(feed) - 1
    for bucket in _length_buckets([len(feed) - 1 for *_, feed in distinct]):
        part = [distinct[i] for i in bucket]
        batch = pad_batch(model, [cache for _, _, cache, _ in part], [feed[:-1] for *_, feed in part], pad_id)
        cache = batch.cache if batch.cache is not None else kv.new_cache(model.config)
        out = compat.forward(model, cache, input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                             position_ids=batch.position_ids, use_cache=True, logits_to_keep=1)
        cache = compat.returned_cache(out)
        del out
        for row, (_, _, start, feed) in enumerate(part):
            fed = _extract_row(cache, row, batch.attention_mask[row], model.config)
            for group, index, *_ in alike[_stream_key(start, feed)]:
                group.streams[index] = (fed, feed[-1:])


# A forward's cost beyond its positions, in positions: about 20 ms against 0.66 ms a position of a
# SmolLM2 prefill on the CI machine (2 cores).
FORWARD_POSITIONS = 32


def _length_buckets(lengths: list[int], fixed: int = FORWARD_POSITIONS) -> list[list[int]]:
    """Indices of ``lengths`` grouped into padded forwards of similar lengths: the grouping of
    the sorted lengths with the fewest padded positions plus ``fixed`` per forward. (One forward
    for the long feeds of the bench workload padded 1,848 positions for 1,034 fed.)"""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    best, cut = [0] + [None] * len(order), [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        for start in range(end):
            cost = best[start] + fixed + (end - start) * lengths[order[end - 1]]
            if best[end] is None or cost < best[end]:
                best[end], cut[end] = cost, start
    buckets, end = [], len(order)
    while end > 0:
        buckets.append(order[cut[end]:end])
        end = cut[end]
    return buckets[::-1]


def _step(live: list[_Group], logits, states, eos_ids, temperature, timings: Timings) -> list[_Group]:
    """Choose each live leader's token and record the step's comparisons; returns the groups whose
    leader finished at this step."""
    started = time.perf_counter()
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    stepping = [group for group in live if not group.done]
    leader_rows = torch.tensor([g.rows[0] for g in stepping], dtype=torch.long, device=logits.device)
    greedy = logprobs.index_select(0, leader_rows).argmax(dim=-1).tolist()  # the leaders' rows only
    chosen = [token if g.row.generator is None else choose_token(logprobs[g.rows[0]], g.row.generator, temperature)
              for g, token in zip(stepping, greedy)]
    own = logprobs[leader_rows, torch.tensor(chosen, dtype=torch.long, device=logits.device)].tolist()
    # The step's comparisons: one pair (leader row, reference row) per distinct stream its references use.
    paired = [(g, token, g.step_pairs()) for g, token in zip(stepping, chosen) if g.pair_of]
    values, columns = {}, {}
    if paired:
        at = 0
        for group, _, pairs in paired:
            columns[id(group)] = (at, pairs)
            at += len(pairs)
        device = logits.device
        leaders = torch.tensor([g.rows[a] for g, _, pairs in paired for a, _ in pairs], device=device)
        references = torch.tensor([g.rows[b] for g, _, pairs in paired for _, b in pairs], device=device)
        tokens = torch.tensor([token for _, token, pairs in paired for _ in pairs], device=device)
        values = {name: value.float().cpu().numpy()  # float: numpy has no bfloat16
                  for name, value in pair_metrics(logprobs, states, leaders, references, tokens).items()}
    started = timings.add("step metrics", started)
    finished = []
    for group, token, logprob in zip(stepping, chosen, own):
        decoded = group.decoded
        decoded.tokens.append(token)
        decoded.token_logprobs.append(logprob)
        step = None
        if id(group) in columns:
            first, pairs = columns[id(group)]
            step = {name: value[..., first:first + len(pairs)] for name, value in values.items()}
            group.step_values.append(step)
        if group.row.on_token is not None:
            group.row.on_token(len(decoded.tokens) - 1, token, None if step is None else _step_values(group, step, logprob))
        if group.row.keep_logprobs:
            group.steps.append(logprobs[group.rows[0]].cpu())
        if token in eos_ids or len(decoded.tokens) >= group.row.max_new_tokens:
            group.done = True
            decoded.stop_reason = "eos" if token in eos_ids else "max_new_tokens"
            finished.append(group)
    timings.add("step bookkeeping", started)
    return finished


def _step_values(group: _Group, step: dict[str, np.ndarray], logprob: float) -> StepValues:
    column = {stream: i for i, stream in enumerate(sorted(set(group.pair_of.values())))}
    return StepValues(logprob,
                      {name: float(step["logprob"][column[s]]) for name, s in group.pair_of.items()},
                      {name: float(step["kl"][column[s]]) for name, s in group.pair_of.items()})


def _finish(group: _Group, batch_cache, mask, config) -> None:
    decoded = group.decoded
    if group.row.keep_logprobs:
        decoded.logprobs = torch.stack(group.steps)
    if group.row.keep_cache:
        caches = [_extract_row(batch_cache, row, mask[row], config) for row in group.rows]
        decoded.cache = caches[0]
        # References that shared a row share its cache object, so they stay one row when continued.
        decoded.reference_caches = {name: caches[stream] for name, stream in group.pair_of.items()}
    if group.step_values:
        streams = sorted(set(group.pair_of.values()))
        stacked = {name: np.stack([step[name] for step in group.step_values], axis=-1)
                   for name in group.step_values[0]}  # (..., pairs, n_new)
        for name, stream in group.pair_of.items():
            column = streams.index(stream)
            decoded.references[name] = {key: value[..., column, :] for key, value in stacked.items()}
        crossed = [(p, q) for p, q in group.row.cross_references if p in group.pair_of and q in group.pair_of]
        for offset, (p, q) in enumerate(crossed):
            column = len(streams) + offset
            decoded.references[cross_name(p, q)] = {key: stacked[key][column, :] for key in ("kl", "js")}
    if group.attention:
        decoded.attention = np.stack(group.attention, axis=2)  # (layers, heads, n_new, n_spans)
