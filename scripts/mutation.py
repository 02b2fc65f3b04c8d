"""Mutation testing of the core modules with mutmut, one module at a time against its own fast tests.

Usage: ``python scripts/mutation.py [NAME ...]`` (default: every module below, one after another).
Each module runs in its own scratch copy of the repository (``build/mutation/<name>/``) with a
``setup.cfg`` that tells mutmut which file to mutate and which tests to run, so runs never share a
``mutants/`` folder and the worktree is never touched. Prints, per module, the mutants killed,
survived, timed out and without tests, and the score (killed + timeout over all mutants that some
test reached); the survivors are listed by ``mutmut results`` inside that module's scratch copy, and
``mutmut show NAME`` there prints a survivor's diff. Takes a few minutes per module on 2 cores
(docs/testing.md has the measured times).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = ROOT / "build" / "mutation"

# name -> (the file mutated, the fast tests that own it and any further pytest arguments)
MODULES = {
    "calibration": ("measure/analysis/calibration.py",
                    ["tests/analysis/test_calibration.py", "tests/analysis/test_calibration_rates.py",
                     "tests/analysis/test_calibration_fits.py"]),
    "answers": ("measure/metrics/answers.py",
                ["tests/metrics/test_metrics_answers.py", "tests/metrics/test_answers_last_statement.py",
                 "tests/metrics/test_answers_edges.py"]),
    "latency": ("measure/metrics/latency.py", ["tests/metrics/test_metrics_latency.py", "tests/metrics/test_latency_edges.py"]),
    "store": ("measure/records/store.py", ["tests/records/test_store.py"]),
    # test_run_folder.py runs the tiny model per mutant (minutes each); these rules need no model.
    "run_folder": ("measure/records/run_folder.py", ["tests/records/test_run_folder_rules.py"]),
    # The pytester session of test_merge.py takes ~10 s per mutant; the unit tests reach every line.
    "merge": ("measure/pytest_plugin/merge.py", ["tests/pytest_plugin/test_merge.py", "-k", "not reused_output_folder"]),
    # The cache edits that partial, crop and fork use; their tests run tiny models (seconds per mutant).
    # test_cache_edits.py (the refusals, crop bounds, scaled Gemma 3 rope) runs whole: -k matches its name.
    "cache": ("measure/engine/cache.py", ["tests/engine/test_partial_independent.py", "tests/engine/test_sliding_window.py",
                                          "tests/engine/test_cache_edits.py",
                                          "-k", "llama or gemma3 or scaled or crop or refused or cache_edits"]),
}
#: Modules scored on some functions only (mutmut's name patterns): the rest is not mutated.
ONLY = {"cache": ["*x_shift_rotary_keys*", "*x_rotate_half*", "*x_replace_prompt_region*", "*x_crop_copy*",
                  "*x_build_cache*", "*x_kv_pairs*"]}
COPIED = ["measure", "tests", "fixtures", "pyproject.toml", "conftest.py"]


def prepare(name: str) -> Path:
    source, tests = MODULES[name]
    work = SCRATCH / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for item in COPIED:
        path = ROOT / item
        if path.is_dir():
            shutil.copytree(path, work / item, ignore=shutil.ignore_patterns("__pycache__"))
        elif path.exists():
            shutil.copy2(path, work / item)
    (work / "setup.cfg").write_text(
        "[mutmut]\n"
        "source_paths = measure\n"
        f"only_mutate = {source}\n"
        "pytest_add_cli_args_test_selection =\n" + "".join(f"    {test}\n" for test in tests)
        + "pytest_add_cli_args =\n    -p\n    no:xdist\n    -p\n    no:randomly\n    -q\n",
        encoding="utf-8")
    return work


def run(name: str) -> dict:
    work = prepare(name)
    mutmut = Path(sys.executable).with_name("mutmut")
    started = time.monotonic()
    # One child: the machine is shared, and the modules' tests are quick. One OpenMP thread: mutmut
    # forks a child per mutant from a process that already ran the tests, and libgomp's thread pool
    # does not survive a fork (the child's first parallel torch op, e.g. CPU sdpa, waits forever).
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([str(mutmut), "run", "--max-children", "1", *ONLY.get(name, [])], cwd=work, check=True, env=env)
    seconds = time.monotonic() - started
    stats = statuses(work)
    reached = stats["total"] - stats["no_tests"]
    caught = stats["killed"] + stats["timeout"]
    survivors = write_survivors(name, work)
    return {"module": name, **stats, "score": caught / reached if reached else None, "seconds": round(seconds),
            "survivors": survivors}


def statuses(work: Path) -> dict:
    """Mutants by mutmut's verdict; those not run (outside ``ONLY``) are left out of ``total``."""
    mutmut = Path(sys.executable).with_name("mutmut")
    listing = subprocess.run([str(mutmut), "results", "--all", "true"], cwd=work, capture_output=True, text=True).stdout
    found = [line.rsplit(": ", 1)[1].strip() for line in listing.splitlines() if ": " in line]
    found = [status for status in found if status != "not checked"]
    return {"total": len(found), **{key: found.count(status) for key, status in (
        ("killed", "killed"), ("timeout", "timeout"), ("survived", "survived"), ("no_tests", "no tests"))}}


def write_survivors(name: str, work: Path) -> int:
    """``build/mutation/<name>-survivors.txt``: every surviving mutant and its diff."""
    mutmut = Path(sys.executable).with_name("mutmut")
    listing = subprocess.run([str(mutmut), "results"], cwd=work, capture_output=True, text=True).stdout
    names = [line.split(":")[0].strip() for line in listing.splitlines() if line.strip().endswith(": survived")]
    parts = []
    for mutant in names:
        diff = subprocess.run([str(mutmut), "show", mutant], cwd=work, capture_output=True, text=True).stdout
        changed = [line for line in diff.splitlines() if line[:2] in ("- ", "+ ")]
        parts.append(f"{mutant}\n" + "\n".join(changed) + "\n")
    (SCRATCH / f"{name}-survivors.txt").write_text("\n".join(parts), encoding="utf-8")
    return len(names)


def main(names: list[str]) -> int:
    unknown = [name for name in names if name not in MODULES]
    if unknown:
        print(f"unknown module(s) {unknown}; choose from {sorted(MODULES)}", file=sys.stderr)
        return 2
    results = [run(name) for name in names or list(MODULES)]
    print("| module | mutants | killed | timeout | survived | no tests | score | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        score = f"{100 * r['score']:.0f}%" if r["score"] is not None else "-"
        print(f"| {r['module']} | {r['total']} | {r['killed']} | {r['timeout']} | {r['survived']} | {r['no_tests']} "
              f"| {score} | {r['seconds']} |")
    (SCRATCH / "scores.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
