"""The Ray executor: problem groups spread over Ray actors, each holding one loaded model.

Ray (``pip install measure[ray]``) places the actors (one GPU each, or one CPU each on machines
without GPUs) across the nodes of a cluster; this module only hands groups to idle actors and
collects their outcomes as they complete. A group whose actor dies (killed, out of memory, node
lost) or raises is measured again, on a fresh actor when its own died, up to ``retries`` more
times; after that it is reported as failed with its error, and the other groups go on.

Every node needs this project installed in the same environment as the driver (same ``measure``,
torch and transformers), and the model reachable under the same name (the embedded model ships
with the package; a folder must exist at the same path on every node).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import deque
from collections.abc import Iterator

import torch

from measure.engine.engine import Engine, EngineConfig
from measure.model.load import load_model
from measure.run.executors import Executor, ExecutorError, GroupOutcome, measure_group
from measure.run.preflight import check_context_length
from measure.run.provenance import machine
from measure.settings import RunSettings, SettingsError

try:
    import ray
    from ray.exceptions import RayError, RayTaskError
except ModuleNotFoundError:
    raise SettingsError("--executor ray needs Ray, an optional extra: pip install 'measure[ray]'") from None

log = logging.getLogger(__name__)

#: How many more times a group is measured after its worker died or raised.
RETRIES = 2
#: How much of a worker's error is kept in run.json (a remote traceback can run to pages).
ERROR_CHARS = 4000


class GroupWorker:
    """One worker: loads the model once, then measures the groups it is handed, one at a time.
    A plain class, made an actor by :data:`GroupActor`, so that tests can subclass it with a fault."""

    def __init__(self, settings: dict, cpus: int):
        torch.set_num_threads(max(1, cpus))  # the CPUs Ray reserved for this actor, no more
        self.settings = RunSettings(**settings)
        s = self.settings
        self.loaded = load_model(s.model, s.device, s.dtype, s.trust_remote_code)
        self.engine = Engine(self.loaded, EngineConfig.from_settings(s))
        context = ray.get_runtime_context()
        node_ip = ray.util.get_node_ip_address()
        self.worker = f"ray/{node_ip}/{context.get_actor_id()[:12]}"
        self.about = {"worker": self.worker, "node_id": context.get_node_id(), "node_ip": node_ip,
                      "gpu_ids": [str(i) for i in ray.get_gpu_ids()], "machine": machine(), "model": self.loaded.info()}

    def info(self) -> dict:
        return self.about

    def preflight(self, problems: list) -> str | None:
        """The error of measure.run.preflight's checks on this worker's model, as text (None: all fit)."""
        try:
            check_context_length(self.loaded, problems, self.settings)
        except SettingsError as error:
            return str(error)
        return None

    def measure(self, problems: list) -> tuple[list[dict], list[dict], str]:
        records, skipped = measure_group(self.engine, self.loaded.tokenizer, problems, self.settings, self.worker)
        return records, skipped, self.worker


GroupActor = ray.remote(GroupWorker)


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, settings: RunSettings, retries: int | None = None):
        self.settings, self.retries = settings, RETRIES if retries is None else retries
        self.gpus = settings.gpus_per_worker if settings.gpus_per_worker is not None else (
            1.0 if settings.device.startswith("cuda") else 0.0)
        self.cpus = 1
        self.started_ray = False
        self.actors: list = []
        self.workers: dict[str, dict] = {}  # worker id -> what it reported at start
        self.n_workers = 0
        self.replaced = 0
        self.failed_attempts: list[dict] = []  # each failed attempt: the group's problems, the attempt, its error

    # -- starting ---------------------------------------------------------------------------------
    def _connect(self) -> None:
        if ray.is_initialized():  # a caller (a notebook, a test) has connected already: use that
            return
        address = self.settings.ray_address or "local"  # unset: a new local instance, never a stray cluster
        options = {}  # a cluster keeps its own settings
        if address == "local":  # a throwaway instance: no dashboard, and no usage report unless the user asked for one
            options["include_dashboard"] = False
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        try:
            ray.init(address=address, **options)
        except ConnectionError as error:
            raise ExecutorError(f"--ray-address {address}: no Ray cluster reached ({error}); start one with "
                                "`ray start --head` (see README, 'On a Ray cluster')") from None
        self.started_ray = True

    def _worker_count(self, n_groups: int) -> int:
        resources = ray.cluster_resources()
        per_worker, kind = (self.gpus, "GPU") if self.gpus > 0 else (self.cpus, "CPU")
        available = int(resources.get(kind, 0) // per_worker + 1e-9)
        wanted = self.settings.workers or available
        if wanted > available:
            raise ExecutorError(f"--workers {wanted} x {per_worker:g} {kind} needs {wanted * per_worker:g} {kind}s; "
                                f"the Ray cluster has {resources.get(kind, 0):g} (lower --workers or --gpus-per-worker)")
        return max(1, min(wanted, n_groups))  # a worker with no group would only load the model

    def _new_actor(self):
        return GroupActor.options(num_cpus=self.cpus, num_gpus=self.gpus, max_restarts=0).remote(
            self.settings.as_dict(), self.cpus)

    def start(self, n_groups: int) -> dict:
        self._connect()
        self.n_workers = self._worker_count(n_groups)
        self.actors = [self._new_actor() for _ in range(self.n_workers)]
        try:
            infos = ray.get([actor.info.remote() for actor in self.actors])
        except RayError as error:
            raise ExecutorError(f"a Ray worker could not start: {_last_line(error)}") from None
        self.workers = {info["worker"]: info for info in infos}
        models = {info["model"]["weights_sha256"] for info in infos}
        if len(models) > 1:  # a folder that differs between nodes would mix two models in one run
            raise ExecutorError(f"the Ray workers loaded different weights ({', '.join(sorted(models))}): "
                                "make the model identical on every node")
        return infos[0]["model"]

    def preflight(self, problems: list) -> None:
        error = ray.get(self.actors[0].preflight.remote(problems))  # every worker loaded the same weights
        if error is not None:
            raise SettingsError(error)

    # -- measuring --------------------------------------------------------------------------------
    def run(self, groups: list[list]) -> Iterator[GroupOutcome]:
        pending = deque(range(len(groups)))
        attempts = [0] * len(groups)
        idle, running = list(self.actors), {}
        while pending or running:
            while pending and len(running) < self.n_workers:
                # A worker that died is replaced here, when there is a group for it: a fresh actor loads the model.
                index, actor = pending.popleft(), idle.pop() if idle else self._replace()
                attempts[index] += 1
                running[actor.measure.remote(groups[index])] = (index, actor)
            ready, _ = ray.wait(list(running), num_returns=1)
            index, actor = running.pop(ready[0])
            try:
                records, skipped, worker = ray.get(ready[0])
            except RayTaskError as error:  # the group raised; the worker is fine
                idle.append(actor)
                failure = error
            except RayError as error:  # the worker died (killed, out of memory, node lost)
                self._retire(actor)
                failure = error
            else:
                idle.append(actor)
                if worker not in self.workers:  # a replacement: its node goes into the provenance too
                    try:
                        self.workers[worker] = ray.get(actor.info.remote())
                    except RayError:  # died since; its records say which worker made them
                        self.workers[worker] = {"worker": worker}
                yield GroupOutcome(index, records, skipped, worker, attempts=attempts[index])
                continue
            problems = [problem.id for problem in groups[index]]
            log.warning("group %d (%s) failed on attempt %d: %s", index, ", ".join(problems), attempts[index],
                        _last_line(failure))
            self.failed_attempts.append({"problems": problems, "attempt": attempts[index], "error": _last_line(failure)})
            if attempts[index] <= self.retries:
                pending.appendleft(index)  # retried first: its records are the ones missing longest
            else:
                yield GroupOutcome(index, worker="", error=str(failure)[-ERROR_CHARS:], attempts=attempts[index])

    def _retire(self, actor) -> None:
        self.actors.remove(actor)
        with contextlib.suppress(RayError):  # already gone
            ray.kill(actor)

    def _replace(self):
        self.replaced += 1
        actor = self._new_actor()
        self.actors.append(actor)
        return actor

    def describe(self) -> dict:
        return {"name": self.name, "address": self.settings.ray_address or "local", "workers": self.n_workers,
                "cpus_per_worker": self.cpus, "gpus_per_worker": self.gpus, "retries": self.retries,
                "replaced_workers": self.replaced, "failed_attempts": self.failed_attempts, "ray_version": ray.__version__,
                "worker_ids": sorted(self.workers),
                "worker_nodes": {w: {k: v for k, v in info.items() if k not in ("worker", "model")}
                                 for w, info in sorted(self.workers.items())}}

    def close(self) -> None:
        for actor in self.actors:
            with contextlib.suppress(RayError):
                ray.kill(actor)
        self.actors = []
        if self.started_ray:
            ray.shutdown()
            self.started_ray = False


def _last_line(error: BaseException) -> str:
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
