"""pytest plugin: measurement options, cases, the ``measurement`` fixture and the session report.

Registered through the ``pytest11`` entry point in pyproject.toml; its state lives in
``config.stash``. What it adds:

- options ``--measure-*`` (see ``pytest --help``, group "measure");
- ``measure_case``: a test taking it is parametrized over condition x injection point x problem
  (:mod:`measure.pytest_plugin.cases`), with keywords for the variation type, dataset and kind,
  and an ``xdist_group`` mark per problem;
- ``measure_suite``: the process's :class:`~measure.pytest_plugin.suite.Suite`; each problem's
  engine run is computed once per process and shared by all of its cases;
- ``measurement``: ``measurement.record(record, invariants)`` keeps a record; after the test it is
  written with ``record["test"] = {"nodeid", "outcome", "failed_invariants", "worker"}``.

Records are appended and fsynced per test to a per-process file under ``<out>/workers/<run>/``
(:mod:`measure.pytest_plugin.worker_log`), so a worker killed mid-run loses at most the test it
was running. At session end the controller (the only process of a serial run, or the xdist
controller) merges them into ``samples.jsonl`` and writes ``metrics.json`` and ``report.html`` as
``measure run`` does, listing every measurement test that produced no record and why
(:mod:`measure.pytest_plugin.merge`). Nothing is written by a session without measurement tests.
A serial session also appends each record to ``<out>/samples.jsonl`` as it goes (with a
``run.json`` written at its first record), so a session that crashes leaves a folder that
``measure report`` renders.

A session that cannot measure does not pass: a model that cannot be loaded fails every
measurement test with the reason (instead of skipping it), and a session whose selected
measurement tests recorded nothing at all ends with a non-zero exit status and says so. Bad
``--measure-*`` values, an unavailable ``--measure-device`` and a ``--measure-out`` folder that is
not empty and holds no run are usage errors before any test runs.

Under xdist (``-n N``) without an explicit ``--dist``, the plugin switches the distribution to
``loadgroup``, so all cases of a problem run on one worker and its engine run is computed once.
With an explicit ``--dist`` the user's choice stands (a problem may then be computed on several
workers; the records are the same). Under ``-n N`` each worker uses cores / N torch threads
unless ``--measure-threads`` says otherwise.

This module must stay cheap to import (every pytest run loads it): torch and the engine are
imported only when measurement tests are collected or run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from measure.pytest_plugin.merge import merge_run, write_session_reports
from measure.pytest_plugin.options import SuiteOptions, add_options, load_problems
from measure.pytest_plugin.worker_log import WorkerLog
from measure.records import REPORT_FILE, RUN_MARKERS, SAMPLES_FILE, WORKERS_DIR
from measure.records.run_folder import is_run_folder, write_run_info
from measure.records.store import RecordStore, write_records

STATE = pytest.StashKey["MeasureState"]()
PENDING = pytest.StashKey[list]()
RESULT = pytest.StashKey[dict]()
MEASUREMENT_FIXTURE = "measurement"
CASE_FIXTURE = "measure_case"


@dataclass
class MeasureState:
    options: SuiteOptions
    out: Path
    run_id: str
    worker_id: str  # "gw0".. under xdist, "main" otherwise
    is_worker: bool
    workers: int  # xdist workers (0 for a serial run)
    loadgroup: bool = False
    collected: list[str] = field(default_factory=list)  # measurement tests, plain node ids
    cases: dict = field(default_factory=dict)  # plain node id -> Case
    _log: object = None
    _settings: object = None
    _problems: list | None = None
    _suite: object = None
    _live: object = None  # serial sessions: the RecordStore of <out>/samples.jsonl
    summary: str | None = None
    notes: list[str] = field(default_factory=list)  # repeated points etc., shown at the end
    usage_error: Exception | None = None  # bad --measure-* values found while parametrizing

    @property
    def run_dir(self) -> Path:
        return self.out / WORKERS_DIR / self.run_id

    @property
    def groups_dir(self) -> Path:
        """Where workers leave their items' xdist groups for the scheduler (deleted at the end)."""
        return Path(tempfile.gettempdir()) / f"measure-xdist-{self.run_id}"

    @property
    def log(self):
        if self._log is None:
                self._log = WorkerLog(self.run_dir, self.worker_id)
        return self._log

    def settings(self):
        if self._settings is None:
            self._settings, self.notes = self.options.settings_and_notes()
        return self._settings

    @property
    def serial(self) -> bool:
        return not self.is_worker and self.workers == 0

    def live_samples(self):
        """Serial sessions: ``<out>/samples.jsonl`` (started afresh) and an early ``run.json``,
        so a crash leaves a folder ``measure report`` can render; the end of the session rewrites
        both from the merged records."""
        if self._live is None:
            from measure.run.provenance import provenance  # here, not at the top: keeps the plugin's import cheap (torch)

            self.out.mkdir(parents=True, exist_ok=True)
            settings = {**self.settings().as_dict(), "out": str(self.out)}
            info = provenance(settings, {"name": settings["model"]})
            info["pytest"] = {"run_id": self.run_id, "workers": 0, "state": "running (a crash leaves this)"}
            write_run_info(self.out, info)
            write_records(self.out / SAMPLES_FILE, [])
            self._live = RecordStore(self.out / SAMPLES_FILE)
        return self._live

    def problems(self) -> list:
        if self._problems is None:
            self._problems = load_problems(self.settings())
            if not self._problems:
                raise pytest.UsageError(f"measure: dataset {self.settings().dataset!r} gave no problems "
                                        "with these filters")
        return self._problems

    def suite(self):
        if self._suite is None:
            from measure.pytest_plugin.suite import (  # here, not at the top: keeps the plugin's import cheap (torch, the engine)
                Suite,
                auto_threads,
            )

            self._suite = Suite(self.settings(), self.problems(), list(self.cases.values()),
                                auto_threads(self.options.threads, self.workers), self.log)
        return self._suite


