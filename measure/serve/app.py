"""The Starlette app of ``measure serve``: the page, a JSON API and server-sent event streams.

Routes:

- ``GET /``: the page (``static/index.html``, with ``app.js`` and ``app.css``; nothing from
  outside). ``GET /static/...``: its files.
- ``GET /api/info``: the model, the limits, the conditions and the queue.
- ``GET /api/datasets``, ``GET /api/pairs?dataset=``: pairs to pick (built-in, augmented, files).
- ``POST /api/update``: the update generated from A and B (the page's "generate" button).
- ``POST /api/experiments``: submit an experiment (JSON); 202 with its id and queue position,
  422 for a bad field, 413 for a body over the limit, 415 for a body that is not JSON, 429 when
  the queue is full.
- ``GET /api/experiments/{id}/events``: its messages (:mod:`measure.serve.live`) as server-sent
  events, from the first (or after ``Last-Event-ID``); closing the last stream cancels it.
- ``GET /api/experiments/{id}``: its state; ``POST /api/experiments/{id}/cancel``.
- ``GET /api/runs``: run folders to watch; ``GET /api/runs/events?id=``: a folder's records and
  Findings as they arrive; ``GET /api/calibration?id=``: a finished run's calibration.

Requests that change anything must be ``application/json``: a page from another site cannot
send that without a CORS preflight, which this app never grants. With ``allowed_hosts`` the
Host header is checked too (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from importlib import resources

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from measure.engine.conditions import CONDITION_NAMES, DEFAULT_CONDITIONS
from measure.engine.engine import UPDATE_FORMS
from measure.records import SAMPLES_FILE
from measure.records.run_folder import run_finished
from measure.serve import requests as limits
from measure.serve.catalogue import PairCatalogue, build_pair, generated_update, pair_summary
from measure.serve.experiments import Experiment, ExperimentQueue, QueueFull
from measure.serve.live import LiveRun
from measure.serve.marks import CalibrationError, read_calibration
from measure.serve.requests import RequestError, parse_experiment
from measure.serve.watch import RunFolders, SamplesTail, folder_findings, record_summary

STATIC = resources.files("measure.serve") / "static"
TERMINAL = ("done", "cancelled", "error")
POLL_SECONDS = 0.05  # how often an experiment stream looks for new messages
KEEPALIVE_SECONDS = 10.0
WATCH_POLL_SECONDS = 0.5
FINDINGS_INTERVAL_SECONDS = 3.0
RECORDS_PER_MESSAGE = 200
SECURITY_HEADERS = {
    # The page loads only its own files and talks only to this server.
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def error(status: int, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status)


def sse(index: int | None, message: dict) -> str:
    """One server-sent event; JSON keeps every text a string (the page never parses it as HTML)."""
    head = f"id: {index}\n" if index is not None else ""
    return f"{head}data: {json.dumps(message, ensure_ascii=False, allow_nan=False)}\n\n"


async def read_json(request: Request):
    """The request's JSON body, within the size limit; raises RequestError (the field "body")."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise RequestError("body", "send JSON with Content-Type: application/json")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limits.MAX_BODY_BYTES:
        raise RequestError("body", f"is {declared} bytes; at most {limits.MAX_BODY_BYTES} are accepted")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limits.MAX_BODY_BYTES:
            raise RequestError("body", f"is over {limits.MAX_BODY_BYTES} bytes; at most that many are accepted")
    try:
        return json.loads(body or b"null")
    except ValueError as err:
        raise RequestError("body", f"is not valid JSON ({err})") from None


def _status_of(err: RequestError) -> int:
    text = str(err)
    if err.field == "body" and "Content-Type" in text:
        return 415
    if err.field == "body" and "bytes" in text:
        return 413
    return 422


class ServeState:
    """What the routes share: the model, the queue, the pairs and the run folders."""

    def __init__(self, loaded, *, catalogue: PairCatalogue, folders: RunFolders, max_waiting: int = 2,
                 max_new_tokens: int = limits.MAX_NEW_TOKENS, subscribe_grace: float = 15.0, prompt=None):
        self.loaded = loaded
        self.catalogue = catalogue
        self.folders = folders
        self.queue = ExperimentQueue(max_waiting)
        self.max_new_tokens = max_new_tokens
        self.subscribe_grace = subscribe_grace
        self.prompt = prompt


