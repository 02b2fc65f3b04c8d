"""The command line of the adaptation-latency measurement suite: its commands are listed below,
and ``measure <command> --help`` describes each."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys

from measure.data.cli import register as register_data
from measure.models_cli import register as register_models
from measure.records import METRICS_FILE, REPORT_FILE
from measure.records.run_folder import resume_settings
from measure.records.upgrade import register as register_upgrade
from measure.report.cli import register as register_report
from measure.report.findings import findings_text
from measure.serve.cli import register as register_serve
from measure.settings import DEFAULTS, FIELDS, RunSettings, SettingsError, add_flags, from_toml

RUN_HELP = "measure how a model adapts to a context change injected mid-generation"


def add_run_parser(subparsers) -> None:
    run = subparsers.add_parser("run", help=RUN_HELP, description=RUN_HELP,
                                argument_default=argparse.SUPPRESS)
    run.add_argument("--config", help="TOML file with any of these settings (flags override it)")
    add_flags(run.add_argument, suppress=True)  # one flag per setting, defaults and help from measure.settings
    run.add_argument("--force", action="store_true",
                     help="write into a non-empty --out folder that holds no run (its metrics.json and report.html "
                          "would be replaced)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(func=run_command)


def add_bench_parser(subparsers) -> None:
    bench = subparsers.add_parser("bench", help="time the engine against the naive way, side by side")
    bench.add_argument("--model", default=DEFAULTS.model)
    bench.add_argument("--device", default=DEFAULTS.device)
    bench.add_argument("--dtype", default=DEFAULTS.dtype)
    bench.add_argument("--problems", type=int, default=8)
    bench.add_argument("--max-new-tokens", type=int, default=128)
    bench.add_argument("--points", default="8,0.5")
    bench.add_argument("--batch-size", type=int, default=128)
    bench.add_argument("--skip-naive", action="store_true", help="skip the (slow) naive way")
    bench.add_argument("--skip-long", action="store_true", help="skip the run at twice the tokens")
    bench.set_defaults(func=bench_command)


def bench_command(args: argparse.Namespace) -> int:
    from measure.bench import run_bench  # torch: loaded for this command only, so the CLI starts fast

    return run_bench(args)


def _interrupt_on_sigterm() -> None:
    """Treat SIGTERM like Ctrl-C: records are already flushed; say how to resume."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def run_command(args: argparse.Namespace) -> int:
    from measure.run.runner import run_measurement  # torch: loaded for this command only, so the CLI starts fast

    given = {k: v for k, v in vars(args).items() if k in FIELDS}
    _interrupt_on_sigterm()
    try:
        values = {**(from_toml(args.config) if getattr(args, "config", None) else {}), **given}
        if values.get("resume"):
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
    metrics = json.loads((out / METRICS_FILE).read_text(encoding="utf-8"))
    print(findings_text(metrics.get("findings") or {}))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="measure", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_run_parser(subparsers)
    register_report(subparsers)
    register_data(subparsers)
    add_bench_parser(subparsers)
    register_models(subparsers)  # measure models, measure compare-models
    register_serve(subparsers)
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
