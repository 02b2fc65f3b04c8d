"""``measure models`` (the embedded models: license, size, architecture, base or instruct) and
``measure compare-models`` (runs of different models side by side). Light at import: the
parser is built on every command, the work imports what it needs when it runs."""

from __future__ import annotations

import json
import sys

from measure.model.embedded import EMBEDDED_MODELS, describe
from measure.report.compare_models import CompareModelsError, headline, write_comparison


def register(subparsers) -> None:
    models = subparsers.add_parser(
        "models", help="list the embedded models", description="The embedded models (--model embedded:NAME): "
        "architecture, base or instruct, license, size, and whether their packages are installed.")
    models.add_argument("--json", action="store_true", help="print JSON instead of a table")
    models.set_defaults(func=models_command)

    compare = subparsers.add_parser(
        "compare-models", help="put runs of different models on the same problems side by side",
        description="One self-contained HTML + JSON comparing runs of different models (measure run folders) "
                    "over the problems they share; refuses runs whose problems or settings break the pairing.")
    compare.add_argument("runs", nargs="+", metavar="RUN_DIR", help="folders written by measure run (two or more)")
    compare.add_argument("--out", required=True, help="output folder for compare-models.html and compare-models.json")
    compare.set_defaults(func=compare_models_command)


def models_command(args) -> int:
    rows = [describe(model) for model in EMBEDDED_MODELS.values()]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    header = ("name", "architecture", "kind", "params", "quant", "size", "license", "installed")
    table = [header] + [(r["name"], r["architecture"], r["kind"], r["parameters"], r["quantization"],
                         f"{r['gguf_bytes'] / 2**20:.0f} MiB" if r["gguf_bytes"] else "-", r["license"],
                         "yes" if r["installed"] else "no") for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
    for r in rows:
        if not r["installed"]:
            print(f"{r['name']}: not installed; {r['install']}")
    return 0


def compare_models_command(args) -> int:
    try:
        json_path, html_path = write_comparison(args.runs, args.out)
    except CompareModelsError as error:
        print(f"measure compare-models: error: {error}", file=sys.stderr)
        return 2
    for line in headline(json.loads(json_path.read_text(encoding="utf-8"))):
        print(line)
    print(f"report: {html_path}\njson: {json_path}")
    return 0