def create_app(loaded, *, data_dir: str | None = None, pair_files: tuple[str, ...] = (), runs_root=None,
               watch: tuple[str, ...] = (), max_waiting: int = 2, max_new_tokens: int = limits.MAX_NEW_TOKENS,
               subscribe_grace: float = 15.0, allowed_hosts: list[str] | None = None, prompt=None) -> Starlette:
    """The app around a loaded model (:func:`measure.model.load.load_model`)."""
    state = ServeState(loaded, catalogue=PairCatalogue(data_dir, tuple(pair_files)),
                       folders=RunFolders(runs_root, tuple(watch)), max_waiting=max_waiting,
                       max_new_tokens=max_new_tokens, subscribe_grace=subscribe_grace, prompt=prompt)

    async def page(request: Request):
        return FileResponse(str(STATIC / "index.html"), media_type="text/html", headers=SECURITY_HEADERS)

    async def info(request: Request):
        return JSONResponse({
            "model": getattr(state.loaded, "name", None), "device": getattr(state.loaded, "device", None),
            "conditions": list(CONDITION_NAMES), "update_forms": list(UPDATE_FORMS),
            # Checked on the page at first: the single-update conditions (strategies are opt-in, as in measure run).
            "default_conditions": list(DEFAULT_CONDITIONS),
            "defaults": {"points": ",".join(limits.DEFAULT_POINTS), "max_new_tokens": limits.DEFAULT_NEW_TOKENS,
                         "dataset": "builtin-easy"},
            "limits": {"question_chars": limits.MAX_QUESTION_CHARS, "context_chars": limits.MAX_CONTEXT_CHARS,
                       "update_chars": limits.MAX_UPDATE_CHARS, "max_new_tokens": state.max_new_tokens,
                       "points": limits.MAX_POINTS, "body_bytes": limits.MAX_BODY_BYTES},
            "queue": state.queue.status(),
        })

    async def datasets(request: Request):
        return JSONResponse(state.catalogue.datasets())

    async def pairs(request: Request):
        name = request.query_params.get("dataset", "builtin-easy")
        try:
            found = await anyio.to_thread.run_sync(state.catalogue.pairs, name)
        except RequestError as err:
            return error(404 if "unknown dataset" in str(err) else 422, str(err), err.field)
        return JSONResponse({"dataset": name, "pairs": [pair_summary(p) for p in found]})

    async def update(request: Request):
        try:
            body = await read_json(request)
            if not isinstance(body, dict):
                raise RequestError("body", "must be a JSON object")
            question_a = limits.text_field(body, "question_a", limits.MAX_QUESTION_CHARS, required=True)
            question_b = limits.text_field(body, "question_b", limits.MAX_QUESTION_CHARS, required=True)
            kind = limits.choice_field(body, "kind", limits.KINDS, "math")
            form = limits.choice_field(body, "update_form", UPDATE_FORMS, "erratum")
        except RequestError as err:
            return error(_status_of(err), str(err), err.field)
        return JSONResponse({"update": generated_update(kind, question_a, question_b, form)})

    async def submit(request: Request):
        try:
            spec = parse_experiment(await read_json(request), state.max_new_tokens)
            pair, source = await anyio.to_thread.run_sync(build_pair, spec, state.catalogue)
            calibration, note = None, None
            if spec.calibration:
                folder = state.folders.folder(spec.calibration)
                if folder is None:
                    raise RequestError("calibration", f"no run folder {spec.calibration[:60]!r}; pick one from the list")
                try:
                    calibration = read_calibration(folder, spec.calibration)
                except CalibrationError as err:
                    raise RequestError("calibration", str(err)) from None
                model = getattr(state.loaded, "name", None)
                if calibration.model and model and calibration.model != model:
                    note = (f"calibrated on {calibration.model}, but this server runs {model}: "
                            "its thresholds may not transfer")
        except RequestError as err:
            return error(_status_of(err), str(err), err.field)
        work = LiveRun(state.loaded, spec, pair, source, calibration, note, prompt=state.prompt)
        experiment = Experiment(work, state.subscribe_grace)
        try:
            position = state.queue.submit(experiment)
        except QueueFull as full:
            return error(429, str(full))
        return JSONResponse({"id": experiment.id, "position": position,
                             "events": f"/api/experiments/{experiment.id}/events"}, status_code=202)

    def _experiment(request: Request) -> Experiment | None:
        return state.queue.get(request.path_params["experiment_id"])

    async def cancel(request: Request):
        experiment = _experiment(request)
        if experiment is None:
            return error(404, "no such experiment (finished long ago, or never submitted)")
        experiment.cancel("cancelled from the page")
        return JSONResponse({"id": experiment.id, "state": experiment.state, "cancelling": not experiment.finished})

    async def experiment_state(request: Request):
        experiment = _experiment(request)
        if experiment is None:
            return error(404, "no such experiment (finished long ago, or never submitted)")
        return JSONResponse({"id": experiment.id, "state": experiment.state, "reason": experiment.cancel_reason,
                             "messages": len(experiment.messages_from(0)), "subscribers": experiment.subscribers})

    async def experiment_events(request: Request):
        experiment = _experiment(request)
        if experiment is None:
            return error(404, "no such experiment (finished long ago, or never submitted)")
        last = request.headers.get("last-event-id", "")
        start = int(last) + 1 if last.isdigit() else 0

        async def stream():
            experiment.subscribe()
            try:
                index, quiet_since = start, time.monotonic()
                yield "retry: 2000\n\n"
                while True:
                    messages = experiment.messages_from(index)
                    for message in messages:
                        yield sse(index, message)
                        index += 1
                        if message["type"] in TERMINAL:
                            return
                    if messages:
                        quiet_since = time.monotonic()
                    elif time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
                        yield ": keepalive\n\n"
                        quiet_since = time.monotonic()
                    await asyncio.sleep(POLL_SECONDS)
            finally:
                experiment.unsubscribe()

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def runs(request: Request):
        return JSONResponse(await anyio.to_thread.run_sync(state.folders.listing))

    async def calibration(request: Request):
        folder_id = request.query_params.get("id", "")
        folder = state.folders.folder(folder_id)
        if folder is None:
            return error(404, f"no run folder {folder_id[:60]!r}")
        try:
            return JSONResponse(read_calibration(folder, folder_id).summary())
        except CalibrationError as err:
            return error(422, str(err), "calibration")

    async def run_events(request: Request):
        folder_id = request.query_params.get("id", "")
        folder = state.folders.folder(folder_id)
        if folder is None:
            return error(404, f"no run folder {folder_id[:60]!r}; pick one from the list")
        tail = SamplesTail(folder / SAMPLES_FILE)

        async def stream():
            yield "retry: 2000\n\n"
            yield sse(None, {"type": "folder", "id": folder_id, "path": str(folder)})
            dirty, last_findings, last_status, quiet_since = True, 0.0, None, time.monotonic()
            while True:
                new, reset = await anyio.to_thread.run_sync(tail.poll)
                if reset:
                    yield sse(None, {"type": "reset"})
                    dirty = True
                for start in range(0, len(new), RECORDS_PER_MESSAGE):
                    chunk = new[start:start + RECORDS_PER_MESSAGE]
                    yield sse(None, {"type": "records", "items": [record_summary(r) for r in chunk],
                                     "total": len(tail.records)})
                    dirty = True
                status = {"type": "status", "records": len(tail.records), "pending_bytes": tail.pending_bytes,
                          "finished": run_finished(folder), "warnings": tail.warnings[-5:]}
                if status != last_status:
                    yield sse(None, status)
                    last_status = status
                if dirty and tail.records and time.monotonic() - last_findings >= FINDINGS_INTERVAL_SECONDS:
                    dirty, last_findings = False, time.monotonic()
                    try:
                        found = await anyio.to_thread.run_sync(folder_findings, folder, list(tail.records),
                                                               list(tail.warnings))
                        yield sse(None, {"type": "findings", **found})
                    except Exception as err:  # a record the metrics cannot read: say so, keep watching
                        yield sse(None, {"type": "findings_error", "message": f"{type(err).__name__}: {err}"})
                    quiet_since = time.monotonic()
                if time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
                    yield ": keepalive\n\n"
                    quiet_since = time.monotonic()
                await asyncio.sleep(WATCH_POLL_SECONDS)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    routes = [
        Route("/", page),
        Route("/api/info", info),
        Route("/api/datasets", datasets),
        Route("/api/pairs", pairs),
        Route("/api/update", update, methods=["POST"]),
        Route("/api/experiments", submit, methods=["POST"]),
        Route("/api/experiments/{experiment_id}", experiment_state),
        Route("/api/experiments/{experiment_id}/events", experiment_events),
        Route("/api/experiments/{experiment_id}/cancel", cancel, methods=["POST"]),
        Route("/api/runs", runs),
        Route("/api/runs/events", run_events),
        Route("/api/calibration", calibration),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)] if allowed_hosts else []

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        state.queue.stop()

    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.serve = state
    return app
