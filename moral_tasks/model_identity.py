"""What model produced a result: hub id or folder, revision or weight hashes, adapter, dtype, quantization.

lm-eval 0.4.13 records ``model_args`` and, for hub models, a commit looked up
online; for a local folder, an adapter or a converted model it records nothing
that tells two sets of weights apart. :func:`hf_identity` builds the record
that our plugin adds to every ``--model hf`` result under
``results["config"]["model_identity"]`` (see :mod:`moral_tasks.lm_eval_plugin`).

Weight files are identified by SHA-256 (what ``sha256sum`` prints). Hashing a
large checkpoint takes seconds, so the hashes are cached in the user cache
(:func:`hash_cache_dir`; model folders are never written to), keyed by each
file's resolved path, size and modification time: a changed file is hashed
again, an unchanged one never.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from .data.files import cache_dir, sha256_file

log = logging.getLogger(__name__)

# Written by ``moral-ambiguity fetch-model``: says what a converted folder is (see moral_tasks.cli.fetch_model).
METADATA_FILE = "moral_ambiguity_model.json"
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth")
# Checkpoint folders of a Trainer also hold these: not weights.
TRAINING_STATE_FILES = {"training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth"}


def hash_cache_dir() -> Path:
    """``<moral-ambiguity cache>/weight-hashes``: one small JSON file per hashed weight file."""
    return cache_dir().parent / "weight-hashes"


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, cached by its resolved path, size and modification time."""
    path = Path(path).resolve()
    stat = path.stat()
    key = {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    entry = hash_cache_dir() / (hashlib.sha256(str(path).encode()).hexdigest()[:32] + ".json")
    try:
        cached = json.loads(entry.read_text(encoding="utf-8"))
        if isinstance(cached, dict) and all(cached.get(k) == v for k, v in key.items()) and isinstance(cached.get("sha256"), str):
            return cached["sha256"]
    except (OSError, ValueError):
        pass
    digest = sha256_file(path)
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = entry.with_name(f"{entry.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**key, "sha256": digest}), encoding="utf-8")
        os.replace(tmp, entry)
    except OSError as exc:  # an unwritable cache: the hash is still reported, just computed again next time
        log.debug("could not cache the hash of %s: %s", path, exc)
    return digest


def weight_hashes(folder: str | Path, names: list[str] | None = None) -> dict[str, str]:
    """{file name: SHA-256} of the weight files in ``folder`` (or of ``names``)."""
    folder = Path(folder)
    if names is None:
        names = sorted({p.name for pattern in WEIGHT_PATTERNS for p in folder.glob(pattern) if p.is_file()}
                       - TRAINING_STATE_FILES)
    return {name: file_sha256(folder / name) for name in names}


def _hub_snapshot(repo_id: str, revision: str | None) -> Path | None:
    """The local snapshot folder of a hub model (its name is the commit), without network access."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except Exception:  # not in the local cache, or not a valid repo id
        return None


def weights_identity(name_or_path: str, revision: str | None = None) -> dict:
    """``{"path" | "hub_id", "revision", "commit", "weights_sha256"}`` for a folder or a hub id."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return {"path": str(path.resolve()), "weights_sha256": weight_hashes(path)}
    out = {"hub_id": name_or_path, "revision": revision or "main"}
    snapshot = _hub_snapshot(name_or_path, revision)
    if snapshot is not None:
        out["commit"] = snapshot.name
        out["weights_sha256"] = weight_hashes(snapshot)
    return out


def _quantization(model, metadata: dict | None) -> str:
    if metadata and metadata.get("quantization"):
        return metadata["quantization"]
    config = getattr(getattr(model, "config", None), "quantization_config", None)
    if config is None:
        return "none"
    as_dict = config.to_dict() if hasattr(config, "to_dict") else dict(config) if isinstance(config, dict) else {}
    method = as_dict.get("quant_method", type(config).__name__)
    method = getattr(method, "value", method)
    if method == "gguf":  # loaded with gguf_file=: transformers dequantized the weights on load
        return "GGUF, dequantized by transformers on load"
    details = [key for key in ("load_in_4bit", "load_in_8bit") if as_dict.get(key)]
    bits = as_dict.get("bits")
    return " ".join(str(x) for x in (method, *details, f"{bits}-bit" if bits else "") if x)


def hf_identity(lm) -> dict:
    """The identity of an lm-eval ``HFLM`` (``--model hf``): base weights, adapter, delta, dtype, quantization."""
    model = getattr(lm, "_model", None)
    pretrained = getattr(lm, "pretrained", None)
    revision = getattr(lm, "revision", None)
    if isinstance(pretrained, str):
        out = weights_identity(pretrained, revision)
    else:  # a model object handed to simple_evaluate
        out = {"object": type(pretrained).__name__, "name_or_path": getattr(getattr(model, "config", None), "_name_or_path", None)}
    metadata = None
    if "path" in out:
        try:
            metadata = json.loads((Path(out["path"]) / METADATA_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            metadata = None
        if metadata:
            out["label"] = metadata.get("label")
            out["stands_in_for"] = metadata.get("stands_in_for")
            out["gguf_sha256"] = metadata.get("gguf_sha256")
    for kind in ("peft", "delta"):
        source = getattr(lm, kind, None)
        if source:
            out["adapter" if kind == "peft" else "delta"] = weights_identity(str(source), revision)
    dtype = getattr(model, "dtype", None)
    out["dtype"] = str(dtype).removeprefix("torch.") if dtype is not None else None
    out["quantization"] = _quantization(model, metadata)
    return out
