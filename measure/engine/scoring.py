"""Teacher-forced passes over token streams, batched, reduced to per-position arrays.

A stream is a cache (the shared context, possibly edited) plus tokens fed after it; the last
``n_out`` fed positions are the ones scored. Several streams run as one padded batch: caches
left-padded, feeds right-padded (causal attention keeps the right padding from affecting the
positions we read). Full (positions x vocabulary) tensors live only inside ``score_streams``;
callers get log-probabilities of chosen tokens and divergences, never whole distributions.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from transformers import DynamicCache

from measure.engine.attention import AttentionCapture, sum_over_spans
from measure.engine.batching import pad_batch, vocabulary_projection_at
from measure.metrics.divergence import PreparedLogprobs, kl_js_prepared, prepare
from measure.model import compat


@dataclass
class Stream:
    cache: DynamicCache | None
    feed: list[int]
    n_out: int  # score the last n_out fed positions
    # Spans (start, end) of the stream's own tokens: when given, the attention mass of the scored
    # queries onto each span is captured, per layer and head.
    attention_spans: dict[str, tuple[int, int]] | None = None
    # Fed positions to score instead of the last n_out (a strategy's generated tokens are not
    # contiguous: updates sit between them); only without attention_spans and hidden states.
    scored: list[int] | None = None

    def scored_positions(self) -> list[int]:
        return list(self.scored) if self.scored is not None else list(range(len(self.feed) - self.n_out, len(self.feed)))


@dataclass
class StreamOutput:
    logprobs: torch.Tensor  # (n_out, vocab) float32
    hidden: torch.Tensor | None  # (n_layers + 1, n_out, hidden)
    attention: np.ndarray | None = None  # (n_layers, n_heads, n_out, n_spans)

    @cached_property
    def prepared(self) -> PreparedLogprobs:
        """exp(logprobs) and the clamped logprobs, computed on the first ``compare`` and shared by
        every later one (a run is compared with up to three references, a reference with several
        runs). Holds about one more copy of ``logprobs`` while the output lives."""
        return prepare(self.logprobs)


def stream_key(stream: Stream) -> tuple:
    return id(stream.cache), tuple(stream.feed), stream.n_out, tuple(stream.scored_positions())


@torch.inference_mode()
def score_streams(model, streams: list[Stream], pad_id: int, hidden_states: bool = True) -> list[StreamOutput]:
    """One batched forward over the streams; returns each stream's scored positions.

    Identical streams (same cache object, same feed) are computed once and share the result:
    for an identical-problem control the ignore and oracle references are then exactly equal,
    not merely equal up to the round-off of two batch rows.
    """
    keys = [stream_key(s) for s in streams]
    unique = list(dict.fromkeys(keys))
    if len(unique) < len(streams):
        # One representative per key; the one asking for attention, if any does.
        chosen: dict[tuple, Stream] = {}
        for key, stream in zip(keys, streams):
            if key not in chosen or (stream.attention_spans is not None and chosen[key].attention_spans is None):
                chosen[key] = stream
        outputs = dict(zip(chosen, score_streams(model, list(chosen.values()), pad_id, hidden_states)))
        return [outputs[key] for key in keys]
    device = model.device
    batch = pad_batch(model, [s.cache for s in streams], [s.feed for s in streams], pad_id)
    batch_cache = batch.cache if batch.cache is not None else DynamicCache(config=model.config)
    ids, mask, positions = batch.input_ids, batch.attention_mask, batch.position_ids
    lengths, pads, width = batch.cache_lengths, batch.pads, batch.width
    # Only scored positions need the vocabulary projection (the largest single matmul here):
    # the rows' scored positions, packed one row after the other.
    scored_rows = torch.tensor([row for row, s in enumerate(streams) for _ in range(s.n_out)], device=device)
    scored_columns = torch.tensor([column for s in streams for column in s.scored_positions()], device=device)
    offsets = np.cumsum([0] + [s.n_out for s in streams])
    forward = dict(input_ids=ids, attention_mask=mask, position_ids=positions,
                   use_cache=True, output_hidden_states=hidden_states, logits_to_keep=0)
    captured = [row for row, s in enumerate(streams) if s.attention_spans is not None]
    attention: dict[int, np.ndarray] = {}
    if captured:
        # Capture from the earliest scored query of any captured row to the end of the padded
        # feed; each row then keeps its own scored queries.
        first_scored = {row: len(streams[row].feed) - streams[row].n_out for row in captured}
        n_query = width - min(first_scored.values())
        with AttentionCapture(model, n_query=n_query) as capture, \
                vocabulary_projection_at(model, scored_rows, scored_columns):
            out = compat.forward(model, batch_cache, **forward)
        by_layer = capture.probabilities()
        for row in captured:
            stream = streams[row]
            start = first_scored[row] - (width - n_query)
            # The stream's last token is scored but never fed: no key exists for it, clip spans.
            keys_end = lengths[row] + len(stream.feed)
            spans = {name: (min(a, keys_end), min(b, keys_end)) for name, (a, b) in stream.attention_spans.items()}
            attention[row] = torch.stack([
                sum_over_spans(by_layer[layer][row:row + 1, :, start:start + stream.n_out], spans,
                               kv_offset=pads[row])[0]
                for layer in sorted(by_layer)]).cpu().numpy()
    else:
        with vocabulary_projection_at(model, scored_rows, scored_columns):
            out = compat.forward(model, batch_cache, **forward)
    all_logprobs = torch.log_softmax(out.logits[0].float(), dim=-1)
    results = []
    for row, stream in enumerate(streams):
        end = len(stream.feed)
        window = slice(end - stream.n_out, end)
        logprobs = all_logprobs[offsets[row]:offsets[row + 1]]
        hidden = (torch.stack([layer[row, window].float() for layer in out.hidden_states])
                  if hidden_states else None)
        results.append(StreamOutput(logprobs, hidden, attention.get(row)))
    return results


def positions_in(streams: list[Stream]) -> int:
    """Token positions a score_streams call evaluates (identical streams count once)."""
    unique = {stream_key(s): len(s.feed) for s in streams}
    return sum(unique.values())


def chosen_logprobs(logprobs: torch.Tensor, tokens: list[int]) -> np.ndarray:
    index = torch.tensor(tokens, device=logprobs.device)[:, None]
    return logprobs.gather(1, index)[:, 0].cpu().numpy()


def compare(run: StreamOutput, reference: StreamOutput, tokens: list[int]) -> dict[str, np.ndarray]:
    """Per-position log P_ref(chosen), KL(run||ref), JS(run, ref) and per-layer hidden cosine."""
    kl, js = kl_js_prepared(run.prepared, reference.prepared)
    result = {
        "logprob": chosen_logprobs(reference.logprobs, tokens),
        "kl": kl.cpu().numpy(),
        "js": js.cpu().numpy(),
    }
    if run.hidden is not None and reference.hidden is not None:
        result["hidden_cosine"] = torch.nn.functional.cosine_similarity(
            run.hidden, reference.hidden, dim=-1).cpu().numpy()
    return result
