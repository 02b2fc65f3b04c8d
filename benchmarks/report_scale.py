"""How `measure report` scales with the records of a run: time and peak RSS at 1x, 10x, 30x, 100x
the default run (54 problems x 7 conditions = 378 records of up to 96 tokens).

    python benchmarks/report_scale.py --scales 1,10 --layout 1 --work /tmp/report-scale

Each scale's run folder is synthesized once under ``--work`` (kept for the next call):

- with ``--template RUN``, a folder of a real default run (``measure run`` with default settings),
  its problems' records are copied in turn, ids renamed (``<id>~<copy>``), so every record has the
  default run's shapes and values;
- without, the committed reports/baselines/smollm2 (24 tokens, no attention or hidden states) is
  scaled to the default run's shapes: its per-token curves tiled to the problem's generation length
  (48 to 96 tokens, t0 = 8), hidden-state cosines per position and per layer (31), attention
  grids of 30 layers x 9 heads over the 4 spans; values as float32 keeps them, as the engine's are.

``--layout 1`` writes the arrays inline in samples.jsonl (the layout before columnar files);
``--layout 2`` writes them per group of 3 problems to columnar files. Then `measure report DIR` runs
in a child process per scale; its wall time and peak RSS (``wait4``) are printed as a table, with
the bytes per record of the folder.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from measure.records import RUN_FILE, SAMPLES_FILE  # noqa: E402
from measure.records.columnar import read_samples, write_group_arrays  # noqa: E402
from measure.records.store import RecordStore  # noqa: E402

BASELINE = ROOT / "reports" / "baselines" / "smollm2"
DEFAULT_PROBLEMS = 54  # the default run: builtin-easy, 7 conditions, one point
LAYERS, HEADS, SPANS = 30, 9, ("prompt", "prefix", "inserted", "after")  # SmolLM2-135M
T0, POINT = 8, "t8"
GROUP = 3


def f32(values: np.ndarray) -> list:
    """float32 values as JSON keeps them; NaN as None."""
    return [None if not np.isfinite(v) else float(v) for v in np.asarray(values, dtype=np.float32).ravel()] \
        if np.ndim(values) == 1 else [f32(row) for row in values]


def tiled(values: list, n: int) -> np.ndarray:
    array = np.array([np.nan if v is None else v for v in values], dtype=np.float32)
    return np.resize(array, n)


def scaled_record(record: dict, n: int, rng: np.random.Generator) -> dict:
    """A baseline record at the default run's shapes: n generated tokens, t0 = 8, attention and hidden states."""
    reference = record["point"] == "-"
    t0 = 0 if reference else T0
    arrays = record["arrays"]
    out = {**record, "t0": t0, "point": "-" if reference else POINT}
    generated = [int(t) for t in np.resize(record["tokens"]["generated"], n)]
    pieces = [str(p) for p in np.resize(np.array(record["texts"]["generated_pieces"], dtype=object), n)]
    prompt, inserted = len(record["tokens"]["prompt"]), len(record["tokens"]["inserted"])
    out["tokens"] = {**record["tokens"], "generated": generated}
    out["texts"] = {**record["texts"], "generated_pieces": pieces, "generated": "".join(pieces),
                    "continuation": "".join(pieces[t0:])}
    out["spans"] = {"prompt": [0, prompt], "prefix": [prompt, prompt + t0], "inserted": [prompt + t0, prompt + t0 + inserted],
                    "after": [prompt + t0 + inserted, prompt + inserted + n]}
    mass = rng.dirichlet([8, 1 if t0 else 1e-3, 2 if inserted else 1e-3, 3], size=(LAYERS, HEADS, n - t0))
    out["arrays"] = {
        "logprob_run": f32(tiled(arrays["logprob_run"], n)),
        **{group: {ref: f32(tiled(values, n)) for ref, values in arrays[group].items()} for group in ("logprob_ref", "kl", "js")},
        "hidden_cosine_layers": {ref: f32(1 - rng.gamma(1, 0.02, LAYERS + 1)) for ref in arrays["kl"]},
        "hidden_cosine": {ref: f32(1 - rng.gamma(1, 0.01, n)) for ref in arrays["kl"]},
        "attention_layers_tokens": {span: f32(mass[..., i].mean(axis=1)) for i, span in enumerate(SPANS)},
        "attention_layers_heads": {span: f32(mass[..., i].mean(axis=2)) for i, span in enumerate(SPANS)},
    }
    out["metrics"] = {**record["metrics"], "t0": t0, "point": out["point"], "n_generated": n, "n_after": n - t0}
    return out


