"""How many rows fit in memory: KV-cache size per token and a batch-size cap from free memory."""

from __future__ import annotations

import os

import torch

from measure.engine.cache import kv_head_shape


def kv_bytes_per_token(model: torch.nn.Module) -> int:
    """Bytes of keys and values one token position occupies across all layers, one row."""
    layers, heads, head_dim = kv_head_shape(model)
    element = next(model.parameters()).element_size()
    return 2 * layers * heads * head_dim * element


def row_bytes(model: torch.nn.Module, positions: int) -> int:
    """Peak bytes one decode row needs: its KV cache; its prefill activations (hidden states and
    MLP intermediates for every position, fp32) and the prefill's per-layer hidden states (kept for
    the comparison with the row's references); a step's logits, log-probabilities and the
    probabilities the comparisons take. Measured by ``measure bench`` (decode memory per row)."""
    config = model.config.get_text_config(decoder=True)
    intermediate = getattr(config, "intermediate_size", None) or 4 * config.hidden_size
    activations = 4 * positions * (4 * config.hidden_size + 3 * intermediate)
    layer_states = 4 * positions * (config.num_hidden_layers + 1) * config.hidden_size
    return kv_bytes_per_token(model) * positions + activations + layer_states + 6 * 4 * config.vocab_size


def free_bytes(device: torch.device | str) -> int:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def batch_cap(model: torch.nn.Module, positions: int, fraction: float = 0.5) -> int:
    """Rows that fit in ``fraction`` of the free memory when each holds ``positions`` tokens.

    Half by default: the model's own activations for a batched forward and the teacher-forced
    scoring that follows need room too, and the caches of the forked prefixes stay alive.
    """
    return max(1, int(fraction * free_bytes(model.device) // row_bytes(model, positions)))
