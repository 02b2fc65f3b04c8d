"""xdist ``loadgroup`` scheduling that works with pytest 9 and survives a crashed worker.

Two faults of pytest-xdist 3.8.0 under ``--dist loadgroup``, both fixed here for the suites:

- With pytest 9 the group never reaches the scheduler: xdist appends ``@<group>`` to each
  worker's node ids by assigning ``item._nodeid``, which pytest 9 no longer reads (node ids now
  come from ``item._id``), so every test became its own group and a problem's cases were spread
  over the workers. Here each worker writes the groups of its items (from their ``xdist_group``
  marks) to a small file before it reports its collection (see :func:`write_groups`), and the
  scheduler groups node ids by it; ids that carry an ``@group`` suffix are grouped as before.
- A crashed worker hangs the session when it is replaced (pytest-dev/pytest-xdist#1323, #1327,
  #1378): ``remove_node`` puts the dead worker's whole workload back on the queue, completed work
  units and the crashed test included, so the replacement is sent an empty unit or re-runs the
  test that killed its predecessor; and a worker given a single test never runs it, because a
  worker waits for the next test (or a shutdown) before running one. Here only unfinished work
  goes back on the queue, the crashed test is marked done (xdist has reported it failed), a
  worker always holds two tests or everything left, and it is told to shut down as soon as the
  queue is empty, so it runs what it holds.

The measure plugin uses :class:`CrashSafeLoadGroupScheduling` for ``--dist loadgroup``, which it
also switches on for ``-n N`` without an explicit ``--dist``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from xdist.scheduler import LoadGroupScheduling

from measure.records.atomic import write_json

GROUPS_PREFIX = "groups-"


def item_group(item) -> str | None:
    names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                    for m in item.iter_markers("xdist_group")})
    return "_".join(names) if names else None


def write_groups(folder: Path, worker_id: str, items) -> None:
    """Node id -> group of every grouped item, written atomically (read by the controller)."""
    groups = {item.nodeid: group for item in items if (group := item_group(item)) is not None}
    if not groups:
        return
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / f"{GROUPS_PREFIX}{worker_id}-{os.getpid()}.json", groups)


def read_groups(folder: Path) -> dict[str, str]:
    groups: dict[str, str] = {}
    if folder.is_dir():
        for path in sorted(folder.glob(f"{GROUPS_PREFIX}*.json")):
            groups.update(json.loads(path.read_text(encoding="utf-8")))
    return groups


class CrashSafeLoadGroupScheduling(LoadGroupScheduling):
    def __init__(self, config, log=None, groups_dir: Path | None = None):
        super().__init__(config, log)
        self.groups_dir = groups_dir
        self._groups: dict[str, str] = {}

    def schedule(self) -> None:
        if self.groups_dir is not None:
            self._groups = read_groups(self.groups_dir)
        super().schedule()

    def _split_scope(self, nodeid: str) -> str:
        group = self._groups.get(nodeid)
        return group if group is not None else super()._split_scope(nodeid)

    def remove_node(self, node):
        workload = self.assigned_work.pop(node)
        if not self._pending_of(workload):
            return None
        crashitem = next(nodeid for unit in workload.values() for nodeid, done in unit.items() if not done)
        for scope, unit in workload.items():
            if crashitem in unit:
                unit[crashitem] = True
            if not all(unit.values()):
                self.workqueue[scope] = unit
        for other in self.assigned_work:
            self._reschedule(other)
        return crashitem

    def _reschedule(self, node) -> None:
        if node.shutting_down:
            return
        super()._reschedule(node)
        # A worker runs a test only once it holds the next one (or a shutdown): make sure it holds
        # two, or everything that is left followed by a shutdown.
        while self.workqueue and self._pending_of(self.assigned_work[node]) < 2:
            self._assign_work_unit(node)
        if not self.workqueue and not node.shutting_down:
            node.shutdown()