def template_problems(template: Path | None) -> tuple[list[list[dict]], dict]:
    """The template's records per problem (default-run shapes), and its run.json."""
    source = template or BASELINE
    records, _ = read_samples(source / SAMPLES_FILE)  # arrays attached, whichever layout the template has
    by_problem: dict[str, list[dict]] = {}
    for record in records:
        by_problem.setdefault(record["problem_id"], []).append(record)
    info = json.loads((source / RUN_FILE).read_text())
    if template is None:
        rng = np.random.default_rng(0)
        # 87% of the default run's generations end by themselves, the rest at the 96-token budget.
        lengths = np.where(rng.random(len(by_problem)) < 0.87, rng.integers(16, 72, len(by_problem)), 96)
        by_problem = {pid: [scaled_record(r, int(n), rng) for r in rs] for (pid, rs), n in zip(by_problem.items(), lengths)}
        info["settings"].update({"max_new_tokens": 96, "points": ["8"], "attention": True, "hidden_states": True})
    return list(by_problem.values()), info


def renamed(record: dict, copy: int) -> dict:
    problem_id = f"{record['problem_id']}~{copy}"
    key = f"{problem_id}/{record['condition']}/{record['point']}"
    copied = {k: v for k, v in record.items() if k != "arrays_file"}  # layout 2 writes its own file
    return {**copied, "schema": 1, "problem_id": problem_id, "key": key,
            "metrics": {**record["metrics"], "problem_id": problem_id}}


def synthesize(folder: Path, scale: int, layout: int, template: Path | None) -> None:
    if (folder / "metrics.json").exists():
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    problems, info = template_problems(template)
    info["settings"]["out"] = str(folder)
    (folder / RUN_FILE).write_text(json.dumps(info, indent=2))
    store = RecordStore(folder / SAMPLES_FILE)
    lines = []
    n = DEFAULT_PROBLEMS * scale
    for start in range(0, n, GROUP):
        group = [renamed(r, i) for i in range(start, min(n, start + GROUP)) for r in problems[i % len(problems)]]
        lines.extend(write_group_arrays(folder, group) if layout == 2 else group)
        if len(lines) > 2000:
            _flush(store, lines)
    _flush(store, lines)
    (folder / "metrics.json").write_text("{}")  # marks the folder complete; the report replaces it


def _flush(store: RecordStore, lines: list[dict]) -> None:
    with open(store.path, "a", encoding="utf-8") as handle:  # one append per batch: fsync per line is slow here
        handle.writelines(json.dumps(r, separators=(",", ":")) + "\n" for r in lines)
    lines.clear()


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()
               and path.name not in ("metrics.json", "report.html", RUN_FILE))


def report(folder: Path, resamples: int | None, code: Path) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (GB) and exit status of `measure report folder` in a child process,
    with the measure package found in ``code``."""
    command = [sys.executable, "-m", "measure.cli", "report", str(folder)]
    if resamples:
        command += ["--resamples", str(resamples)]
    env = {**os.environ, "PYTHONPATH": str(code)}
    start = time.perf_counter()
    # cwd = code: `python -m` puts the working directory first on sys.path, before PYTHONPATH
    child = subprocess.Popen(command, env=env, cwd=code, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    return seconds, usage.ru_maxrss / 1e6, os.waitstatus_to_exitcode(status)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", default="1,10,30,100", help="comma list of multiples of the default run")
    parser.add_argument("--layout", type=int, choices=(1, 2), default=2, help="1: arrays inline; 2: columnar files")
    parser.add_argument("--template", type=Path, help="a real default run to copy records from (default: the baseline scaled)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/report-scale"), help="where the folders are made and kept")
    parser.add_argument("--resamples", type=int, help="bootstrap resamples of the report (default: the report's)")
    parser.add_argument("--no-report", action="store_true", help="only synthesize and print the sizes")
    parser.add_argument("--code", type=Path, default=ROOT,
                        help="the checkout whose `measure report` runs (e.g. `git archive REV` unpacked; default this one)")
    args = parser.parse_args()
    print(f"layout {args.layout}, template {args.template or 'baseline scaled'}, report code {args.code}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"{'scale':>6} {'records':>8} {'MB':>9} {'bytes/record':>13} {'seconds':>9} {'s/1k records':>13} {'peak RSS GB':>12}")
    for scale in (int(s) for s in args.scales.split(",")):
        folder = args.work / f"layout{args.layout}-x{scale}"
        synthesize(folder, scale, args.layout, args.template)
        with open(folder / SAMPLES_FILE, "rb") as handle:
            records = sum(1 for _ in handle)
        size = folder_bytes(folder)
        seconds, rss, status = (float("nan"), float("nan"), 0) if args.no_report else report(folder, args.resamples, args.code)
        failed = "" if status == 0 else f"  (exit {status})"
        print(f"{scale:>5}x {records:>8} {size / 1e6:>9.1f} {size / records:>13.0f} {seconds:>9.1f} "
              f"{1000 * seconds / records:>13.2f} {rss:>12.2f}{failed}", flush=True)


if __name__ == "__main__":
    main()
