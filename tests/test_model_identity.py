"""Every `--model hf` result says which weights produced it: folder, weight hashes, adapter, dtype, quantization."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest

from moral_tasks.data import SAMPLE_DIR
from moral_tasks.model_identity import weight_hashes

METADATA = {"data_dir": str(SAMPLE_DIR), "bootstrap_resamples": 20, "best_samples": 50}


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def hash_cache(tmp_path, monkeypatch):
    """A private user cache, so that the tests see their own hash cache only."""
    monkeypatch.setenv("MORAL_AMBIGUITY_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "weight-hashes"


@pytest.fixture(scope="module")
def lora_adapter(tiny_model, tmp_path_factory):
    """A real PEFT LoRA adapter of the tiny model (random B, so it changes the outputs)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                           LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    out = tmp_path_factory.mktemp("lora")
    model.save_pretrained(out)
    return out


@pytest.mark.slow
def test_results_carry_folder_weights_adapter_dtype(tiny_model, lora_adapter, hash_cache):
    import lm_eval

    out = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={tiny_model},peft={lora_adapter},dtype=float32",
                                  tasks=["moral_dilemmas"], limit=2, device="cpu", metadata=METADATA)
    identity = out["config"]["model_identity"]
    assert identity == {
        "path": str(tiny_model.resolve()),
        "weights_sha256": {"model.safetensors": sha256(tiny_model / "model.safetensors")},
        "adapter": {"path": str(lora_adapter.resolve()),
                    "weights_sha256": {"adapter_model.safetensors": sha256(lora_adapter / "adapter_model.safetensors")}},
        "dtype": "float32",
        "quantization": "none",
    }
    json.dumps(out["config"]["model_identity"])  # the results file must be able to hold it as is


@pytest.mark.slow
def test_a_gguf_loaded_by_transformers_is_labelled_as_dequantized(tiny_model, hash_cache):
    import lm_eval

    gguf = tiny_model.parent / "tiny-llama.gguf"
    out = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={gguf.parent},gguf_file={gguf.name},"
                                  f"tokenizer={tiny_model}", tasks=["moral_dilemmas"], limit=1, device="cpu",
                                  metadata=METADATA)
    assert out["config"]["model_identity"]["quantization"] == "GGUF, dequantized by transformers on load"


def test_folder_labelled_by_fetch_model_metadata(tiny_model, tmp_path, hash_cache):
    """A folder with fetch-model's metadata file carries its label and the GGUF's hash into the identity."""
    from types import SimpleNamespace

    from moral_tasks.model_identity import METADATA_FILE, hf_identity

    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    (folder / METADATA_FILE).write_text(json.dumps({
        "format": "moral-ambiguity/fetched-model/1", "label": "Tiny, dequantized from Q4_1 GGUF",
        "stands_in_for": "org/tiny", "gguf_sha256": "ab" * 32, "quantization": "Q4_1 GGUF, dequantized to float32"}))
    lm = SimpleNamespace(pretrained=str(folder), revision="main", peft=None, delta=None,
                         _model=SimpleNamespace(dtype="torch.bfloat16", config=SimpleNamespace()))
    identity = hf_identity(lm)
    assert identity["label"] == "Tiny, dequantized from Q4_1 GGUF"
    assert identity["stands_in_for"] == "org/tiny"
    assert identity["gguf_sha256"] == "ab" * 32
    assert identity["quantization"] == "Q4_1 GGUF, dequantized to float32"
    assert identity["dtype"] == "bfloat16"


def test_hashes_are_cached_by_size_and_mtime_and_never_written_into_the_model_folder(tmp_path, hash_cache):
    folder = tmp_path / "m"
    folder.mkdir()
    weights = folder / "model.safetensors"
    weights.write_bytes(b"first")
    assert weight_hashes(folder) == {"model.safetensors": hashlib.sha256(b"first").hexdigest()}
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors"]
    (entry,) = hash_cache.iterdir()
    assert json.loads(entry.read_text())["sha256"] == hashlib.sha256(b"first").hexdigest()
    # Same size, new content and a new mtime: hashed again.
    weights.write_bytes(b"other")
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert weight_hashes(folder) == {"model.safetensors": hashlib.sha256(b"other").hexdigest()}
    # A cached entry is used as is while size and mtime match (the file is not read again).
    cached = json.loads(entry.read_text())
    entry.write_text(json.dumps({**cached, "sha256": "from-cache"}))
    assert weight_hashes(folder) == {"model.safetensors": "from-cache"}


def test_training_state_files_are_not_weights(tmp_path, hash_cache):
    for name in ("adapter_model.safetensors", "training_args.bin", "optimizer.pt"):
        (tmp_path / name).write_bytes(name.encode())
    assert list(weight_hashes(tmp_path)) == ["adapter_model.safetensors"]


def test_unwritable_hash_cache_still_reports_the_hashes(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("MORAL_AMBIGUITY_CACHE", str(blocker / "cache"))  # below a file: cannot be created
    (tmp_path / "model.safetensors").write_bytes(b"w")
    assert weight_hashes(tmp_path) == {"model.safetensors": hashlib.sha256(b"w").hexdigest()}
