"""`measure report DIR` and `measure compare BASE NEW [--fail GATE ...]` subcommands.

`register(subparsers)` adds both to the top-level parser; each sets `func` to its handler, which
returns the process exit code: 0 success, 1 a gate failed (compare), 2 a usage error (unknown
metric in a gate, bad gate, missing files).
"""

from __future__ import annotations

import argparse
import sys

from measure.records import REPORT_FILE
from measure.records.columnar import layout_note
from measure.report.compare import CompareError, compare
from measure.report.summary import render_from_dir

GATE_HELP = """gate METRIC.STAT:TOL, repeatable; e.g. 'adaptation_latency.median:+2' (may rise by at most 2),
'kl_oracle_short.mean:5%%' (may move by at most 5%% of the base either way), '-0.1' (may fall by at
most 0.1); prefix 'CONDITION/' to gate one condition. See measure.report.compare for the rules."""


def register(subparsers) -> None:
    report = subparsers.add_parser("report", help="re-render report.html and metrics.json from a run directory")
    report.add_argument("run_dir", help="directory holding samples.jsonl (and metrics.json or run.json)")
    report.add_argument("--resamples", type=int, default=None, help="bootstrap resamples (default 2000)")
    report.add_argument("--alpha", type=float, default=None,
                        help="false-event rate of the calibrated latencies (default: the run's own, else 0.05)")
    report.set_defaults(func=run_report)

    comp = subparsers.add_parser("compare", help="differences between two runs, with regression gates")
    comp.add_argument("base", help="baseline run directory (or its metrics.json)")
    comp.add_argument("new", help="new run directory (or its metrics.json)")
    comp.add_argument("--fail", action="append", default=[], metavar="GATE", help=GATE_HELP)
    comp.add_argument("--per-variation", action="store_true",
                      help="also show and gate the rows of each variation type (default: variation types pooled)")
    comp.add_argument("--changed", action="store_true", help="show only rows whose value changed")
    comp.add_argument("--max-check", action="append", default=[], metavar="CHECK:MAX",
                      help="bound on an invariant check of the new run, e.g. 'full_recompute_max_kl:1e-5'")
    comp.add_argument("--max-value", action="append", default=[], metavar="PATH:MAX",
                      help="bound on values of the new run's metrics.json at a dotted path, '*' matching every key "
                           "of a level, e.g. 'calibration.lead.points.*.false_event_rate.controls.estimate:0.1'")
    comp.set_defaults(func=run_compare)


def run_report(args: argparse.Namespace) -> int:
    options = {} if args.resamples is None else {"n_resamples": args.resamples}
    if args.alpha is not None:
        if not 0 < args.alpha < 1:
            print(f"measure report: error: --alpha {args.alpha}: the false-event rate must lie strictly between 0 and 1",
                  file=sys.stderr)
            return 2
        options["alpha"] = args.alpha
    try:
        metrics = render_from_dir(args.run_dir, **options)
    except (OSError, ValueError) as error:
        print(f"measure report: error: {error}", file=sys.stderr)
        return 2
    for warning in metrics.get("warnings") or []:
        print(f"warning: {warning}", file=sys.stderr)
    counts = metrics.get("counts") or {}
    print(f"{args.run_dir}/{REPORT_FILE}: {counts.get('records', 0)} records, {counts.get('problems', 0)} problems")
    note = layout_note(args.run_dir)  # a run in layout 1 opens; upgrading it makes it smaller
    if note:
        print(note, file=sys.stderr)
    return 0


def run_compare(args: argparse.Namespace) -> int:
    try:
        result = compare(args.base, args.new, args.fail, per_variation=args.per_variation,
                         check_gates=args.max_check, value_gates=args.max_value)
    except CompareError as error:
        print(f"measure compare: error: {error}", file=sys.stderr)
        return 2
    print(result.table(only_changed=args.changed))
    print()
    print(result.summary())
    return result.exit_code


def main(argv=None) -> int:
    """Standalone entry (``python -m measure.report.cli``) with only these two subcommands. The
    ``measure`` command reaches the same handlers: measure.cli calls :func:`register`."""
    parser = argparse.ArgumentParser(prog="measure")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
