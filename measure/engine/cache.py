"""KV-cache edits: copy and crop, stack rows with left padding, replace the prompt region.

Every function returns a new ``DynamicCache`` and leaves its input untouched, so one forked
prefix can feed any number of conditions. Tensors in a cache layer have shape
``(batch, kv_heads, positions, head_dim)``.

Sliding-window layers (Mistral with ``sliding_window``, Qwen2 with ``use_sliding_window``, the
local layers of Gemma 3): transformers' ``DynamicCache(config=...)`` gives them a
``DynamicSlidingWindowLayer`` that drops every key older than the window. A dropped key cannot be
brought back, so a crop or fork further back than the window, or a prompt replacement, would be
wrong. The caches built here therefore keep every position in every layer (a plain
``DynamicLayer``; :func:`new_cache` for an empty one) and leave the window to the attention mask,
which transformers builds from the distance between query and key *indices* on the cache axis.
That distance equals the distance in positions as long as no padding sits between a row's real
positions: :func:`close_padding_gaps` restores that after a right-padded forward. A cache that did
drop positions is refused by :func:`kv_pairs` with a message naming the layer and its type.
"""

from __future__ import annotations

import inspect

import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer, DynamicSlidingWindowLayer, get_layer_types_and_kwargs

#: Layer types whose cache is plain per-position keys and values (the window lives in the mask).
ATTENTION_LAYER_TYPES = ("full_attention", "sliding_attention", "chunked_attention")


class UnsupportedCache(ValueError):
    """The model's cache cannot be edited position by position; the message names the layer type."""


def layer_types(config) -> list[str]:
    """The cache layer type of each decoder layer, as transformers' DynamicCache would pick it."""
    types, _ = get_layer_types_and_kwargs(config.get_text_config(decoder=True))
    return list(types)


def has_sliding_layers(config) -> bool:
    return any(kind != "full_attention" for kind in layer_types(config))


def check_editable(config) -> list[str]:
    """The layer types, after refusing models whose layers keep anything but per-position KV."""
    types = layer_types(config)
    odd = sorted({kind for kind in types if kind not in ATTENTION_LAYER_TYPES})
    if odd:
        first = types.index(odd[0])
        raise UnsupportedCache(
            f"layer {first} has cache layer type {odd[0]!r} ({type(config).__name__}): its cache holds a recurrent "
            "state, shared or indexed keys, not one key and value per position, so the cache edits "
            "(crop, fork, append, prompt replacement) cannot be done exactly; "
            f"supported types: {', '.join(ATTENTION_LAYER_TYPES)}")
    return types


def new_cache(config) -> DynamicCache:
    """An empty cache that keeps every position in every layer, sliding-window layers included.

    Use it instead of ``DynamicCache(config=config)`` wherever a cache may later be cropped,
    forked or edited: the windowed layer type transformers picks would drop positions.
    """
    types = check_editable(config)
    return DynamicCache(ddp_cache_data=[(None, None)] * len(types)) if types else DynamicCache()


def kv_head_shape(model: torch.nn.Module) -> tuple[int, int, int]:
    """``(layers, kv_heads, head_dim)`` of a model's KV cache: grouped-query models cache fewer
    heads than they attend with (``num_key_value_heads``; all heads when the config has none)."""
    config = model.config.get_text_config(decoder=True)
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return config.num_hidden_layers, heads, head_dim


