"""A run killed in the middle of a group resumes without writing any record twice.

The runner measures whole groups (so a resumed group batches exactly as before) but must append
only the records the store lacks. Here the kill lands inside a group: the store holds part of it.
"""

from __future__ import annotations

import json
from collections import Counter

from measure.records.store import read_store
from measure.run import runner
from measure.settings import RunSettings


def keys_in_file(path) -> list[str]:
    return [json.loads(line)["key"] for line in path.read_text().splitlines() if line.strip()]


def test_resuming_a_partly_written_group_appends_only_the_missing_records(tmp_path):
    settings = RunSettings(model="tiny:llama", dataset="builtin", limit=2, max_new_tokens=10, points=["3"],
                           group_size=2, semantic=False, attention=False, hidden_states=False,
                           out=str(tmp_path / "run"))
    out = runner.run_measurement(settings, show_progress=False)
    samples = out / "samples.jsonl"
    whole = keys_in_file(samples)
    assert len(whole) == 2 * (2 + 5) and len(set(whole)) == len(whole)  # one group of two problems
    lines = samples.read_text().splitlines(keepends=True)
    kept = len(lines) // 2
    samples.write_text("".join(lines[:kept]))  # what a kill after half of the group's appends leaves

    runner.run_measurement(RunSettings(**{**settings.as_dict(), "resume": True}), show_progress=False)
    resumed = keys_in_file(samples)
    assert Counter(resumed) == Counter(whole), "a resumed group must append only the records the store lacks"
    assert resumed[:kept] == whole[:kept]  # what was there is kept as written
    records, warnings = read_store(samples)
    assert warnings == [] and len(records) == len(whole)
