"""Tiny random models and a tiny tokenizer, built in-process with no download.

They exist for fast unit tests of the engine's cache arithmetic: the invariants (cache
equivalence, fork-equals-regenerate, partial-equals-flush) hold for any weights, so random
weights at hidden size 64 test the same code paths as a 7B model in milliseconds.
"""

from __future__ import annotations

import functools

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

TINY_FAMILIES = ("llama", "qwen2", "mistral", "gpt2")
#: Families whose layers (some or all) attend only to the last ``TINY_WINDOW`` positions, so that
#: test streams of ~64 tokens run well past the window: Gemma 3 alternating local and global
#: layers (with its embedding scaling, query pre-attention scalar and final logit soft-capping),
#: Mistral with every layer windowed, Qwen2 windowed above ``max_window_layers``.
TINY_WINDOW = 8
SLIDING_FAMILIES = ("gemma3", "mistral-sliding", "qwen2-sliding")

# The tiny tokenizer's training text: words the built-in problems and templates use, so that
# tokenized prompts stay short and realistic.
_CORPUS = [
    "Sarah has 5 apples. She buys 7 more apples. How many apples does she have now?",
    "Correction: Sarah has 7 apples, not 5. Update: the problem is now as follows.",
    "A farmer had 12 cows and sold 3 of them. Each box holds 6 eggs. Tom reads 20 pages a day.",
    "The answer is 42. Let's think step by step. First, then, so, total, each, more, less.",
    "Once upon a time a king lived in a castle with his three daughters near the forest.",
    "Question: who wrote the story? What is the capital of France? The weather is sunny today.",
    "0 1 2 3 4 5 6 7 8 9 10 100 + - * / = . , ? ! : ; ( ) #### \\boxed{}",
]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@functools.lru_cache(maxsize=1)
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (vocabulary ~400) trained on a fixed corpus; deterministic."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    return fast


def tiny_config(family: str, vocab_size: int):
    """A 2-layer config of the given family, small enough for millisecond forward passes."""
    # Special ids match tiny_tokenizer(): <|endoftext|>=0, <|im_start|>=1, <|im_end|>=2.
    common = dict(vocab_size=vocab_size, tie_word_embeddings=False,
                  bos_token_id=1, eos_token_id=2, pad_token_id=2)
    if family == "llama":
        return LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2,
                           max_position_embeddings=1024, **common)
    if family == "qwen2":
        return Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2,
                           max_position_embeddings=1024, **common)
    if family == "mistral":
        return MistralConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=1,
                             max_position_embeddings=1024, sliding_window=None, **common)
    if family == "gpt2":
        return GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=1024, **common)
    if family == "gemma3":
        # Two rope bases as in the real model (10k local, 1M global) so a re-rotation with the
        # wrong layer's frequencies shows; soft-capping on to exercise it (Gemma 3 270M has none).
        return Gemma3TextConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                                num_attention_heads=4, num_key_value_heads=1, head_dim=16,
                                max_position_embeddings=1024, sliding_window=TINY_WINDOW,
                                layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                                query_pre_attn_scalar=24, final_logit_softcapping=30.0,
                                rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
                                                 "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0}},
                                **common)
    if family == "mistral-sliding":
        return MistralConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=1,
                             max_position_embeddings=1024, sliding_window=TINY_WINDOW, **common)
    if family == "qwen2-sliding":
        return Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                           use_sliding_window=True, sliding_window=TINY_WINDOW, max_window_layers=1, **common)
    raise ValueError(f"unknown tiny model family {family!r}; "
                     f"choose one of {', '.join(TINY_FAMILIES + SLIDING_FAMILIES)}")


_MODEL_CLASSES = {
    "llama": LlamaForCausalLM,
    "qwen2": Qwen2ForCausalLM,
    "mistral": MistralForCausalLM,
    "gpt2": GPT2LMHeadModel,
    "gemma3": Gemma3ForCausalLM,
    "mistral-sliding": MistralForCausalLM,
    "qwen2-sliding": Qwen2ForCausalLM,
}


def tiny_model(family: str = "llama", seed: int = 0, attn_implementation: str = "sdpa"):
    """A randomly initialised tiny model (float32, eval mode) and the tiny tokenizer.

    Weights are scaled up from the default init so that next-token distributions are peaked
    enough for greedy decoding to be stable against float round-off (a flat random model's
    argmax flips on 1e-7 noise, which would make token-equality tests flaky for no reason).
    """
    tokenizer = tiny_tokenizer()
    config = tiny_config(family, vocab_size=len(tokenizer))
    config._attn_implementation = attn_implementation
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = tokenizer.eos_token_id
    config.bos_token_id = tokenizer.bos_token_id
    if family not in _MODEL_CLASSES:
        tiny_config(family, 0)  # raises, naming the families
    torch.manual_seed(seed)
    model = _MODEL_CLASSES[family](config)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(8.0)
    model.eval()
    return model, tokenizer


def tiny_yarn_gemma3() -> Gemma3ForCausalLM:
    """The tiny Gemma 3 with YaRN rope scaling that differs by layer type (local layers: theta 10k,
    factor 2, cos and sin scaled by 1.069; global layers: theta 1M, factor 8, scaled by 1.208), as
    per-layer-type scaling can be: a cache edit must re-rotate each layer's keys with its own
    type's frequencies and undo that type's scaling. The real Gemma 3 270M, like :func:`tiny_model`'s
    gemma3, has unscaled rope on both types, so it cannot tell the two apart."""
    config = tiny_config("gemma3", len(tiny_tokenizer()))
    config.rope_parameters = {
        "sliding_attention": {"rope_type": "yarn", "factor": 2.0, "rope_theta": 10_000.0,
                              "original_max_position_embeddings": 256},
        "full_attention": {"rope_type": "yarn", "factor": 8.0, "rope_theta": 1_000_000.0,
                           "original_max_position_embeddings": 256},
    }
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return Gemma3ForCausalLM(config).eval()
