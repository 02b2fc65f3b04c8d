"""Linear layers on oneDNN with packed weights, for float32 models on the CPU.

PyTorch multiplies float32 matrices on the CPU with MKL, which takes its AVX2 code path on AMD
processors even where they have AVX-512. On this project's CI machine (AMD EPYC, 2 cores, AVX-512)
a SmolLM2-shaped linear layer over 126 rows runs at 150-200 GFLOP/s through MKL and 440-500
through oneDNN, PyTorch's other CPU library, with the weight packed once into oneDNN's blocked
layout; a 1024-square product 205 against 480 (``measure bench`` measures both). The result is
float32 arithmetic either way (no reduced-precision mode): the two differ by round-off, about
1e-6 relative on these shapes, which this module checks on each model before switching it. Not
bit-reproducible from run to run: the baseline run's first problem group gives a largest
|log p| difference between decoding and a recompute of 1.4e-4 in some runs and 2.9e-3 in others
(the same tokens; later groups identical to the last bit); MEASURE_CPU_LINEAR=aten gives 8.8e-5 in
every run. The invariants' bound (measure.pytest_plugin.invariants.Tolerances) allows for it.

``torch.ops.mkldnn._linear_pointwise`` and ``_reorder_linear_weight`` are the ops TorchInductor
uses for the same purpose; they are not a documented API, so a torch without them, a model that is
not float32 on the CPU, or ``MEASURE_CPU_LINEAR=aten`` keeps PyTorch's own linear layers.
The packed copy costs the linear weights' size again in memory; a model whose copy would not fit
in a quarter of the free memory keeps its layers as they are.
"""

from __future__ import annotations

import os
import types

import torch

from measure.engine.memory import free_bytes

CHOICES = ("onednn", "aten")
ENVIRONMENT = "MEASURE_CPU_LINEAR"
TOLERANCE = 1e-4  # relative to the output's scale; measured differences are about 1e-6


class LinearKernelError(ValueError):
    """``MEASURE_CPU_LINEAR`` holds a value this module does not know."""


def requested() -> str:
    value = os.environ.get(ENVIRONMENT, "onednn").strip().lower() or "onednn"
    if value not in CHOICES:
        raise LinearKernelError(f"${ENVIRONMENT}={os.environ[ENVIRONMENT]!r}: unknown linear kernel; "
                                f"choose one of {', '.join(CHOICES)}")
    return value


def available() -> bool:
    return (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))


def packed_linear(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` (out, in) in oneDNN's layout for :func:`onednn_linear`."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None)


def onednn_linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


def _linears(model: torch.nn.Module) -> list[torch.nn.Linear]:
    return [module for module in model.modules()
            if type(module) is torch.nn.Linear and module.weight.dtype == torch.float32
            and module.weight.device.type == "cpu"]


@torch.inference_mode()
def agrees(linear: torch.nn.Linear, packed: torch.Tensor, rows: int = 5) -> bool:
    """Whether the packed layer computes the layer's output within TOLERANCE on random inputs."""
    x = torch.randn(rows, linear.in_features, generator=torch.Generator().manual_seed(0))
    expected = torch.nn.functional.linear(x, linear.weight, linear.bias)
    got = onednn_linear(x, packed, linear.bias)
    scale = float(expected.abs().max()) or 1.0
    return got.shape == expected.shape and float((got - expected).abs().max()) <= TOLERANCE * scale


def use_onednn_linears(model: torch.nn.Module) -> str:
    """Switch every float32 CPU ``nn.Linear`` of ``model`` to a packed oneDNN weight, where it may
    (see the module doc); returns the kernel the linear layers now use: "onednn" or "aten"."""
    linears = _linears(model)
    if requested() != "onednn" or not linears or not available():
        return "aten"
    copy_bytes = sum(linear.weight.numel() * linear.weight.element_size() for linear in linears)
    if copy_bytes > free_bytes("cpu") // 4:
        return "aten"
    packed = {}
    for linear in linears:
        packed[linear] = packed_linear(linear.weight)
        if not agrees(linear, packed[linear]):
            return "aten"
    for linear, weight in packed.items():
        def forward(self, x, weight=weight):
            return onednn_linear(x, weight, self.bias)

        # Hooks (measure.engine.batching's gather before the output projection) still run: only the
        # module's own forward changes, and the dense weight stays for everything else that reads it.
        linear.forward = types.MethodType(forward, linear)
    return "onednn"
