"""Float32 CPU linear layers on packed oneDNN weights (measure.model.cpu_linear): same outputs as
PyTorch's own within float32 round-off, chosen only where they agree, and recorded."""

from __future__ import annotations

import pytest
import torch

from measure.engine.decode import DecodeRow, decode_rows
from measure.model import cpu_linear
from measure.model.load import load_model

PROMPT = [5, 17, 3, 42, 8, 99, 23, 7]


def logits(loaded, ids=PROMPT):
    with torch.inference_mode():
        return loaded.model(input_ids=torch.tensor([ids, ids[::-1]])).logits


def test_this_torch_has_the_packed_linear_ops():
    # CI installs torch 2.13 (CPU): the engine's speed figures assume these ops.
    assert cpu_linear.available()


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_packed_layers_compute_what_torch_computes(family, monkeypatch):
    packed = load_model(f"tiny:{family}")
    monkeypatch.setenv(cpu_linear.ENVIRONMENT, "aten")
    plain = load_model(f"tiny:{family}")
    assert (packed.linear_kernel, plain.linear_kernel) == ("onednn", "aten")
    assert packed.info()["linear_kernel"] == "onednn"
    switched = [m for m in packed.model.modules() if type(m) is torch.nn.Linear and "forward" in m.__dict__]
    assert switched and all("forward" not in m.__dict__ for m in plain.model.modules())
    a, b = logits(packed), logits(plain)
    assert torch.allclose(a, b, rtol=0, atol=1e-5 * float(b.abs().max())), float((a - b).abs().max())


def test_greedy_decode_with_packed_layers_keeps_the_tokens(monkeypatch):
    """The output projection's gather hook (measure.engine.batching) still runs on a packed head."""
    packed = load_model("tiny:llama")
    monkeypatch.setenv(cpu_linear.ENVIRONMENT, "aten")
    plain = load_model("tiny:llama")
    rows = lambda: [DecodeRow(None, PROMPT, 12), DecodeRow(None, PROMPT[:5], 12)]  # noqa: E731
    got = decode_rows(packed.model, rows(), set(), 0)
    want = decode_rows(plain.model, rows(), set(), 0)
    assert [d.tokens for d in got] == [d.tokens for d in want]
    for g, w in zip(got, want):
        assert max(abs(x - y) for x, y in zip(g.token_logprobs, w.token_logprobs)) < 1e-4


def test_layers_stay_as_they_are_when_the_packed_result_disagrees(monkeypatch):
    monkeypatch.setattr(cpu_linear, "onednn_linear", lambda x, packed, bias: torch.zeros(1))
    loaded = load_model("tiny:llama")
    assert loaded.linear_kernel == "aten"
    assert all("forward" not in m.__dict__ for m in loaded.model.modules())


def test_layers_stay_as_they_are_without_memory_for_the_packed_copy(monkeypatch):
    monkeypatch.setattr(cpu_linear, "free_bytes", lambda device: 1000)
    assert load_model("tiny:llama").linear_kernel == "aten"


def test_bfloat16_models_keep_their_layers():
    assert load_model("tiny:llama", dtype="bfloat16").linear_kernel == "aten"
