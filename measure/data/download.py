"""Fetch dataset files from their public URLs (measure/data/manifest.json) into the cache, verified.

A file is written to a temporary name next to its destination, its sha256 and size checked
against the manifest, and only then renamed into place: an unverified file is never kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from measure.data.errors import DataError

MANIFEST_PATH = Path(__file__).resolve().parent / "manifest.json"  # package data, shipped in the wheel
CHUNK_BYTES = 1 << 16


@dataclass(frozen=True)
class FileEntry:
    dataset: str
    path: str          # relative to the data folder, e.g. "gsm8k/test.jsonl"
    url: str
    sha256: str
    bytes: int
    transform: str | None


def load_manifest(path: str | Path = MANIFEST_PATH) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError("manifest not found", file=path) from None
    except json.JSONDecodeError as error:
        raise DataError(f"invalid JSON: {error.msg}", file=path, line=error.lineno) from None


def manifest_entries(manifest: dict, dataset: str) -> list[FileEntry]:
    if dataset not in manifest.get("datasets", {}):
        raise DataError(f"dataset {dataset!r} is not in the manifest")
    return [FileEntry(dataset=dataset, path=f["path"], url=f["url"], sha256=f["sha256"], bytes=f["bytes"],
                      transform=f.get("transform")) for f in manifest["datasets"][dataset]["files"]]


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: str | Path, entry: FileEntry) -> str | None:
    """None when the file matches the manifest, else what is wrong."""
    path = Path(path)
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != entry.bytes:
        return f"size {size} bytes, manifest says {entry.bytes}"
    actual = sha256_of(path)
    return None if actual == entry.sha256 else f"sha256 {actual}, manifest says {entry.sha256}"


def _json_array_to_jsonl(source: Path, target: Path) -> None:
    """Upstream JSON array -> one compact object per line (how the stored files were made)."""
    try:
        items = json.loads(source.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError(f"downloaded file is not JSON: {error.msg}", file=source, line=error.lineno) from None
    with target.open("w", encoding="utf-8") as handle:
        for item in items:
            handle.write(json.dumps(item, separators=(",", ":"), ensure_ascii=False) + "\n")


def download_file(entry: FileEntry, cache: str | Path, timeout: float = 60.0) -> Path:
    """Download one file into cache/entry.path, verified; DataError (and nothing kept) otherwise."""
    destination = Path(cache) / entry.path
    if verify_file(destination, entry) is None:
        return destination
    if entry.transform not in (None, "json_array_to_jsonl"):
        raise DataError(f"{entry.path} is rebuilt from several upstream files ({entry.url}); "
                        "place it in the data folder by hand")
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporaries = []
    try:
        fetched = _temporary(destination, temporaries)
        try:
            with urllib.request.urlopen(entry.url, timeout=timeout) as response, fetched.open("wb") as handle:
                for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                    handle.write(chunk)
        except (OSError, ValueError) as error:  # URLError, IncompleteRead, timeouts are OSError/ValueError
            raise DataError(f"download of {entry.url} failed: {error}", file=destination) from None
        candidate = fetched
        if entry.transform == "json_array_to_jsonl":
            candidate = _temporary(destination, temporaries)
            _json_array_to_jsonl(fetched, candidate)
        problem = verify_file(candidate, entry)
        if problem is not None:
            raise DataError(f"downloaded file failed verification ({problem}); not kept", file=destination)
        os.replace(candidate, destination)
        return destination
    finally:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)


def _temporary(destination: Path, created: list[Path]) -> Path:
    handle, name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".part", dir=destination.parent)
    os.close(handle)
    created.append(Path(name))
    return Path(name)


def download_dataset(dataset: str, cache: str | Path, manifest: dict | None = None,
                     timeout: float = 60.0) -> dict[str, str]:
    """Download every downloadable file of a dataset; returns path -> 'ok' or why it was skipped."""
    results = {}
    for entry in manifest_entries(manifest or load_manifest(), dataset):
        if entry.transform not in (None, "json_array_to_jsonl"):
            results[entry.path] = f"skipped: rebuilt by hand from {entry.url}"
            continue
        download_file(entry, cache, timeout=timeout)
        results[entry.path] = "ok"
    return results