def state_of(config) -> MeasureState:
    return config.stash[STATE]


# -- configuration ------------------------------------------------------------------------------
def pytest_addoption(parser) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "measure(condition, point, problem, variation_type): a measurement "
                                       "case, added by the measure plugin")
    config.addinivalue_line("markers", "xdist_group(name): run these tests on one xdist worker")
    options = SuiteOptions.from_config(config)
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and "measure_out" in workerinput:
        state = MeasureState(options, Path(workerinput["measure_out"]), workerinput["measure_run_id"],
                             workerinput.get("workerid", "gw?"), True, int(workerinput.get("workercount", 1)),
                             loadgroup=bool(workerinput.get("measure_loadgroup")))
        if state.loadgroup:
            config.option.loadgroup = True  # xdist's worker adds the "@group" suffix the scheduler uses
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = Path(options.out) if options.out else Path("reports") / f"pytest-{stamp}"
        out = (config.invocation_params.dir / out).resolve()
        _check_out(out)
        xdist_on = _xdist_on(config)
        state = MeasureState(options, out, f"{stamp}-{os.getpid()}", "main", False,
                             int(config.getoption("numprocesses", 0) or 0) if xdist_on else 0)
        if xdist_on and config.option.dist == "load" and not _dist_given(config):
            config.option.dist = "loadgroup"
        state.loadgroup = xdist_on and config.option.dist == "loadgroup"
    config.stash[STATE] = state
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(), "measure-xdist-hooks")


