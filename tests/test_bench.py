"""``measure bench``'s own instruments: the peak-memory probe, by the kernel's peak or by sampling;
the best decode step's rate, which must time full forwards of distinct rows."""

from __future__ import annotations

import time

import numpy as np
import pytest

from measure import bench
from measure.model.load import load_model

MB = 1_000_000


@pytest.mark.parametrize("kernel", [True, False], ids=["kernel-peak", "sampled"])
def test_peak_memory_sees_a_block_freed_before_the_end(kernel, monkeypatch):
    if not kernel:
        monkeypatch.setattr(bench, "_reset_kernel_peak", lambda: False)
    assert bench._reset_kernel_peak() is kernel  # this machine's kernel allows the reset
    with bench.PeakMemory() as memory:
        block = np.ones(200 * MB // 8)  # 200 MB, touched, then freed inside the block
        time.sleep(0.1)  # the sampler looks every 10 ms
        del block
    assert memory._thread is None if kernel else memory._thread is not None
    assert 190 * MB <= memory.grown <= 400 * MB, memory.grown


def test_the_best_decode_step_times_every_row_as_its_own_stream(forward_shapes):
    """Rows that were one stream would share a batch row (measure.engine.decode), and the figure would
    then time narrow forwards: every decode forward must carry all the rows."""
    loaded = load_model("tiny:llama")
    rate = bench.best_decode_step_rate(loaded, rows=6, positions=20, new_tokens=4)
    assert rate > 0
    assert forward_shapes[0] == (1, 20)  # the prompt, prefilled once
    assert forward_shapes[1:] == [(6, 1)] * 4, forward_shapes  # the rows' own first tokens, then 3 decode steps
