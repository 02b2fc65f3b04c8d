"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest

from measure.model import compat


@pytest.fixture
def forward_shapes(monkeypatch):
    """The ``input_ids`` shape of every model forward (``compat.forward``) while the test runs."""
    shapes = []
    forward = compat.forward

    def spy(model, cache, **inputs):
        shapes.append(tuple(inputs["input_ids"].shape))
        return forward(model, cache, **inputs)

    monkeypatch.setattr(compat, "forward", spy)
    return shapes
