"""PyTorch SDPA that keeps grouped key/value heads grouped on CPU.

For a masked forward (a padded prefill, a teacher-forced scoring pass, a decode step of a padded
batch) transformers' ``sdpa_attention_forward`` repeats every key/value head for its query heads
before calling SDPA, copying the whole (cache-extended) key and value tensors three times over
for SmolLM2 in every layer: on CPU that copy costs more than the attention itself. PyTorch's
``enable_gqa`` computes the same result (bit-identical on CPU) without the copy. On CUDA a mask
with ``enable_gqa`` sends SDPA to its slow math kernel, so everything but the CPU case goes to
transformers' function unchanged.

On CUDA, :func:`without_cudnn_attention` keeps SDPA off its cuDNN backend. PyTorch picks cuDNN
for bfloat16/float16 (never for float32), and cuDNN builds an execution plan per input shape: a
decode step grows the key length by one, so every step of every layer pays a new plan. Profiled on
an H100 (SmolLM2-135M architecture, batch 1): ``aten::_cudnn_attention_forward`` took 1.37 ms of
CPU per call and 64% of all CPU time, and a decode step took 66 ms in bfloat16 against 27 ms in
float32, with transformers alone as with the engine (benchmarks/gpu_dtype_profile.py). The
memory-efficient kernel, which float32 already uses, has no per-shape plan.

:func:`single_query_attention` is a decode step's attention on CPU (one query position per row)
written as two grouped matrix products: it returns the attention probabilities it computed on the
way, so an attention capture does not compute them a second time (see ``measure.engine.step_metrics``).
"""

from __future__ import annotations

import contextlib

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

GROUPED_SDPA = "measure_sdpa"


def grouped_sdpa_forward(
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
    """An ``AttentionInterface`` function with the signature of transformers' SDPA one."""
    if (query.device.type == "cpu" and getattr(module, "num_key_value_groups", 1) > 1
            and attention_mask is not None and position_bias is None and kwargs.get("softcap") is None
            and kwargs.get("s_aux") is None and key.shape[-1] == value.shape[-1]):
        output = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, enable_gqa=True)
        return output.transpose(1, 2).contiguous(), None
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                  is_causal=is_causal, position_bias=position_bias, **kwargs)


def single_query_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                           attention_mask: torch.Tensor | None, scaling: float | None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of one query position per row: (output (batch, 1, heads, head_dim), probabilities
    (batch, heads, 1, kv_len)).

    query: (batch, heads, 1, head_dim); key, value: (batch, kv_heads, kv_len, head_dim), each key
    head serving ``heads // kv_heads`` consecutive query heads (transformers' ``repeat_kv`` order);
    attention_mask: boolean (True = attend) or additive, broadcastable to (batch, 1, 1, kv_len), or
    None. Grouping a key head's query heads as the rows of one product reads every key and value
    once, as SDPA's flash kernel does; measured on SmolLM2's shapes (126 rows, 207 positions, keys
    and values sliced from longer buffers, 30 layers' worth so that none stays in cache) it takes
    2.3 ms a layer against SDPA's 2.7, outputs within 6e-7 of SDPA's. Masked positions get
    the dtype's lowest score, not -inf, so a row with every position masked gets a uniform
    distribution (as eager attention) instead of NaN.
    """
    batch, heads, _, head_dim = query.shape
    kv_heads = key.shape[1]
    scale = scaling if scaling is not None else head_dim ** -0.5
    grouped = query.reshape(batch, kv_heads, heads // kv_heads, head_dim) * scale  # scaled here: fewer elements
    # The keys are the product's left operand, (kv_len, head_dim) against (head_dim, group): the
    # kernel streams them row by row where keys on the right are packed first. The cache's key
    # buffers are slices of longer preallocated ones, and this order read them 30% faster on CPU.
    scores = torch.matmul(key, grouped.transpose(-1, -2)).transpose(-1, -2).contiguous()  # (batch, kv_heads, group, kv_len)
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores.masked_fill_(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores.add_(attention_mask)
    probabilities = torch.softmax(scores, dim=-1)
    output = torch.matmul(probabilities, value)  # (batch, kv_heads, group, head_dim)
    return output.reshape(batch, 1, heads, head_dim), probabilities.reshape(batch, heads, 1, -1)


def without_cudnn_attention(device: torch.device | str):
    """A context in which SDPA on ``device`` may use any backend but cuDNN (see the module doc)."""
    if torch.device(device).type != "cuda":
        return contextlib.nullcontext()
    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def register_grouped_sdpa() -> str:
    """Register the function and its mask builder (transformers' SDPA masks) under GROUPED_SDPA."""
    AttentionInterface.register(GROUPED_SDPA, grouped_sdpa_forward)
    AttentionMaskInterface.register(GROUPED_SDPA, sdpa_mask)
    return GROUPED_SDPA


def use_grouped_sdpa(model: torch.nn.Module) -> None:
    """Switch a model loaded with ``sdpa`` to the grouped function; models that do not dispatch
    attention through transformers' AttentionInterface keep what they have."""
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return
    with contextlib.suppress(ValueError, AttributeError):  # models that cannot switch keep their own
        model.set_attn_implementation(register_grouped_sdpa())
