"""``measure bench``'s own instruments: the peak-memory probe, by the kernel's peak or by sampling."""

from __future__ import annotations

import time

import numpy as np
import pytest

from measure import bench

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