def kv_pairs(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each layer's (keys, values), every position of the stream in every layer.

    Refuses a cache whose sliding-window layer has dropped positions (built by
    ``DynamicCache(config=...)`` and fed past its window): edits of it would silently be wrong.
    """
    pairs = []
    for index, layer in enumerate(cache.layers):
        if isinstance(layer, DynamicSlidingWindowLayer) and layer.is_initialized \
                and layer.keys.shape[-2] < layer.cumulative_length:
            raise UnsupportedCache(
                f"cache layer {index} is a {type(layer).__name__} (sliding_attention, window {layer.sliding_window}) "
                f"that kept only the last {layer.keys.shape[-2]} of its {layer.cumulative_length} positions; "
                "a cache to crop, fork or edit must keep every position: build it with measure.engine.cache.new_cache(config) "
                "instead of DynamicCache(config=config)")
        if not hasattr(layer, "keys") or (layer.is_initialized and layer.keys is None):
            raise UnsupportedCache(f"cache layer {index} is a {type(layer).__name__}, which holds no per-position keys")
        pairs.append((layer.keys, layer.values))
    return pairs


def kv_length(cache: DynamicCache | None) -> int:
    return 0 if cache is None else cache.get_seq_length()


def build_cache(pairs, config) -> DynamicCache:
    """A cache holding the given per-layer (keys, values), every position kept in every layer.

    ``config`` is checked, not used to pick layer types: the windowed layer transformers would
    pick for a sliding-window layer keeps only its last ``window - 1`` positions.
    """
    pairs = list(pairs)
    if config is not None:
        check_editable(config)
    lengths = {keys.shape[-2] for keys, _ in pairs if keys is not None}
    if len(lengths) > 1:
        raise UnsupportedCache(f"cache layers hold different numbers of positions ({sorted(lengths)}): "
                               "a layer dropped positions (a sliding-window layer?) and cannot be edited")
    return DynamicCache(ddp_cache_data=pairs)


def crop_copy(cache: DynamicCache, length: int, config) -> DynamicCache:
    """A copy holding the first ``length`` positions.

    A copy, not ``DynamicCache.crop``: crop edits in place and ``crop(0)`` is a no-op upstream,
    so forking the same prefix for several conditions needs independent tensors.
    """
    if not 0 < length <= kv_length(cache):
        raise ValueError(f"cannot crop a cache of {kv_length(cache)} positions to {length}")
    return build_cache(((k[:, :, :length].clone(), v[:, :, :length].clone()) for k, v in kv_pairs(cache)), config)


def stack_left_padded(caches: list[DynamicCache], config, extra: int = 0,
                      spare_rows: int = 0) -> tuple[Cache, list[int]]:
    """Stack single-row caches into one batch, left-padding shorter rows with zeros.

    Returns the batch cache and each row's number of padding positions; the caller masks them
    out and keeps each row's own position ids (padding occupies no RoPE positions). With
    ``extra`` > 0 the batch is written straight into preallocated layers with room for ``extra``
    more positions (one copy of every row instead of a stack and then a copy into the buffers),
    and ``spare_rows`` rows more (see ``PreallocatedLayer``).
    """
    if spare_rows and extra <= 0:
        raise ValueError("spare rows need a preallocated cache: give extra > 0")
    lengths = [kv_length(cache) for cache in caches]
    longest = max(lengths)
    pads = [longest - length for length in lengths]
    rows = [kv_pairs(cache) for cache in caches]  # refuses caches that dropped positions
    layers = []
    for layer_index in range(len(rows[0])):
        buffers = []
        for slot in (0, 1):  # keys, values
            like = rows[0][layer_index][slot]
            buffer = like.new_empty(len(caches) + spare_rows, like.shape[1], longest + extra, like.shape[-1])
            for row, (pairs, pad) in enumerate(zip(rows, pads)):
                # Padding is masked out, but must be finite: a masked 0 * NaN would still be NaN.
                buffer[row, :, :pad].zero_()
                buffer[row, :, pad:longest] = pairs[layer_index][slot][0]
            buffers.append(buffer)
        layers.append(buffers)
    if extra > 0:
        return Cache(layers=[PreallocatedLayer.over(keys, values, longest, len(caches))
                             for keys, values in layers]), pads
    return build_cache(((keys, values) for keys, values in layers), config), pads


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def rotary_takes_layer_type(rotary_embedding: torch.nn.Module) -> bool:
    """True for rotary modules with one frequency set per layer type (Gemma 3: local layers use
    theta 10k, global layers 1M), whose forward takes the layer type."""
    return "layer_type" in inspect.signature(rotary_embedding.forward).parameters


def shift_rotary_keys(keys: torch.Tensor, shift: int, rotary_embedding: torch.nn.Module,
                      layer_type: str | None = None) -> torch.Tensor:
    """Move RoPE-rotated keys by ``shift`` positions.

    RoPE rotates a key at position p by the angle p * theta_i, so a further rotation by
    shift * theta_i puts it at p + shift exactly; cos/sin come from the model's own rotary
    module (so frequency scaling such as llama3's is respected) with its output scaling undone.
    ``layer_type`` picks the frequencies of rotary modules that have one set per layer type.
    """
    if shift == 0:
        return keys
    position = torch.tensor([[shift]], device=keys.device)
    probe = keys.new_zeros(1, 1, keys.shape[-1])
    if rotary_takes_layer_type(rotary_embedding):
        if layer_type is None:
            raise ValueError(f"{type(rotary_embedding).__name__} has frequencies per layer type: pass layer_type")
        cos, sin = rotary_embedding(probe, position, layer_type)
        scaling = getattr(rotary_embedding, f"{layer_type}_attention_scaling", 1.0)
        cos = (cos / scaling).to(keys.dtype)[0, 0]
        sin = (sin / scaling).to(keys.dtype)[0, 0]
        return keys * cos + rotate_half(keys) * sin
    cos, sin = rotary_embedding(probe, position)
    scaling = getattr(rotary_embedding, "attention_scaling", 1.0)
    cos = (cos / scaling).to(keys.dtype)[0, 0]
    sin = (sin / scaling).to(keys.dtype)[0, 0]
    return keys * cos + rotate_half(keys) * sin


def replace_prompt_region(
    stale: DynamicCache,
    old_prompt_length: int,
    fresh_prompt: DynamicCache,
    new_prompt_length: int,
    keep_until: int,
    rotary_embedding: torch.nn.Module,
    config,
) -> DynamicCache:
    """Fresh KV of the new prompt, followed by the stale KV of the generated tokens.

    ``stale`` holds old prompt + generated tokens; positions ``old_prompt_length:keep_until``
    (generated tokens computed under the old prompt) are kept and their keys re-rotated by the
    change in prompt length, so they sit right after the new prompt (with the frequencies of each
    layer's type where the model has several, as Gemma 3 does).
    """
    shift = new_prompt_length - old_prompt_length
    types = check_editable(config)
    layers = []
    for layer_type, (stale_key, stale_value), (fresh_key, fresh_value) in zip(
            types, kv_pairs(stale), kv_pairs(fresh_prompt)):
        kept_key = shift_rotary_keys(stale_key[:, :, old_prompt_length:keep_until], shift, rotary_embedding,
                                     layer_type=layer_type)
        kept_value = stale_value[:, :, old_prompt_length:keep_until]
        layers.append((
            torch.cat([fresh_key[:, :, :new_prompt_length], kept_key], dim=2),
            torch.cat([fresh_value[:, :, :new_prompt_length], kept_value], dim=2),
        ))
    return build_cache(layers, config)


def rotary_embedding_of(model: torch.nn.Module) -> torch.nn.Module | None:
    """The model's shared rotary-embedding module, or None for absolute-position models."""
    for name, module in model.named_modules():
        if name.endswith("rotary_emb"):
            return module
    return None


class PreallocatedLayer(DynamicLayer):
    """A cache layer that writes new positions into a buffer sized up front.

    ``DynamicLayer.update`` concatenates, copying the whole layer at every decode step: for a
    batch of 80 rows of SmolLM2 that is ~1 GB of copying per generated token. Here an update
    writes only the new positions; ``keys``/``values`` are views of the filled part, so every
    other cache method reads them as usual.

    The buffers may also hold more rows than are in use (``spare_rows``): a decode batch whose
    streams share rows until they are fed different tokens (measure.engine.decode) copies a row into a
    spare one when its streams part (``copy_rows``), without reallocating the batch.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, extra: int, spare_rows: int = 0):
        super().__init__()
        batch, heads, length, _ = keys.shape
        self.device = keys.device
        self._key_buffer = keys.new_empty(batch + spare_rows, heads, length + extra, keys.shape[-1])
        self._value_buffer = values.new_empty(batch + spare_rows, values.shape[1], length + extra, values.shape[-1])
        self._key_buffer[:batch, :, :length] = keys
        self._value_buffer[:batch, :, :length] = values
        self._length = length
        self._rows = batch
        self.is_initialized = True
        self._expose()

    @classmethod
    def over(cls, key_buffer: torch.Tensor, value_buffer: torch.Tensor, length: int,
             rows: int | None = None) -> PreallocatedLayer:
        """A layer using the given buffers as they are, their first ``rows`` rows (default: all)
        and ``length`` positions filled."""
        layer = cls.__new__(cls)
        DynamicLayer.__init__(layer)
        layer.device = key_buffer.device
        layer._key_buffer, layer._value_buffer, layer._length = key_buffer, value_buffer, length
        layer._rows = key_buffer.shape[0] if rows is None else rows
        layer.is_initialized = True
        layer._expose()
        return layer

    def _expose(self) -> None:
        self.keys = self._key_buffer[:self._rows, :, :self._length]
        self.values = self._value_buffer[:self._rows, :, :self._length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        end = self._length + key_states.shape[-2]
        if end > self._key_buffer.shape[-2]:
            raise RuntimeError(f"preallocated cache full: {end} positions needed, {self._key_buffer.shape[-2]} allocated")
        self._key_buffer[:self._rows, :, self._length:end] = key_states
        self._value_buffer[:self._rows, :, self._length:end] = value_states
        self._length = end
        self._expose()
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        # Copy the filled positions only: the free room of the buffers holds nothing yet.
        self._key_buffer = self._selected(self._key_buffer, indices)
        self._value_buffer = self._selected(self._value_buffer, indices)
        self._rows = len(indices)
        self._expose()

    def _selected(self, buffer: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        kept = buffer.new_empty(len(indices), *buffer.shape[1:])
        torch.index_select(buffer[:self._rows, :, :self._length], 0, indices, out=kept[:, :, :self._length])
        return kept

    def move_rows(self, sources: list[int], targets: list[int], rows: int) -> None:
        """Move rows ``sources`` into rows ``targets`` (their filled positions) and keep the first
        ``rows`` rows: dropping finished rows copies only the live rows behind the first hole."""
        if sources:
            source = torch.tensor(sources, device=self._key_buffer.device)
            target = torch.tensor(targets, device=self._key_buffer.device)
            for buffer in (self._key_buffer, self._value_buffer):
                filled = buffer[:, :, :self._length]
                filled.index_copy_(0, target, filled.index_select(0, source))
        self._rows = rows
        self._expose()

    def copy_rows(self, sources: list[int]) -> None:
        """Append a copy of each row in ``sources`` (their filled positions) as new rows."""
        end = self._rows + len(sources)
        if end > self._key_buffer.shape[0]:
            raise RuntimeError(f"preallocated cache full: {end} rows needed, {self._key_buffer.shape[0]} allocated")
        index = torch.tensor(sources, device=self._key_buffer.device)
        for buffer in (self._key_buffer, self._value_buffer):
            buffer[self._rows:end, :, :self._length] = buffer[:self._rows, :, :self._length].index_select(0, index)
        self._rows = end
        self._expose()

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError("crop takes a negative count of positions to remove")
        self._length += tokens_to_remove
        self._expose()


def empty_like(reference: DynamicCache, config) -> DynamicCache:
    """A one-row cache of zero positions shaped like ``reference`` (to stack with it)."""
    return build_cache(((k[:1, :, :0], v[:1, :, :0]) for k, v in kv_pairs(reference)), config)


def preallocated_empty(batch_size: int, like: torch.nn.Module, capacity: int, spare_rows: int = 0) -> Cache:
    """An empty preallocated cache for ``like``'s layers, room for ``capacity`` positions (and
    ``spare_rows`` rows more than ``batch_size``)."""
    check_editable(like.config)
    layers, heads, head_dim = kv_head_shape(like)
    parameter = next(like.parameters())
    empty = parameter.new_empty(batch_size, heads, 0, head_dim)
    return Cache(layers=[PreallocatedLayer(empty, empty, capacity, spare_rows) for _ in range(layers)])


def combine_right_aligned(parts: list[tuple[Cache, torch.Tensor]], length: int, rows: int, positions: int) -> Cache:
    """Rows ``index`` of each ``(cache, index)`` of ``parts``, in that order, in one preallocated
    cache of ``rows`` rows and ``positions`` positions, every part's filled positions ending at
    ``length`` (zeros before them: padding, which the caller masks out). Only filled positions
    are copied."""
    layers = []
    for layer_index in range(len(parts[0][0].layers)):
        buffers = []
        for name in ("keys", "values"):
            like = getattr(parts[0][0].layers[layer_index], name)
            buffer = like.new_empty(rows, like.shape[1], positions, like.shape[-1])
            row = 0
            for cache, index in parts:
                source = getattr(cache.layers[layer_index], name)
                start = length - source.shape[2]
                # Padding is masked out, but must be finite: a masked 0 * NaN would still be NaN.
                buffer[row:row + len(index), :, :start].zero_()
                torch.index_select(source, 0, index, out=buffer[row:row + len(index), :, start:length])
                row += len(index)
            buffers.append(buffer)
        layers.append(PreallocatedLayer.over(*buffers, length, rows=row))
    return Cache(layers=layers)


def move_rows(cache: Cache, sources: list[int], targets: list[int], rows: int) -> None:
    """Move rows ``sources`` of a preallocated cache into rows ``targets``, keeping ``rows`` rows."""
    for layer in cache.layers:
        layer.move_rows(sources, targets, rows)


def copy_rows(cache: Cache, sources: list[int]) -> None:
    """Append a copy of rows ``sources`` of a preallocated cache as its next rows."""
    for layer in cache.layers:
        layer.copy_rows(sources)


def close_padding_gaps(cache: Cache, attention_mask: torch.Tensor) -> tuple[Cache, torch.Tensor]:
    """Move each row's kept positions to the right end of the cache axis, padding all to the left.

    After a forward over right-padded feeds a row reads [left padding][cache][feed][right padding];
    the next decoded token lands after the right padding. transformers measures a sliding window
    in cache-axis indices, so a gap inside a row would push keys out of the window too early.
    Returns the cache (edited in place: the batch is transient) and the mask matching it; rows keep
    their order of positions, and their position ids are unchanged (padding takes none).
    """
    mask = attention_mask.bool()
    length = mask.shape[1]
    # A stable sort of "kept" puts padding first and keeps the order of each row's positions.
    order = torch.sort(mask.to(torch.int8), dim=1, stable=True).indices
    for layer in cache.layers:
        if isinstance(layer, PreallocatedLayer):
            rows = layer._rows
            for buffer in (layer._key_buffer, layer._value_buffer):
                index = order[:, None, :, None].expand(-1, buffer.shape[1], -1, buffer.shape[-1])
                buffer[:rows, :, :length] = buffer[:rows, :, :length].gather(2, index)
            layer._expose()
        else:
            for name in ("keys", "values"):
                tensor = getattr(layer, name)
                index = order[:, None, :, None].expand(-1, tensor.shape[1], -1, tensor.shape[-1])
                setattr(layer, name, tensor.gather(2, index))
    return cache, torch.gather(attention_mask, 1, order)
