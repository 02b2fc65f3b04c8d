"""Where a result came from: versions, git commit, machine, model, settings, times."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

PACKAGES = ("measure", "torch", "transformers", "tokenizers", "numpy", "scipy", "pandas", "gguf", "accelerate")


def package_versions() -> dict[str, str | None]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_state(folder: Path | None = None) -> dict[str, str | bool | None]:
    folder = folder or Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            result = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return result.stdout.strip() if result.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def machine() -> dict:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        info["cpu_count"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        info["cpu_count"] = None
    return info


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def provenance(settings: dict, model: dict) -> dict:
    """The provenance block saved with every result folder."""
    return {
        "versions": package_versions(),
        "git": git_state(),
        "machine": machine(),
        "model": model,
        # The prompt style the runs actually used: chat needs a chat template (base models have none).
        "prompt_style": ("chat" if settings.get("prompt_style", "chat") == "chat" and model.get("chat_template", True)
                         else "raw"),
        "settings": settings,
        "command": " ".join(sys.argv),
        "started": now(),
    }
