"""The one transformers API difference inside the range we support (>=5.0,<6).

transformers renamed the forward argument and output field ``past_key_values`` to ``cache`` during
5.x (the old name stays, deprecated, until 5.40). The engine passes caches by whichever name the
loaded model's forward declares, so it runs on both sides of the rename (the GPU image we check
on carries 5.17, CI installs the latest 5.x).
"""

from __future__ import annotations

import functools
import inspect

from measure.model.sdpa import without_cudnn_attention


@functools.cache
def _cache_argument(model_class: type) -> str:
    parameters = inspect.signature(model_class.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def forward(model, cache, **inputs):
    """``model(**inputs)`` with ``cache`` passed under the name this transformers uses (and, on
    CUDA, SDPA kept off cuDNN: measure.model.sdpa.without_cudnn_attention says why)."""
    with without_cudnn_attention(model.device):
        return model(**{_cache_argument(type(model)): cache}, **inputs)


def returned_cache(output):
    """The cache a forward returned, under either name."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values
