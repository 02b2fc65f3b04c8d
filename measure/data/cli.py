"""`measure augment` and `measure data list|check|download` subcommands.

`register(subparsers)` adds both to the top-level parser; each sets `func` to its handler,
which returns the process exit code.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from measure.data import (
    BUILTIN_SETS,
    DATASETS,
    cache_dir,
    check_pair,
    load_pairs,
    load_records,
    read_pairs,
)
from measure.data.augment import DEFAULT_MIX, generate_pairs, parse_mix
from measure.data.download import download_dataset, load_manifest, manifest_entries, verify_file
from measure.data.errors import DataError
from measure.data.loaders import MATH_LOADERS
from measure.data.pair_files import write_pairs


def register(subparsers) -> None:
    augment = subparsers.add_parser("augment", help="generate problem pairs from a math dataset")
    augment.add_argument("--source", required=True, choices=sorted(MATH_LOADERS))
    augment.add_argument("--data-dir", default=None, help="dataset folder (default $MEASURE_DATA_DIR)")
    augment.add_argument("--n", type=int, default=500, help="number of pairs")
    augment.add_argument("--seed", type=int, default=0)
    augment.add_argument("--out", required=True, help="output JSONL file")
    augment.add_argument("--mix", default=None,
                         help="weights, e.g. 'single_number=1,multi_number=1,added_step=1,control=1' (default equal)")
    augment.add_argument("--chains", action="store_true",
                         help="also give single/multi_number pairs a chain A -> B -> C where one can be made (multi strategy)")
    augment.set_defaults(func=run_augment)

    data = subparsers.add_parser("data", help="list, check or download datasets")
    actions = data.add_subparsers(dest="data_action", required=True)
    listing = actions.add_parser("list", help="datasets and whether their files are present and verified")
    listing.add_argument("--data-dir", default=None)
    listing.set_defaults(func=run_list)
    check = actions.add_parser("check", help="load a dataset or pairs file and check every pair")
    check.add_argument("name", help=f"one of {', '.join(DATASETS)} or a .jsonl file of pairs")
    check.add_argument("--data-dir", default=None)
    check.add_argument("--seed", type=int, default=0)
    check.set_defaults(func=run_check)
    download = actions.add_parser("download", help="fetch a dataset into the cache and verify it")
    download.add_argument("name", choices=[d for d in DATASETS if d not in BUILTIN_SETS])
    download.add_argument("--cache-dir", default=None, help="default $MEASURE_CACHE_DIR or ~/.cache/measure")
    download.set_defaults(func=run_download)


def run_augment(args: argparse.Namespace) -> int:
    try:
        if args.n < 1:
            raise ValueError(f"--n {args.n}: the number of pairs must be at least 1")
        if Path(args.out).is_dir():
            raise ValueError(f"--out {args.out} is a folder; name the JSONL file to write")
        mix = parse_mix(args.mix) if args.mix else DEFAULT_MIX
        records, load_report = load_records(args.source, args.data_dir)
    except (DataError, ValueError) as error:
        print(f"measure augment: error: {error}", file=sys.stderr)
        return 2
    pairs, report = generate_pairs(records, args.n, seed=args.seed, mix=mix, chains=args.chains)
    written = write_pairs(pairs, args.out)  # to a temporary file, renamed: a failure keeps the old --out
    print(load_report.summary())
    print("\n".join(report.summary_lines()))
    print(f"wrote {written} pairs to {args.out}")
    return 0 if written == args.n else 1


def run_list(args: argparse.Namespace) -> int:
    manifest = load_manifest()
    folder = Path(args.data_dir) if args.data_dir else None
    for dataset in DATASETS:
        if dataset in BUILTIN_SETS:
            print(f"{dataset}: bundled with the project")
            continue
        for entry in manifest_entries(manifest, dataset):
            states = []
            for root in filter(None, (folder, cache_dir())):
                problem = verify_file(root / entry.path, entry)
                states.append(f"{root}: {'verified' if problem is None else problem}")
            print(f"{dataset}: {entry.path} ({entry.bytes} bytes) " + "; ".join(states))
    return 0


def run_check(args: argparse.Namespace) -> int:
    try:
        if args.name in MATH_LOADERS:
            _, load_report = load_records(args.name, args.data_dir)
            print(load_report.summary())
        pairs = read_pairs(args.name) if args.name.endswith(".jsonl") else load_pairs(
            args.name, data_dir=args.data_dir, seed=args.seed)
    except DataError as error:
        print(f"measure data check: error: {error}", file=sys.stderr)
        return 2
    failures = {pair.id: violations for pair in pairs if (violations := check_pair(pair))}
    for pair_id, violations in list(failures.items())[:20]:
        print(f"{pair_id}: {'; '.join(violations)}")
    print(f"{len(pairs)} pairs, {len(failures)} with violations")
    return 1 if failures else 0


def run_download(args: argparse.Namespace) -> int:
    cache = Path(args.cache_dir) if args.cache_dir else cache_dir()
    try:
        results = download_dataset(args.name, cache)
    except DataError as error:
        print(f"measure data download: error: {error}", file=sys.stderr)
        return 2
    for path, state in results.items():
        print(f"{cache / path}: {state}")
    return 0