def _check_out(out: Path) -> None:
    """Refuse a --measure-out that is a file, or a non-empty folder holding no run (the user's)."""
    if out.exists() and not out.is_dir():
        raise pytest.UsageError(f"measure: --measure-out {out}: a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not is_run_folder(out):
        raise pytest.UsageError(f"measure: --measure-out {out}: the folder is not empty and holds no measurement "
                                f"run (none of {', '.join(RUN_MARKERS)}); the session would write its "
                                "report there. Choose another --measure-out")


def _xdist_on(config) -> bool:
    return (config.pluginmanager.hasplugin("xdist") and bool(getattr(config.option, "numprocesses", None))
            and getattr(config.option, "dist", "no") != "no" and not config.getoption("collectonly"))


def _dist_given(config) -> bool:
    """Whether the user chose a --dist mode (command line, PYTEST_ADDOPTS or ini addopts)."""
    args = [str(a) for a in config.invocation_params.args]
    args += shlex.split(os.environ.get("PYTEST_ADDOPTS", ""))
    with contextlib.suppress(ValueError, KeyError):  # no addopts ini value
        args += [str(a) for a in config.getini("addopts")]
    return any(a in ("--dist", "-d", "--distload") or a.startswith("--dist=") for a in args)


class _XdistHooks:
    """xdist-only hooks, registered only when xdist is installed (unknown hooks are errors)."""

    @pytest.hookimpl
    def pytest_configure_node(self, node) -> None:
        state = state_of(node.config)
        node.workerinput["measure_out"] = str(state.out)
        node.workerinput["measure_run_id"] = state.run_id
        node.workerinput["measure_loadgroup"] = state.loadgroup

    @pytest.hookimpl(tryfirst=True)
    def pytest_xdist_make_scheduler(self, config, log):
        if config.getvalue("dist") != "loadgroup":
            return None
        from measure.pytest_plugin.scheduling import CrashSafeLoadGroupScheduling  # xdist, an optional dependency

        return CrashSafeLoadGroupScheduling(config, log, groups_dir=state_of(config).groups_dir)

    @pytest.hookimpl
    def pytest_unconfigure(self, config) -> None:
        state = config.stash.get(STATE, None)
        if state is not None and not state.is_worker and state.groups_dir.is_dir():
            shutil.rmtree(state.groups_dir, ignore_errors=True)


# -- collection ---------------------------------------------------------------------------------
def pytest_generate_tests(metafunc) -> None:
    if CASE_FIXTURE not in metafunc.fixturenames:
        return
    from measure.pytest_plugin.cases import (
        build_cases,  # here, not at the top: keeps the plugin's import cheap (numpy, the metrics)
    )

    state = state_of(metafunc.config)
    if state.usage_error is not None:
        return
    try:
        settings = state.settings()
        problems = state.problems()
    except pytest.UsageError as error:
        # Raised here it would be a collection error with a traceback; raised from
        # pytest_collection_finish it is pytest's one-line "ERROR: ..." and exit status 4.
        state.usage_error = error
        return
    labels = [point.label for point in settings.injection_points()]
    cases = build_cases(problems, settings.conditions, labels, settings.dataset)
    params = [pytest.param(case, id=case.id, marks=[
        pytest.mark.xdist_group(name=case.problem_id),
        pytest.mark.measure(condition=case.condition, point=case.point, problem=case.problem_id,
                            variation_type=case.variation_type),
    ]) for case in cases]
    metafunc.parametrize(CASE_FIXTURE, params, indirect=True)


def pytest_itemcollected(item) -> None:
    case = _case_of(item)
    if case is not None:
        item.extra_keyword_matches.update(case.keywords)


def _case_of(item):
    callspec = getattr(item, "callspec", None)
    return callspec.params.get(CASE_FIXTURE) if callspec is not None else None


def _is_measurement(item) -> bool:
    return MEASUREMENT_FIXTURE in getattr(item, "fixturenames", ())


def plain_nodeid(item) -> str:
    """The node id without the ``@group`` suffix xdist's loadgroup adds on pytest < 9 (so records
    name the same test serially and under -n)."""
    nodeid = item.nodeid
    groups = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                     for m in item.iter_markers("xdist_group")})
    suffix = "@" + "_".join(groups)
    return nodeid[: -len(suffix)] if groups and nodeid.endswith(suffix) else nodeid


@pytest.hookimpl(tryfirst=True)  # before xdist's worker reports its collection to the controller
def pytest_collection_finish(session) -> None:
    state = state_of(session.config)
    if state.usage_error is not None:
        raise state.usage_error
    if session.config.getoption("collectonly"):
        return
    if state.is_worker and state.loadgroup:
        from measure.pytest_plugin.scheduling import write_groups  # xdist, an optional dependency

        write_groups(state.groups_dir, state.worker_id, session.items)
    tests = []
    for item in session.items:
        if not _is_measurement(item):
            continue
        nodeid = plain_nodeid(item)
        case = _case_of(item)
        state.collected.append(nodeid)
        if case is not None:
            state.cases[nodeid] = case
        tests.append({"nodeid": nodeid, "key": case.key if case is not None else None})
    if tests:
        state.log.event("collected", tests=tests)


# -- fixtures -----------------------------------------------------------------------------------
class Measurement:
    """Records of one test. ``record()`` keeps a record (a dict with a ``key``; the test's node id
    when absent); the plugin writes it after the test, with ``record["test"]`` filled in."""

    def __init__(self, item, state: MeasureState):
        self.nodeid = plain_nodeid(item)
        self.state = state
        self._pending = item.stash.setdefault(PENDING, [])

    def record(self, record: dict, invariants=None) -> dict:
        record = dict(record)
        record.setdefault("key", self.nodeid)
        if invariants is not None:
            record["invariants"] = {inv.name: inv.as_dict() for inv in invariants}
        json.dumps(record, allow_nan=False)  # fails here, in the test, if it cannot be stored
        self._pending.append(record)
        return record

    @property
    def records(self) -> list[dict]:
        return list(self._pending)


