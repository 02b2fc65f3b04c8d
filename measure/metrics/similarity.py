"""Hidden-state similarity between a run and a reference, from ``RunResult.hidden_cosine``.

``hidden_cosine[ref]`` has shape ``(n_layers + 1, n_generated)``: row 0 is the embedding output,
row i the output of layer i; each entry is the cosine between the run's and the reference's
hidden state at the same generated position. These helpers reduce it over positions after t0.
"""

from __future__ import annotations

import numpy as np

from measure.metrics.windows import WINDOWS, after_t0, window_means_rows


def layer_means(hidden_cosine, t0: int = 0) -> np.ndarray:
    """Mean cosine per layer over positions after t0: ``(n_layers + 1, n_gen)`` -> ``(n_layers + 1,)``.

    NaN for a layer with no (non-NaN) position after t0.
    """
    return window_means_rows(hidden_cosine, t0, windows=("all",))["all"]


def layer_window_means(hidden_cosine, t0: int = 0, windows=tuple(WINDOWS)) -> dict[str, np.ndarray]:
    """``{window: (n_layers + 1,)}`` per-layer window means (NaN for empty windows)."""
    return window_means_rows(hidden_cosine, t0, windows=windows)


def mean_over_layers(hidden_cosine, t0: int = 0, skip_embeddings: bool = True) -> np.ndarray:
    """Cosine per position after t0 averaged over layers: ``(n_layers + 1, n_gen)`` -> ``(n_after,)``.

    Row 0 (embeddings) is skipped by default: it only compares token embeddings, which are equal
    at aligned positions of the same token stream.
    """
    arr = after_t0(np.atleast_2d(hidden_cosine), t0)
    if skip_embeddings and arr.shape[0] > 1:
        arr = arr[1:]
    return np.nanmean(arr, axis=0) if arr.shape[1] else np.empty(0)
