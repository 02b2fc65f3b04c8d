"""Model loading: local folders, clear errors for what cannot be loaded, prompt formats."""

from __future__ import annotations

import numpy as np
import pytest

from measure.engine.engine import Engine, EngineConfig
from measure.model.load import ModelLoadError, load_model, uses_rotary_positions
from measure.model.tiny import TINY_FAMILIES, tiny_model
from measure.prompts import PromptFormat, inserted_ids, length_matched_ids
from measure.testing import example_pair


def test_a_saved_local_folder_loads_with_the_same_weights(tmp_path):
    model, tokenizer = tiny_model("qwen2")
    model.save_pretrained(tmp_path / "qwen")
    tokenizer.save_pretrained(tmp_path / "qwen")
    loaded = load_model(str(tmp_path / "qwen"))
    ids = tokenizer("Sarah has 5 apples.", return_tensors="pt").input_ids
    # The loaded model's linear layers run on oneDNN (measure.model.cpu_linear): float32 round-off apart.
    expected = model(ids).logits.detach().numpy()
    np.testing.assert_allclose(loaded.model(ids).logits.detach().numpy(), expected,
                               atol=1e-5 * float(np.abs(expected).max()))
    assert len(loaded.weights_sha256) == 64
    assert loaded.tokenizer.padding_side == "left"


def test_missing_gguf_file_is_named(tmp_path):
    with pytest.raises(ModelLoadError, match="GGUF file not found: .*nothing.gguf"):
        load_model(str(tmp_path / "nothing.gguf"))


def test_folder_without_weights_is_named(tmp_path):
    (tmp_path / "empty-model").mkdir()
    with pytest.raises(ModelLoadError, match="empty-model holds no .*weights"):
        load_model(str(tmp_path / "empty-model"))


def test_unknown_hub_id_without_network_is_one_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as error:
        load_model("nobody-at-all/no-such-model-7b")
    message = str(error.value)
    assert "nobody-at-all/no-such-model-7b" in message and "\n" not in message


@pytest.mark.parametrize("bad, message", [(dict(dtype="float8"), "unknown dtype"),
                                          (dict(device="tpu"), "unknown device"),
                                          (dict(device="cuda"), "no CUDA GPU")])
def test_bad_device_or_dtype_is_named(bad, message):
    if bad.get("device") == "cuda":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU; the no-GPU message cannot appear")
    with pytest.raises(ModelLoadError, match=message):
        load_model("tiny:llama", **bad)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_rotary_detection(family):
    model, _ = tiny_model(family)
    assert uses_rotary_positions(model) == (family != "gpt2")


def test_raw_prompt_style_runs_and_differs_from_chat():
    loaded = load_model("tiny:llama")
    chat = PromptFormat("chat").prompt_text(loaded.tokenizer, "How many apples?")
    raw = PromptFormat("raw").prompt_text(loaded.tokenizer, "How many apples?")
    assert "<|im_start|>system" in chat and "<|im_start|>" not in raw and "Problem: How many apples?" in raw
    result = Engine(loaded, EngineConfig(max_new_tokens=8, points=("3",), prompt=PromptFormat("raw"))).run_problem(
        example_pair())
    assert {r.condition for r in result.runs} >= {"ignore", "injection", "flush"}
    assert result.runs[0].prompt_text.startswith(PromptFormat().system_prompt)


def test_noise_is_length_matched_to_the_update():
    _, tokenizer = tiny_model("llama")
    update = inserted_ids(tokenizer, "Correction: Sarah has 7 apples, not 5.")
    for text in ("Birds sing.", "The weather is sunny today and the river runs slowly past the old mill " * 3):
        assert len(length_matched_ids(tokenizer, text, len(update))) == len(update)