@pytest.fixture
def measurement(request) -> Measurement:
    """Keep measurement records: ``measurement.record(record_dict, invariants=None)``."""
    return Measurement(request.node, state_of(request.config))


@pytest.fixture
def measure_case(request):
    """The case (condition, point, problem) of a parametrized measurement test."""
    if not hasattr(request, "param"):
        pytest.fail("measure_case is parametrized by the measure plugin; it cannot be requested indirectly")
    return request.param


@pytest.fixture(scope="session")
def measure_suite(request):
    """This process's Suite: model loaded once, each problem's engine run computed once."""
    return state_of(request.config).suite()


# -- running ------------------------------------------------------------------------------------
@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if not _is_measurement(item):
        return (yield)
    state = state_of(item.config)
    nodeid = plain_nodeid(item)
    state.log.event("start", nodeid)
    written = 0
    try:
        return (yield)
    finally:
        written = item.stash.get(RESULT, {}).get("written", 0) + _flush(item, state)
        result = item.stash.get(RESULT, {"outcome": "unknown", "message": ""})
        state.log.event("end", nodeid, outcome=result["outcome"], message=result["message"], records=written)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if _is_measurement(item) and (report.when == "call" or (report.when == "setup" and not report.passed)):
        outcome = "xfailed" if hasattr(report, "wasxfail") else report.outcome
        item.stash[RESULT] = {"outcome": outcome, "message": _message(report), "written": 0}
        if report.when == "call":
            item.stash[RESULT]["written"] = _flush(item, state_of(item.config))
    return report


def _flush(item, state: MeasureState) -> int:
    """Write the test's pending records (with their ``test`` section); returns how many."""
    pending = item.stash.get(PENDING, [])
    result = item.stash.get(RESULT, {"outcome": "unknown"})
    count = 0
    while pending:
        record = pending.pop(0)
        failed = [name for name, inv in (record.get("invariants") or {}).items()
                  if isinstance(inv, dict) and not inv.get("ok", True)]
        record["test"] = {**(record.get("test") or {}), "nodeid": plain_nodeid(item),
                          "outcome": result["outcome"], "failed_invariants": failed, "worker": state.worker_id}
        state.log.record(record)
        if state.serial:
            state.live_samples().append(record)
        count += 1
    return count


def _message(report) -> str:
    if report.skipped and isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        text = str(report.longrepr[2])
        return re.sub(r"^Skipped: ", "", text)
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr or "")
    return text.strip()[:500]


# -- the end of the session ---------------------------------------------------------------------
def pytest_sessionfinish(session, exitstatus) -> None:
    state = state_of(session.config)
    if state.is_worker or not state.run_dir.is_dir():
        return
    merged = merge_run(state.run_dir)
    try:
        info = _provenance(session.config, state, merged)
        write_session_reports(state.out, merged, info)
        report = state.out / REPORT_FILE
    except Exception as error:  # the records are in samples.jsonl whatever the report does
        write_records(state.out / SAMPLES_FILE, merged.records)
        report = f"(report not written: {error!r})"
    lines = [f"measure: {len(merged.records)} records from {len(merged.expected) - len(merged.missing)} of "
             f"{len(merged.expected)} measurement tests -> {report}"]
    lines += [f"measure: note: {note}" for note in state.notes]
    for missing in merged.missing:
        lines.append(f"measure: no record from {missing['nodeid']}: {missing['reason']}")
    if merged.expected and not merged.records:
        # Every selected measurement test skipped or failed before recording: the session
        # measured nothing and must not pass (a CI job whose model does not load, say).
        lines.append(f"measure: error: none of the {len(merged.expected)} selected measurement tests recorded "
                     "anything; the session fails")
        if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    state.summary = "\n".join(lines)


def _provenance(config, state: MeasureState, merged) -> dict:
    from measure.run.provenance import provenance  # here, not at the top: keeps the plugin's import cheap (torch)

    settings = state.settings().as_dict()
    settings["out"] = str(state.out)
    model = dict(merged.models[0]) if merged.models else {"name": settings["model"]}
    model.pop("worker", None)
    info = provenance(settings, model)
    info["pytest"] = {"args": [str(a) for a in config.invocation_params.args], "run_id": state.run_id,
                      "workers": state.workers, "dist": getattr(config.option, "dist", "no"),
                      "processes": merged.models}
    return info


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    state = config.stash.get(STATE, None)
    if state is not None and state.summary:
        terminalreporter.write_sep("-", "measure")
        terminalreporter.write_line(state.summary)
