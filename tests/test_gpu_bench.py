"""benchmarks/gpu_bench.sh: its CPU dry run end to end, and the shape and FLOP count it reports against."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from conftest import BIN, offline_env, run

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_bench  # noqa: E402


@pytest.mark.slow
def test_dry_run_prints_one_complete_json_object(tmp_path):
    proc = run(["bash", REPO / "benchmarks" / "gpu_bench.sh", "--dry-run"], cwd=tmp_path,
               env=offline_env(PYTHON=str(BIN / "python"), OMP_NUM_THREADS="1"), timeout=120)
    result = json.loads(proc.stdout)
    assert result["errors"] == [] and result["dry_run"] is True
    shape = gpu_bench.TINY
    d, layers, vocab, inter = shape["hidden_size"], shape["num_hidden_layers"], shape["vocab_size"], shape["intermediate_size"]
    kv = shape["num_key_value_heads"] * d // shape["num_attention_heads"]
    # Embeddings and LM head, per layer q/k/v/o + gate/up/down + two RMSNorms, final RMSNorm.
    assert result["model_params"] == 2 * vocab * d + layers * (2 * d * d + 2 * d * kv + 3 * d * inter + 2 * d) + d
    ev = result["eval"]
    assert ev["docs"] == gpu_bench.DRY_RUN["eval_docs"]
    # Single-token options share their context (lm-eval's logits cache): one forward per batch of documents.
    assert ev["forward_passes"] == math.ceil(ev["docs"] / ev["batch_size"])
    assert 0 < ev["tokens_per_doc"] <= ev["padded_tokens_per_doc"]
    assert math.isfinite(ev["xentropy"]) and 0 < ev["roofline_ratio"] <= ev["roofline_ratio_padded"]
    # Our answer-position step and the full-logits step compute the same loss from the same weights.
    lora = result["lora"]
    assert lora["ours"]["first_loss"] == pytest.approx(lora["naive"]["first_loss"], rel=1e-5)
    assert lora["ours"]["step_s"] > 0 and lora["naive"]["step_s"] > 0
    assert "skipped" in result["qlora"]


def test_forward_flops_equal_torch_flop_counter():
    """The roofline's FLOP count is what torch counts for the same forward (eager attention: all T^2 pairs)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model = gpu_bench.build_model(gpu_bench.TINY, "cpu", torch.float32, attn_implementation="eager")
    batch, seq_len = 3, 17
    ids = torch.randint(3, gpu_bench.TINY["vocab_size"], (batch, seq_len))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(input_ids=ids)
    assert gpu_bench.forward_flops(model.config, batch, seq_len, causal=False) == counter.get_total_flops()
    # A causal kernel computes the T(T+1)/2 query-key pairs of each sequence.
    full, causal = (gpu_bench.forward_flops(model.config, batch, seq_len, causal=c) for c in (False, True))
    q = model.config.num_attention_heads * model.config.head_dim
    assert full - causal == model.config.num_hidden_layers * batch * (seq_len ** 2 - seq_len * (seq_len + 1) / 2) * 4 * q


def test_benchmark_shape_is_llama3_8b():
    """Built on the meta device (no memory): Llama-3-8B's published parameter count."""
    import torch

    model = gpu_bench.build_model(gpu_bench.LLAMA3_8B, "meta", torch.bfloat16)
    assert sum(p.numel() for p in model.parameters()) == gpu_bench.LLAMA3_8B_PARAMS == 8_030_261_248


def test_wheel_requirements_follow_the_gpu_python(tmp_path):
    """prepare keeps only the requirements that apply to CPython 3.12 on Linux x86-64, extras left out."""
    import zipfile

    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    meta = "\n".join(["Metadata-Version: 2.1", "Name: demo", "Version: 1.0",
                      "Requires-Dist: numpy", "Requires-Dist: tomli; python_version < '3.11'",
                      "Requires-Dist: pywin32; sys_platform == 'win32'", "Requires-Dist: rich; extra == 'cli'",
                      "Requires-Dist: typing-extensions>=4; python_version >= '3.12'"])
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("demo-1.0.dist-info/METADATA", meta)
    assert gpu_bench._requirements(wheel) == ["numpy", "typing-extensions"]
