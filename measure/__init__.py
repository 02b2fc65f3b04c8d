"""Adaptation-latency measurement suite.

Measures, token by token, how a causal language model's next-token distributions follow a
context change injected in the middle of its generation, by editing the live KV cache.
"""

__version__ = "0.1.0"
