"""Import boundaries between layers (data -> engine -> metrics -> records -> analysis -> report).

The import graph is read from the source (``ast``: the imports at the top of each module, not
those inside functions); the checks that need an interpreter run in a fresh one, so that what
other tests imported does not count.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "measure"
#: The layers below the reports: none of them may import measure.report.
BELOW_REPORT = ("measure.data", "measure.model", "measure.engine", "measure.metrics", "measure.records",
                "measure.analysis", "measure.settings", "measure.points", "measure.prompts",
                "measure.content_points")


def module_names() -> dict[str, Path]:
    names = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


MODULES = module_names()


def _is_type_checking(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def top_level_imports(name: str, path: Path) -> set[str]:
    """The measure modules ``name`` names in its top-level imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if _is_type_checking(node):
            continue
        for child in [node, *(node.body if isinstance(node, (ast.If, ast.Try)) else [])]:
            if isinstance(child, ast.Import):
                found |= {alias.name for alias in child.names}
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join([*package.split(".")[:len(package.split(".")) - child.level + 1], *filter(None, [base])])
                found.add(base)
                found |= {f"{base}.{alias.name}" for alias in child.names if f"{base}.{alias.name}" in MODULES}
    # Importing a.b.c also runs the package a.b first; that edge is left out, since a package that
    # imports its own modules is no cycle (Python initialises the package before them).
    return {module for module in found if module in MODULES and module != name}


GRAPH = {name: top_level_imports(name, path) for name, path in MODULES.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle of ``graph``, one per strongly connected group of modules (Tarjan)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def reachable(name: str) -> set[str]:
    seen, todo = set(), [name]
    while todo:
        for target in GRAPH[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


def _loaded_after(imports: str, prefixes: tuple[str, ...]) -> list[str]:
    """The modules under ``prefixes`` that importing ``imports`` loads in a new interpreter."""
    code = (f"import json, sys\nimport {imports}\n"
            f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({prefixes!r}))))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_import_graph_is_read():
    assert "measure.records.store" in GRAPH["measure.run.runner"]
    assert "measure.engine.engine" in reachable("measure.run.runner")


def test_no_import_cycle_among_top_level_imports():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]  # the check finds one
    assert cycles(GRAPH) == []


def test_every_module_imports_in_a_fresh_interpreter():
    """Each with its optional dependency (Ray, Starlette, xdist) when that is installed."""
    optional = {"measure.run.executors.ray": "ray", "measure.serve.app": "starlette",
                "measure.pytest_plugin.scheduling": "xdist"}
    names = sorted(name for name in MODULES if importlib.util.find_spec(optional.get(name, "json")) is not None)
    assert len(names) >= len(MODULES) - len(optional)
    assert set(names) <= set(_loaded_after(", ".join(names), ("measure",)))


@pytest.mark.parametrize("layer", BELOW_REPORT)
def test_nothing_below_the_report_imports_the_report(layer):
    below = [name for name in MODULES if name == layer or name.startswith(layer + ".")]
    assert {name: sorted(m for m in reachable(name) if m.startswith("measure.report")) for name in below} == \
        {name: [] for name in below}


def test_the_metrics_do_not_import_torch():
    metrics = ", ".join(name for name in MODULES if name.startswith("measure.metrics"))
    assert _loaded_after(metrics, ("torch", "transformers", "measure.engine.engine", "measure.model")) == []


def test_the_pytest_plugin_does_not_import_the_runner_or_torch():
    plugin = ("measure.pytest_plugin, measure.pytest_plugin.suite, measure.pytest_plugin.cases, "
              "measure.pytest_plugin.merge, measure.pytest_plugin.worker_log")
    assert _loaded_after(plugin, ("measure.run.runner",)) == []
    assert _loaded_after("measure.pytest_plugin", ("torch", "pandas", "matplotlib")) == []


def test_the_settings_import_no_torch():
    assert _loaded_after("measure.settings", ("torch", "transformers", "measure.engine")) == []


def test_the_records_layer_imports_nothing_above_it():
    above = ("measure.run.runner", "measure.report", "measure.pytest_plugin", "torch", "matplotlib")
    records = ", ".join(name for name in MODULES if name.startswith("measure.records"))
    assert _loaded_after(records, above) == []
