"""Command line: measure run | report | compare | augment | data | bench | serve | upgrade."""

from __future__ import annotations

import argparse
import logging
import sys

from measure.records import METRICS_FILE, REPORT_FILE

RUN_HELP = "measure how a model adapts to a context change injected mid-generation"


def _list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def add_run_parser(subparsers) -> None:
    from measure.settings import VARIATION_TYPE_NAMES

    run = subparsers.add_parser("run", help=RUN_HELP, description=RUN_HELP,
                                argument_default=argparse.SUPPRESS)
    run.add_argument("--config", help="TOML file with any of these settings (flags override it)")
    run.add_argument("--model", help="embedded:smollm2-135m-instruct (default), a HF id, a folder or a .gguf file")
    run.add_argument("--dataset", help="builtin-easy (default), builtin, mawps, svamp, gsm8k, fairytaleqa, nq_open, "
                     "or a .json/.jsonl file of pairs")
    run.add_argument("--data-dir", help="dataset folder (default $MEASURE_DATA_DIR)")
    run.add_argument("--limit", type=int, help="number of problems (default: all of the dataset)")
    run.add_argument("--variation-types", type=_list,
                     help=f"comma list of {','.join(VARIATION_TYPE_NAMES)}")
    run.add_argument("--conditions", type=_list, help="comma list (default: all seven)")
    run.add_argument("--points", type=_list,
                     help="injection points: token counts (16) or fractions (0.3), comma list (default 8)")
    run.add_argument("--max-new-tokens", type=int, help="tokens generated per run at most (default 96)")
    run.add_argument("--seed", type=int)
    run.add_argument("--temperature", type=float, help="0 (default) decodes greedily")
    run.add_argument("--device", help="cpu | cuda | mps")
    run.add_argument("--dtype", help="float32 | bfloat16 | float16")
    run.add_argument("--out", help="output folder (default reports/run-<time>)")
    run.add_argument("--resume", action="store_true",
                     help="complete the interrupted run in --out, with the settings saved in its run.json")
    run.add_argument("--force", action="store_true",
                     help="write into a non-empty --out folder that holds no run (its metrics.json and report.html "
                          "would be replaced)")
    run.add_argument("--prompt-style", help="chat (default) | raw")
    run.add_argument("--system-prompt", help="system prompt of math problems")
    run.add_argument("--qa-system-prompt", help="system prompt of reading questions (kind qa)")
    run.add_argument("--update-form", help="erratum (default) | restatement")
    run.add_argument("--partial-recompute-last", type=int, help="generated tokens recomputed by 'partial'")
    run.add_argument("--update-gap", type=int,
                     help="generated tokens between the updates of the strategies multi, multi_retract, gradual (default 6)")
    run.add_argument("--gradual-pieces", type=int, help="pieces the update is split into by 'gradual' (default 3)")
    run.add_argument("--batch-size", type=int, help="rows decoded together at most (default 64)")
    run.add_argument("--group-size", type=int, help="problems measured together (default 3)")
    run.add_argument("--no-attention", dest="attention", action="store_false")
    run.add_argument("--no-hidden-states", dest="hidden_states", action="store_false")
    run.add_argument("--no-semantic", dest="semantic", action="store_false")
    run.add_argument("--no-verify-recompute", dest="verify_recompute", action="store_false")
    run.add_argument("--trust-remote-code", action="store_true")
    run.add_argument("--alpha", type=float,
                     help="false-event rate at which latency events are calibrated on control runs (default 0.05)")
    run.add_argument("--executor", help="local (default: this process) | ray (Ray actors; pip install 'measure[ray]')")
    run.add_argument("--ray-address", help="with --executor ray: unset starts a local Ray instance; 'auto' or host:port "
                     "joins a running cluster (`ray start`)")
    run.add_argument("--workers", type=int, help="with --executor ray: actors, each loading the model "
                     "(default: one per GPU with --device cuda, else one per CPU)")
    run.add_argument("--gpus-per-worker", type=float, help="with --executor ray: GPUs per actor, 0 to 1 "
                     "(default 1 with --device cuda, else 0; 0.5 puts two actors on a GPU)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(func=run_command)


def _interrupt_on_sigterm() -> None:
    """Treat SIGTERM like Ctrl-C: records are already flushed; say how to resume."""
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def run_command(args: argparse.Namespace) -> int:
    from measure.run.runner import run_measurement
    from measure.settings import FIELDS, RunSettings, SettingsError, from_toml

    given = {k: v for k, v in vars(args).items() if k in FIELDS}
    _interrupt_on_sigterm()
    try:
        values = {**(from_toml(args.config) if getattr(args, "config", None) else {}), **given}
        if values.get("resume"):
            from measure.records.run_folder import resume_settings

            if not values.get("out"):
                raise SettingsError("--resume needs --out, the folder of the run to continue")
            # The saved settings are the run's; what was given here must agree with them.
            settings, _ = resume_settings(values["out"], {k: v for k, v in values.items() if k not in ("resume", "out")})
        else:
            settings = RunSettings(**values)
        out = run_measurement(settings, show_progress=not getattr(args, "quiet", False),
                              force=getattr(args, "force", False))
    except Exception as error:
        if not is_user_error(error) or getattr(args, "verbose", False):
            raise
        print(error_line("run", error), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nmeasure run: interrupted; what was measured is saved. Rerun with --resume to finish.",
              file=sys.stderr)
        return 130
    print_findings(out)
    print(f"report: {out / REPORT_FILE}")
    return 0


def print_findings(out) -> None:
    """What the run found, as the report's Findings section says it, on the terminal."""
    import json

    from measure.report.findings import findings_text

    metrics = json.loads((out / METRICS_FILE).read_text(encoding="utf-8"))
    print(findings_text(metrics.get("findings") or {}))


def build_parser() -> argparse.ArgumentParser:
    from measure.data.cli import register as register_data
    from measure.report.cli import register as register_report

    parser = argparse.ArgumentParser(prog="measure", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_run_parser(subparsers)
    register_report(subparsers)
    register_data(subparsers)
    from measure.bench import register as register_bench

    register_bench(subparsers)
    from measure.models_cli import register as register_models

    register_models(subparsers)  # measure models, measure compare-models
    from measure.serve.cli import register as register_serve

    register_serve(subparsers)
    from measure.records.upgrade import register as register_upgrade

    register_upgrade(subparsers)  # measure upgrade RUN: layout 1 -> 2
    return parser


#: Exceptions that mean the user's input (flags, files, folders, environment) is wrong, by the
#: module that defines them: such an error is one line and exit code 2, not a traceback. Looked up
#: in sys.modules so that `measure report` does not import torch to recognise ModelLoadError.
USER_ERRORS = {"measure.settings": "SettingsError", "measure.data.errors": "DataError",
               "measure.model.load": "ModelLoadError", "measure.engine.conditions": "UnsupportedCondition",
               "measure.report.compare": "CompareError", "measure.records.store": "StoreError",
               "measure.run.executors": "ExecutorError", "measure.records.record": "RecordError"}


def is_user_error(error: BaseException) -> bool:
    if isinstance(error, OSError):  # a path that is missing, not a folder, not writable, a full disk
        return True
    return any(isinstance(error, getattr(sys.modules[module], name))
               for module, name in USER_ERRORS.items() if module in sys.modules)


def error_line(command: str, error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return f"measure {command}: error: {text}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return int(args.func(args) or 0)
    except Exception as error:  # user errors raised past a subcommand's own handling: one line, exit 2
        if not is_user_error(error) or args.verbose:
            raise
        command = " ".join(filter(None, (args.command, getattr(args, "data_action", None))))
        print(error_line(command, error), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
