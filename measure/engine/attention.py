"""Attention probabilities from selected query rows, captured without eager attention.

The model keeps running on PyTorch SDPA. Inside an :class:`AttentionCapture` context the model's
attention implementation is switched to a registered custom function that

1. computes the layer's output with ``measure.model.sdpa.grouped_sdpa_forward`` (so logits are
   exactly the plain-SDPA logits), and
2. only for the layers asked for, and only for the last ``n_query`` query rows, recomputes
   ``softmax(Q K^T * scaling + mask)`` from the post-RoPE query and the (cache-extended) key the
   function receives, and stores it.

The cost is one extra ``(n_query x kv_len)`` score matrix per captured layer and head, instead of
the full ``(q_len x kv_len)`` matrices eager attention materialises for every layer.

On exit (also after an exception) the previous implementation is restored.

What it does not know: which tokens are padding or which span is which. Rows of the returned
probabilities index the key/value positions of the forward (cache included, left padding
included); :func:`sum_over_spans` maps token spans of each row onto them, and
:func:`left_padding` gives each row's offset from a 2D attention mask.

Padding query rows (all keys masked) get a uniform distribution, as in eager attention; they
carry no meaning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from measure.model.sdpa import grouped_sdpa_forward

CAPTURE_ATTENTION = "measure_capture"

# id(attention module) -> the capture recording it. Filled in AttentionCapture.__enter__, emptied
# in its finally: outside a capture the registered function is plain SDPA.
_ACTIVE: dict[int, AttentionCapture] = {}


def register_capture_attention(name: str = CAPTURE_ATTENTION) -> str:
    """Register the capturing attention function and its mask function under ``name``; idempotent.

    Both registrations are needed: masks are built per implementation name, and a name without a
    registered mask function silently gets no mask (multi-token cached forwards then go wrong).
    """
    AttentionInterface.register(name, capture_attention_forward)
    AttentionMaskInterface.register(name, sdpa_mask)
    return name


def capture_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    position_bias: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """An ``AttentionInterface`` function: SDPA output, plus probabilities for active captures.

    query: (batch, heads, q_len, head_dim), post-RoPE; key, value: (batch, kv_heads, kv_len, head_dim);
    attention_mask: (batch | 1, 1 | heads, q_len, kv_len) boolean (True = attend) or additive, or None.
    """
    output = grouped_sdpa_forward(
        module, query, key, value, attention_mask,
        dropout=dropout, scaling=scaling, is_causal=is_causal, position_bias=position_bias, **kwargs,
    )
    capture = active_capture(module)
    if capture is not None:
        capture.record(module, query, key, attention_mask, scaling, is_causal, position_bias)
    return output


def active_capture(module: torch.nn.Module) -> AttentionCapture | None:
    """The capture recording ``module`` now, or None: for other attention functions that record."""
    return _ACTIVE.get(id(module))


def attention_probabilities(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    attention_mask: torch.Tensor | None,
    n_query: int,
    scaling: float | None = None,
    is_causal: bool | None = None,
    position_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """softmax(Q K^T * scaling + mask) for the last ``n_query`` query rows, in float32.

    Mirrors what ``sdpa_attention_forward`` computes: GQA by repeating key heads, a boolean or
    additive mask, and when the mask is None, SDPA's own rule (causal from the top-left when
    ``q_len > 1`` and the module is causal, no mask for a single query row).

    Returns: (batch, heads, min(n_query, q_len), kv_len).
    """
    batch, heads, q_len, head_dim = query.shape
    kv_len = key.shape[2]
    n = min(n_query, q_len)
    q = query[:, :, q_len - n :, :].float()
    k = key.float()
    if k.shape[1] != heads:
        k = k.repeat_interleave(heads // k.shape[1], dim=1)
    scale = scaling if scaling is not None else head_dim**-0.5
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale  # (batch, heads, n, kv_len)

    if attention_mask is not None:
        mask = attention_mask[:, :, q_len - n :, :kv_len]
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + mask.float()
    else:
        causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
        if causal and q_len > 1:
            rows = torch.arange(q_len - n, q_len, device=scores.device)[:, None]
            cols = torch.arange(kv_len, device=scores.device)[None, :]
            scores = scores.masked_fill(cols > rows, torch.finfo(scores.dtype).min)
    if position_bias is not None:
        scores = scores + position_bias[..., q_len - n :, :kv_len].float()
    return torch.softmax(scores, dim=-1)


def _attention_modules(model: torch.nn.Module) -> dict[int, torch.nn.Module]:
    """Layer index -> self-attention module, for modules that carry a ``layer_idx``."""
    found: dict[int, torch.nn.Module] = {}
    for module in model.modules():
        layer_idx = getattr(module, "layer_idx", None)
        if isinstance(layer_idx, int) and "attention" in type(module).__name__.lower():
            if getattr(module, "is_cross_attention", False):
                continue
            found.setdefault(layer_idx, module)
    return found


class AttentionCapture:
    """Context manager recording attention probabilities of the last ``n_query`` query rows.

    >>> with AttentionCapture(model, layers=[0, 3], n_query=8) as capture:
    ...     out = model(input_ids=ids, attention_mask=mask, position_ids=pos)
    >>> probs = capture.probabilities()  # {layer: (batch, heads, min(8, q_len), kv_len)}

    layers: layer indices to record, None for all. Each forward inside the context overwrites the
    previous forward's record of a layer (call ``probabilities()`` after each forward to keep them).
    """

    def __init__(self, model: torch.nn.Module, layers: Sequence[int] | None = None, n_query: int = 1,
                 name: str = CAPTURE_ATTENTION):
        if n_query < 1:
            raise ValueError(f"n_query must be at least 1, got {n_query}")
        self.model = model
        self.n_query = int(n_query)
        self.name = name
        modules = _attention_modules(model)
        if not modules:
            raise ValueError(
                f"{type(model).__name__} has no attention modules with a layer_idx; "
                "AttentionCapture cannot tell which layer is which"
            )
        self.layers = sorted(modules) if layers is None else sorted({int(layer) for layer in layers})
        missing = [layer for layer in self.layers if layer not in modules]
        if missing:
            raise ValueError(f"layers {missing} not in the model (it has layers {min(modules)}..{max(modules)})")
        self._modules = {layer: modules[layer] for layer in self.layers}
        self._probs: dict[int, torch.Tensor] = {}
        self._previous: str | None = None
        self._active = False

    def __enter__(self) -> AttentionCapture:
        if self._active:
            raise RuntimeError("this AttentionCapture is already active")
        register_capture_attention(self.name)
        config = self.model.config
        self._previous = config._attn_implementation
        if self._previous == self.name or any(id(m) in _ACTIVE for m in self._modules.values()):
            raise RuntimeError("an AttentionCapture is already active on this model; captures do not nest")
        if not hasattr(self.model, "set_attn_implementation"):
            raise TypeError(f"{type(self.model).__name__} is not a transformers PreTrainedModel")
        self._probs.clear()
        try:
            self.model.set_attn_implementation(self.name)
            if config._attn_implementation != self.name:
                raise RuntimeError(
                    f"{type(self.model).__name__} kept attention implementation {config._attn_implementation!r}: "
                    "it does not dispatch attention through transformers' AttentionInterface, so its "
                    "attention probabilities cannot be captured without eager attention"
                )
            for module in self._modules.values():
                _ACTIVE[id(module)] = self
            self._active = True
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._restore()

    def _restore(self) -> None:
        try:
            for module in self._modules.values():
                if _ACTIVE.get(id(module)) is self:
                    del _ACTIVE[id(module)]
        finally:
            self._active = False
            if self._previous is not None and self.model.config._attn_implementation != self._previous:
                self.model.set_attn_implementation(self._previous)

    def record(self, module, query, key, attention_mask, scaling, is_causal, position_bias) -> None:
        """Compute and keep the probabilities of ``module``'s forward from its attention inputs."""
        with torch.no_grad():
            probs = attention_probabilities(
                module, query.detach(), key.detach(), attention_mask, self.n_query,
                scaling=scaling, is_causal=is_causal, position_bias=position_bias,
            )
        self._probs[module.layer_idx] = probs

    def keep(self, module, probabilities: torch.Tensor) -> None:
        """Keep probabilities an attention function already computed for every row of the batch:
        (batch, heads, q_len, kv_len), softmax(Q K^T * scaling + mask) as :meth:`record` would."""
        self._probs[module.layer_idx] = probabilities[:, :, -self.n_query:].detach()

    def probabilities(self) -> dict[int, torch.Tensor]:
        """{layer: (batch, heads, min(n_query, q_len), kv_len)} float32, of the latest forward.

        Raises if a requested layer recorded nothing: no forward ran, or the model's attention
        does not go through transformers' AttentionInterface.
        """
        missing = [layer for layer in self.layers if layer not in self._probs]
        if missing:
            raise RuntimeError(
                f"no attention recorded for layers {missing}: run a forward inside the context; if one ran, "
                f"{type(self.model).__name__}'s attention does not dispatch through transformers' AttentionInterface"
            )
        return {layer: self._probs[layer] for layer in self.layers}

    def clear(self) -> None:
        self._probs.clear()


