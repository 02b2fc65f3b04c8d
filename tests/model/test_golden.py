"""The embedded models against their golden outputs (fixtures/golden/<model>.json).

3 fixed prompts, the first 16 greedy tokens, the top-5 log-probabilities at each: tokens equal,
log-probabilities within 1e-3. A conversion that changed (a transformers upgrade changing a
dequantization or a RoPE layout) fails here with a message naming what changed, where every
self-consistency invariant would still pass. The comparison itself is tested on a doctored file.
"""

from __future__ import annotations

import copy
import json

import pytest

from measure.model import embedded
from measure.model.golden import differences, golden_path, golden_traces, mismatch_message, provenance
from measure.model.load import load_model

SMOLLM2 = embedded.SMOLLM2.name
GEMMA3 = embedded.GEMMA3.name


@pytest.fixture(scope="module")
def smollm2():
    """The model, its golden file and a fresh trace of it (made once: ~3 s of decoding)."""
    loaded = load_model(SMOLLM2)
    expected = json.loads(golden_path(SMOLLM2).read_text())
    return loaded, expected, golden_traces(loaded, expected)


def check_golden(loaded, expected: dict, traces: list[dict]) -> None:
    found = differences(expected, traces)
    assert not found, mismatch_message(expected, provenance(loaded), found)


@pytest.mark.model
def test_smollm2_matches_its_golden_outputs(smollm2):
    check_golden(*smollm2)
    expected = smollm2[1]
    assert len(expected["traces"]) == 3 and all(len(t["steps"]) == 16 and len(t["steps"][0]["top"]) == 5
                                                for t in expected["traces"])
    assert expected["provenance"]["transformers"] and expected["provenance"]["commit"]


@pytest.mark.model
@pytest.mark.skipif(embedded.installed_size(embedded.GEMMA3) is None, reason="the Gemma 3 packages are not installed")
def test_gemma3_matches_its_golden_outputs():
    loaded = load_model(GEMMA3)
    expected = json.loads(golden_path(GEMMA3).read_text())
    check_golden(loaded, expected, golden_traces(loaded, expected))


@pytest.mark.model
def test_a_changed_output_is_reported_with_what_changed(smollm2):
    loaded, expected, traces = smollm2
    doctored = copy.deepcopy(expected)
    doctored["traces"][0]["steps"][2]["top"][1][1] += 0.01  # a log-probability moved by 1e-2
    doctored["traces"][1]["steps"][5]["token"] += 1  # another greedy token
    doctored["provenance"]["transformers"] = "4.0.0"
    found = differences(doctored, traces)
    assert len(found) == 2
    assert "token 3: log P(" in found[0] and "> 0.001" in found[0]
    assert "token 6: greedy token" in found[1]
    message = mismatch_message(doctored, provenance(loaded), found)
    assert "changed since: transformers 4.0.0 -> " in message
    doctored = copy.deepcopy(expected)
    doctored["traces"][2]["steps"][0]["top"][4][1] += 5e-4  # within the tolerance
    assert differences(doctored, traces) == []
