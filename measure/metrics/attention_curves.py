"""Curves and summaries from ``RunResult.attention_mass`` (captured by ``measure.engine.attention``).

``attention_mass`` has shape ``(n_layers, n_heads, n_after, 4)``: for each query generated after
the change, the attention probability summed over each span of the run's stream, in the order
``SPAN_NAMES = (prompt, prefix, inserted, after)`` (prompt = the problem prompt, prefix = y[:t0],
inserted = the update text X, after = tokens generated after X). Every curve here already starts
at the change, so latency functions are called on them with ``t0=0``.

Attention ratio (the seed's "attention onto the new information relative to before"): for each
query, the attention *per token* onto the inserted span divided by the attention per token onto
everything that existed before the injection (prompt + prefix)::

    ratio_t = (m_inserted / |X|) / ((m_prompt + m_prefix) / (|prompt| + |prefix|))

with masses averaged over layers and heads. Normalising by span length makes uniform attention
give ratio 1, so ratio > 1 means the update text draws more attention per token than the
pre-change context. Undefined (NaN -> None in summaries) when X is empty (ignore, oracle,
flush, partial) or no pre-change mass exists.
"""

from __future__ import annotations

import numpy as np

SPAN_INDEX = {"prompt": 0, "prefix": 1, "inserted": 2, "after": 3}


def span_mass(attention_mass, span: str = "inserted", layers=None) -> np.ndarray:
    """Mass onto ``span`` per query after the change, mean over (selected) layers and heads.

    ``(n_layers, n_heads, n_after, 4)`` -> ``(n_after,)``. The input is what
    :func:`measure.engine.attention.sum_over_spans` summed from the captured probabilities.
    """
    m = np.asarray(attention_mass, dtype=np.float64)
    if m.ndim != 4:
        raise ValueError(f"attention_mass must be (n_layers, n_heads, n_after, 4), got {m.shape}")
    if layers is not None:
        m = m[list(layers)]
    return m[..., SPAN_INDEX[span]].mean(axis=(0, 1))


def span_lengths(spans: dict[str, tuple[int, int]]) -> dict[str, int]:
    """``{span: end - start}`` from ``RunResult.spans``; missing spans count 0."""
    return {name: max(0, int(e) - int(s)) for name, (s, e) in spans.items()}


def attention_ratio(attention_mass, spans: dict[str, tuple[int, int]], layers=None) -> np.ndarray:
    """Per-query attention ratio ``(n_after,)`` as defined in the module docstring (NaN if undefined)."""
    lengths = span_lengths(spans)
    n_x = lengths.get("inserted", 0)
    n_before = lengths.get("prompt", 0) + lengths.get("prefix", 0)
    m_x = span_mass(attention_mass, "inserted", layers)
    m_before = span_mass(attention_mass, "prompt", layers) + span_mass(attention_mass, "prefix", layers)
    if n_x == 0 or n_before == 0:
        return np.full(m_x.shape, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (m_x / n_x) / (m_before / n_before)
    ratio[~np.isfinite(ratio)] = np.nan
    return ratio