def left_padding(attention_mask: torch.Tensor) -> torch.Tensor:
    """Number of leading zeros of each row of a 2D (batch, kv_len) mask: the kv offset of a left-padded row."""
    return (attention_mask.long().cumsum(dim=-1) == 0).sum(dim=-1)


def sum_over_spans(
    probs: torch.Tensor,
    spans: Mapping[str, tuple[int, int]] | Sequence[Mapping[str, tuple[int, int]]],
    kv_offset: int | Sequence[int] | torch.Tensor = 0,
) -> torch.Tensor:
    """Attention mass of each query row on each span: the probabilities summed over the span's
    key/value positions (``measure.metrics.attention_curves.span_mass`` then averages the result,
    kept per layer as ``RunResult.attention_mass``, into one span's curve).

    probs: (batch, heads, q, kv_len) probabilities of one layer.
    spans: one dict {name: (start, end)} per batch row (or one dict for all rows); start/end are
        token positions of the row's unpadded sequence, end exclusive. Every row must have the
        same names; the output's last axis follows the order of the first row's dict.
    kv_offset: per row (or one int), where position 0 of that row sits on the kv axis (its left
        padding, see :func:`left_padding`).

    Returns: (batch, heads, q, n_spans), float of probs' dtype.
    """
    batch, _, _, kv_len = probs.shape
    per_row = [spans] * batch if isinstance(spans, Mapping) else list(spans)
    if len(per_row) != batch:
        raise ValueError(f"got spans for {len(per_row)} rows, probabilities have batch {batch}")
    if isinstance(kv_offset, torch.Tensor):
        offsets = [int(v) for v in kv_offset.reshape(-1).tolist()]
    elif isinstance(kv_offset, int):
        offsets = [kv_offset] * batch
    else:
        offsets = [int(v) for v in kv_offset]
    if len(offsets) != batch:
        raise ValueError(f"got {len(offsets)} kv offsets, probabilities have batch {batch}")
    names = list(per_row[0])
    indicator = torch.zeros(batch, kv_len, len(names), dtype=probs.dtype, device=probs.device)
    for row, (row_spans, offset) in enumerate(zip(per_row, offsets)):
        if set(row_spans) != set(names):
            raise ValueError(f"row {row} has spans {sorted(row_spans)}, row 0 has {sorted(names)}")
        for column, name in enumerate(names):
            start, end = (int(v) for v in row_spans[name])
            if not 0 <= start <= end or offset + end > kv_len or offset < 0:
                raise ValueError(
                    f"span {name!r} ({start}, {end}) of row {row} at offset {offset} is outside kv length {kv_len}"
                )
            indicator[row, offset + start : offset + end, column] = 1
    return torch.einsum("bhqk,bks->bhqs", probs, indicator)
