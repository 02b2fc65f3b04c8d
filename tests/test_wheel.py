"""The built wheel ships what an installed measure needs, and finds it from any working directory.

Builds the wheel from a copy of the package sources (so a stale ``build/`` in the checkout can't
supply files the configuration forgets), checks its contents, installs it without dependencies into
a temporary folder and runs a fresh interpreter from outside the checkout against that copy.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "measure")  # what the build reads; anything else it needs fails loudly
EXPECTED_FILES = ("measure/data/builtin/math_pairs.jsonl", "measure/data/builtin/context_pairs.jsonl",
                  "measure/data/manifest.json", "measure/report/templates/report.html.j2")

INSTALLED_CHECK = """
import json, sys
from pathlib import Path
import measure
from measure.data import load_pairs
from measure.data.builtin import builtin_dir
from measure.data.download import MANIFEST_PATH, load_manifest
site = Path(sys.argv[1]).resolve()
for path in (measure.__file__, builtin_dir(), MANIFEST_PATH):
    assert Path(path).resolve().is_relative_to(site), f"{path} is not under {site}"
print(json.dumps({"builtin": len(load_pairs("builtin")), "builtin-easy": len(load_pairs("builtin-easy")),
                  "datasets": sorted(load_manifest()["datasets"])}))
"""


def _pip(*args: str, cwd: Path) -> None:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    subprocess.run([sys.executable, "-m", "pip", *args, "--no-deps", "--no-index", "--quiet"], cwd=cwd, env=env,
                   check=True, capture_output=True, text=True)


def test_wheel_ships_the_data_and_an_installed_copy_finds_it(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(ROOT / name, source / name)
    _pip("wheel", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(source), cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("measure-*.whl")

    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert set(EXPECTED_FILES) <= names, sorted(set(EXPECTED_FILES) - names)
        (entry_points_file,) = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
        entry_points = configparser.ConfigParser()
        entry_points.read_string(archive.read(entry_points_file).decode())
    assert entry_points["console_scripts"]["measure"] == "measure.cli:main"
    assert entry_points["pytest11"]["measure"] == "measure.pytest_plugin"
    assert not any(name.startswith(("data/", "tests/", "suites/")) for name in names)

    site, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    _pip("install", "--target", str(site), str(wheel), cwd=tmp_path)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "MEASURE_"))}
    env.update(PYTHONPATH=str(site), MEASURE_CACHE_DIR=str(tmp_path / "cache"))
    checked = subprocess.run([sys.executable, "-c", INSTALLED_CHECK, str(site)], cwd=elsewhere, env=env,
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    loaded = json.loads(checked.stdout)
    assert loaded["builtin"] == len(_checkout_pairs("builtin")) and loaded["builtin-easy"] == len(_checkout_pairs("builtin-easy"))
    assert loaded["builtin"] > loaded["builtin-easy"] > 0 and "gsm8k" in loaded["datasets"]

    listed = subprocess.run([str(site / "bin" / "measure"), "data", "list"], cwd=elsewhere, env=env,
                            capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert "builtin: bundled with the project" in listed.stdout and "gsm8k/test.jsonl" in listed.stdout


def _checkout_pairs(name: str) -> list:
    from measure.data import load_pairs

    return load_pairs(name)
