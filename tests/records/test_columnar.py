"""The columnar per-token arrays: values kept to float32, one reader for both layouts, `measure
upgrade`, and a run killed at any moment of writing a group resuming to the uninterrupted records."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from measure.records.columnar import (
    ARRAYS_DIR,
    attach_arrays,
    read_samples,
    records_in_layout_1,
    remove_partial_writes,
    write_group_arrays,
)
from measure.records.record import RecordError
from measure.records.store import RecordStore, read_store
from measure.records.upgrade import upgrade_run

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / "reports" / "baselines" / "smollm2"
STORAGE_FIELDS = ("schema", "arrays_file")  # how a record is stored, not what it holds


def content(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in STORAGE_FIELDS}


def arrays_at_float32(record: dict) -> dict:
    """The record's content with its arrays as float32 keeps them (the scalars stay in JSON, exact)."""
    return {**content(record), "arrays": as_float32(record["arrays"])}


def as_float32(value):
    """Every float of a nested structure as float32 would keep it."""
    if isinstance(value, dict):
        return {k: as_float32(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_float32(v) for v in value]
    return float(np.float32(value)) if isinstance(value, float) else value


def test_arrays_written_by_group_read_back_equal_at_float32(tmp_path):
    records, _ = read_store(BASELINE / "samples.jsonl")
    records[0]["arrays"]["kl"]["oracle"][0] = 0.1  # not a float32: kept to float32 precision
    records[1]["arrays"]["attention_layers_tokens"] = {"inserted": [[0.25, None], [1 / 3, 0.5]]}
    records[1]["arrays"]["attention_layers_heads"] = {"inserted": [[0.5]]}
    records[3]["arrays"]["kl_oracle_ignore"] = [0.5, None, 0.25]  # an array a newer metric adds, of its own name
    store = RecordStore(tmp_path / "samples.jsonl")
    for start in range(0, len(records), 21):
        for record in write_group_arrays(tmp_path, [dict(r) for r in records[start:start + 21]]):
            assert "arrays" not in record and record["schema"] == 2
            store.append(record)
    back, warnings = read_samples(tmp_path / "samples.jsonl")
    assert warnings == [] and len(back) == len(records)
    for original, read in zip(records, back):
        assert content(read) == arrays_at_float32(original), original["key"]
    assert back[2]["arrays"]["hidden_cosine"] == {} and "attention_layers_tokens" not in back[2]["arrays"]
    assert len(list((tmp_path / ARRAYS_DIR).glob("*.parquet"))) == 14
    typed, _ = read_samples(tmp_path / "samples.jsonl", typed=True)
    assert typed[1].arrays.attention_layers_tokens["inserted"][1][0] == float(np.float32(1 / 3))


def test_records_tailed_from_the_file_get_their_arrays_attached(tmp_path):
    records, _ = read_store(BASELINE / "samples.jsonl")
    stored = write_group_arrays(tmp_path, [dict(r) for r in records[:7]]) + [records[7]]  # the last one inline
    attached = attach_arrays(tmp_path, stored)
    assert [content(r) for r in attached] == [content(r) for r in records[:8]]


def test_a_missing_columnar_file_is_one_error_naming_the_line(tmp_path):
    records, _ = read_store(BASELINE / "samples.jsonl")
    store = RecordStore(tmp_path / "samples.jsonl")
    for record in write_group_arrays(tmp_path, records[:7]):
        store.append(record)
    for path in (tmp_path / ARRAYS_DIR).glob("*.parquet"):
        path.unlink()
    with pytest.raises(RecordError, match=rf"^{tmp_path}/samples.jsonl:1: field arrays_file: .* cannot be read"):
        read_samples(tmp_path / "samples.jsonl")


def test_a_temporary_file_left_by_a_kill_is_removed(tmp_path):
    (tmp_path / ARRAYS_DIR).mkdir()
    torn = tmp_path / ARRAYS_DIR / ".0123.parquet.99.tmp"
    torn.write_bytes(b"PAR1 cut short")
    assert remove_partial_writes(tmp_path) == [torn] and not torn.exists()


def test_upgrade_converts_layout_1_to_a_quarter_of_the_bytes_or_less_with_equal_records(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(BASELINE, run)
    before, _ = read_samples(run / "samples.jsonl")
    assert records_in_layout_1(before) == len(before)  # layout 1 opens as it is
    done = upgrade_run(run)
    assert done["records_converted"] == len(before) == 280
    after, warnings = read_samples(run / "samples.jsonl")
    assert warnings == [] and records_in_layout_1(after) == 0
    assert [content(r) for r in after] == [arrays_at_float32(r) for r in before]
    groups = {r["arrays_file"] for r in after}
    assert len(groups) == 14  # the 40 problems in groups of 3, as the run measured them
    assert pq.read_table(run / sorted(groups)[0]).column_names[:5] == ["key", "problem_id", "condition", "point", "t0"]
    assert upgrade_run(run)["records_converted"] == 0  # a second upgrade has nothing to do


# -- killed while writing a group, then resumed ----------------------------------------------------
TINY = ["--model", "tiny:llama", "--dataset", "builtin", "--limit", "3", "--group-size", "1", "--max-new-tokens", "8",
        "--points", "3", "--no-semantic", "--quiet"]

#: Runs `measure run` and kills it (SIGKILL) at one moment of writing its second problem group.
KILLED_RUN = '''
import os, signal, sys
from measure import cli
from measure.records import columnar, store
from measure.run import runner

moment = sys.argv[1]
seen = {"groups": 0, "appends": 0}

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if moment == "mid_file":  # bytes of the columnar file written, not yet renamed
    real_write = columnar.pq.write_table
    def write_table(table, handle, **options):
        seen["groups"] += 1
        if seen["groups"] == 2:
            handle.write(b"PAR1 half a file")
            handle.flush()
            die()
        real_write(table, handle, **options)
    columnar.pq.write_table = write_table
elif moment == "before_records":  # the file complete under its name, none of its records written
    real_group = runner.write_group_arrays
    def write_group_arrays(out, records):
        stored = real_group(out, records)
        seen["groups"] += 1
        if seen["groups"] == 2:
            die()
        return stored
    runner.write_group_arrays = write_group_arrays
elif moment == "mid_records":  # some records of the group written, the others not
    real_append = store.RecordStore.append
    def append(self, record):
        real_append(self, record)
        seen["appends"] += 1
        if seen["appends"] == 9:
            die()
    store.RecordStore.append = append
sys.exit(cli.main(["run", *sys.argv[2:]]))
'''


def measure_run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "measure.cli", "run", *args], capture_output=True, text=True,
                          timeout=600, check=False)


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("columnar") / "whole"
    result = measure_run(*TINY, "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


def comparable(folder: Path) -> dict[str, dict]:
    """Records by key, arrays attached, without where they were made and stored."""
    records, warnings = read_samples(folder / "samples.jsonl")
    assert warnings == []
    return {r["key"]: {k: v for k, v in r.items() if k not in (*STORAGE_FIELDS, "worker")} for r in records}


def test_an_uninterrupted_run_stores_its_arrays_in_one_file_per_group(whole):
    records, _ = read_store(whole / "samples.jsonl")
    assert len(records) == 3 * 7 and all("arrays" not in r and r["schema"] == 2 for r in records)
    files = sorted((whole / ARRAYS_DIR).iterdir())
    assert [f.suffix for f in files] == [".parquet"] * 3  # one per problem group, nothing else left
    assert {r["arrays_file"] for r in records} == {f"{ARRAYS_DIR}/{f.name}" for f in files}


@pytest.mark.parametrize("moment", ["mid_file", "before_records", "mid_records"])
def test_a_run_killed_while_writing_a_group_resumes_to_the_uninterrupted_records(whole, tmp_path, moment):
    out = tmp_path / "killed"
    killed = subprocess.run([sys.executable, "-c", KILLED_RUN, moment, *TINY, "--out", str(out)],
                            capture_output=True, text=True, timeout=600, check=False)
    assert killed.returncode == -9, killed.stderr
    kept = len(read_store(out / "samples.jsonl")[0])
    assert kept == {"mid_file": 7, "before_records": 7, "mid_records": 9}[moment]
    if moment == "mid_file":
        assert len(list((out / ARRAYS_DIR).glob(".*.tmp"))) == 1  # what the kill left, under no final name
    result = measure_run(*TINY, "--out", str(out), "--resume")
    assert result.returncode == 0, result.stderr
    assert comparable(out) == comparable(whole)
    assert not list((out / ARRAYS_DIR).glob(".*"))
    assert json.loads((out / "metrics.json").read_text())["counts"]["records"] == 21
