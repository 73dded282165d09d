"""GPU benchmark at Llama-3-8B shape: evaluation throughput and roofline ratio, LoRA and QLoRA step cost.

Driven by ``benchmarks/gpu_bench.sh`` (see benchmarks/README.md). Two commands:

``prepare``  (here, with network): download, as wheels, every package the benchmark imports that
             the GPU machine's image lacks (the dependency closure of lm-eval, datasets, evaluate,
             trl and bitsandbytes, minus the image's packages), at the versions this environment
             has, for CPython 3.12 on manylinux x86-64.
``run``      (on the GPU): build a Llama-3-8B-shaped model with random bf16 weights on the GPU (no
             download), then measure

             * ``eval``: documents/s of ``moral_dilemmas`` through lm-eval's ``--model hf`` backend
               (``HFLM`` + ``simple_evaluate``) and the ratio of the forward FLOP rate reached to
               the measured bf16 matrix-product rate (the roofline);
             * ``lora``: a LoRA training step (r=16, all-linear) with our answer-position loss
               (``trainers.trainer.answer_logits``: ``logits_to_keep=1``) vs the full-logits
               forward, time and peak memory;
             * ``qlora``: the same two steps on an NF4 base (bitsandbytes), or why it was skipped;

             and print one JSON object. ``--dry-run`` does all of it on CPU at tiny shapes.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))

# Llama-3 / 3.1 8B: 8,030,261,248 parameters (untied embeddings, grouped-query attention 32:8).
LLAMA3_8B = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192, rope_theta=500000.0,
                 rms_norm_eps=1e-5, tie_word_embeddings=False)
LLAMA3_8B_PARAMS = 8_030_261_248
# --dry-run: the shape of tests/fixtures/tiny-llama, whose tokenizer (2,048 tokens) the benchmark uses.
TINY = dict(vocab_size=2048, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=4096, rope_theta=10000.0, rms_norm_eps=1e-6,
            tie_word_embeddings=False)
FULL_RUN = dict(eval_docs=2048, eval_batch_size=64, train_batch_size=8, seq_len=512, steps=3, matmul_n=8192)
DRY_RUN = dict(eval_docs=200, eval_batch_size=16, train_batch_size=2, seq_len=32, steps=1, matmul_n=256)
TOKENIZER = REPO / "tests" / "fixtures" / "tiny-llama"
# Dense bf16 rate of an H100/H200 SXM from NVIDIA's datasheet, for reference next to the measured one.
DATASHEET_BF16_FLOPS = {"H100": 989e12, "H200": 989e12}

# Packages of the GPU machine's image ('cuda'), as listed in the device notes (KINDS.md, read on a
# machine on 2026-11-17): `prepare` carries everything else the benchmark imports.
IMAGE_PACKAGES = """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin
jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax
llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict
multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-cublas
nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile
nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13
nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless
optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip
pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing
pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core
scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson
six sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl
tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision
tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig
werkzeug wheel wrapt xarray xxhash yarl zipp""".split()
# What the benchmark imports beyond the image (trl: trainers.trainer; bitsandbytes: the QLoRA part).
CARRIED_ROOTS = ("lm_eval", "datasets", "evaluate", "trl", "bitsandbytes")
OPTIONAL_ROOTS = ("bitsandbytes",)  # dropped first when the wheels do not fit the carry limit
CARRY_LIMIT_BYTES = 64 * 2**20  # the device tool's limit on working tree + carried paths
TARGET = dict(python_version="3.12", python_full_version="3.12.3", implementation_name="cpython",
              platform_python_implementation="CPython", sys_platform="linux", platform_system="Linux",
              platform_machine="x86_64", os_name="posix")
PLATFORMS = ("manylinux_2_39_x86_64", "manylinux_2_35_x86_64", "manylinux_2_34_x86_64", "manylinux_2_31_x86_64",
             "manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")


# =========================================================================== prepare (here)

def _norm(name: str) -> str:
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


def _local_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _requirements(wheel: Path) -> list[str]:
    """The names a wheel requires on CPython 3.12 / Linux x86-64 (extras left out)."""
    import zipfile

    from packaging.requirements import Requirement

    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        lines = zf.read(meta).decode().splitlines()
    names = []
    for line in lines:
        if line.startswith("Requires-Dist:"):
            req = Requirement(line.split(":", 1)[1].strip())
            if req.marker is None or req.marker.evaluate({**TARGET, "extra": ""}):
                names.append(req.name)
    return names


def prepare(wheels: Path, python: str) -> int:
    """Download the dependency closure of CARRIED_ROOTS minus the image into ``wheels``."""
    from packaging.utils import parse_wheel_filename

    wheels.mkdir(parents=True, exist_ok=True)
    image = {_norm(n) for n in IMAGE_PACKAGES}
    have = {_norm(parse_wheel_filename(p.name)[0]): p for p in wheels.glob("*.whl")}
    queue, seen, unpinned = list(CARRIED_ROOTS), set(), []
    while queue:
        name = _norm(queue.pop(0))
        if name in seen or name in image:
            continue
        seen.add(name)
        if name not in have:
            version = _local_version(name)
            spec = f"{name}=={version}" if version else name
            if not version:
                unpinned.append(name)
            cmd = [python, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "--python-version",
                   TARGET["python_version"], "--implementation", "cp", "-d", str(wheels), spec]
            for plat in PLATFORMS:
                cmd += ["--platform", plat]
            before = set(wheels.glob("*.whl"))
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:  # no wheel published (e.g. rouge-score): build one, if pure Python
                proc = subprocess.run([python, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), spec],
                                      capture_output=True, text=True)
            new = set(wheels.glob("*.whl")) - before
            if proc.returncode != 0 or not new:
                print(f"gpu_bench prepare: error: pip could not download or build {spec}:\n"
                      f"{proc.stderr.strip()[-2000:]}", file=sys.stderr)
                return 1
            built = next(iter(new))
            if not built.name.endswith("-none-any.whl") and "manylinux" not in built.name:
                print(f"gpu_bench prepare: error: {built.name} was built for this machine, not for CPython 3.12 "
                      "on manylinux x86-64", file=sys.stderr)
                return 1
            have[name] = new.pop()
        queue += _requirements(have[name])
    carried = {n: have[n] for n in seen if n in have}
    for stale in set(have) - set(carried):  # from an earlier prepare: two versions would stop the install
        have[stale].unlink()
    tree = _working_tree_bytes()
    total = sum(p.stat().st_size for p in carried.values())
    dropped = []
    for name in OPTIONAL_ROOTS:
        if tree + total > CARRY_LIMIT_BYTES and name in carried:
            size = carried[name].stat().st_size
            carried.pop(name).unlink()
            total -= size
            dropped.append(f"{name} ({size / 2**20:.1f} MiB)")
    for name in sorted(carried):
        print(f"  {carried[name].name:70s} {carried[name].stat().st_size / 2**20:6.2f} MiB")
    print(f"{len(carried)} wheels, {total / 2**20:.1f} MiB, in {wheels}; working tree {tree / 2**20:.1f} MiB; "
          f"carry limit {CARRY_LIMIT_BYTES / 2**20:.0f} MiB")
    if unpinned:
        print(f"not installed here, so the newest version was taken: {', '.join(unpinned)}")
    if dropped:
        print(f"left out to fit the carry limit (the run's JSON will say the part was skipped): {', '.join(dropped)}")
        (wheels / "LEFT_OUT.txt").write_text(
            f"left out of the carried wheels to fit the {CARRY_LIMIT_BYTES / 2**20:.0f} MiB carry limit: "
            f"{', '.join(dropped)}\n")
    else:
        (wheels / "LEFT_OUT.txt").unlink(missing_ok=True)
    if tree + total > CARRY_LIMIT_BYTES:
        print("gpu_bench prepare: error: still over the carry limit", file=sys.stderr)
        return 1
    return 0


def _working_tree_bytes() -> int:
    try:
        files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                               capture_output=True, check=True).stdout.split(b"\0")
    except (OSError, subprocess.CalledProcessError):
        return 0
    return sum((REPO / f.decode()).stat().st_size for f in files if f and (REPO / f.decode()).is_file())


# =========================================================================== shapes and FLOPs

def llama_config(shape: dict, attn_implementation: str | None = None):
    from transformers import LlamaConfig

    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    return LlamaConfig(**shape, pad_token_id=2, bos_token_id=0, eos_token_id=1, use_cache=False, **kwargs)


def build_model(shape: dict, device, dtype, seed: int = 0, attn_implementation: str | None = None):
    """A LlamaForCausalLM with random weights, made directly on ``device`` in ``dtype`` (nothing is read)."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM._from_config(llama_config(shape, attn_implementation), dtype=dtype)
    return model.eval()


def forward_flops(cfg, batch: int, seq_len: int, causal: bool = True) -> float:
    """Matrix-product FLOPs of one forward over ``batch`` x ``seq_len`` tokens with logits at every position.

    2 FLOPs per multiply-add: every linear layer, the LM head over all positions (lm-eval's HF
    backend computes the full logits), and attention's two products (QK^T, AV). ``causal``
    counts only the query-key pairs a causal kernel computes (T(T+1)/2 per sequence), else all T^2.
    """
    d, layers, vocab = cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size
    head_dim = getattr(cfg, "head_dim", None) or d // cfg.num_attention_heads
    q, kv = cfg.num_attention_heads * head_dim, cfg.num_key_value_heads * head_dim
    per_token = layers * (d * q + 2 * d * kv + q * d + 3 * d * cfg.intermediate_size) + d * vocab
    pairs = seq_len * (seq_len + 1) / 2 if causal else seq_len ** 2
    return 2.0 * batch * seq_len * per_token + layers * batch * pairs * 2 * 2 * q


def matmul_rate(device, dtype, n: int, repeats: int = 10) -> float:
    """Measured FLOP/s of an n x n x n matrix product on random data (median of ``repeats`` after 3 warm-ups)."""
    import torch

    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    times = []
    for i in range(3 + repeats):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        if i >= 3:
            times.append(time.perf_counter() - start)
    return 2.0 * n ** 3 / statistics.median(times)


def _sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


# =========================================================================== evaluation

def dilemmas_dir(root: Path, n_docs: int) -> Path:
    """A test split of ``n_docs`` real dilemmas (the bundled sample's rows, cycled) and a dev split.

    Each cycled copy gets its own id AND its own text (a case number after each action): lm-eval
    scores identical requests once, so repeated prompts would be served from its cache and inflate
    documents/s (measured: 3 forward passes for 2,048 cycled documents). The dev split is there
    because lm-eval reads the task's validation split when it builds the task.
    """
    from moral_tasks.data import SAMPLE_DIR

    rows = [json.loads(line) for path in sorted((SAMPLE_DIR / "dilemmas").glob("*.jsonl"))
            for line in path.read_text().splitlines() if line.strip()]
    with open(root / "test.scruples-dilemmas.jsonl", "w") as fh:
        for i in range(n_docs):
            row = rows[i % len(rows)]
            actions = [{**a, "description": f"{a['description']} (case {i})"} for a in row["actions"]]
            fh.write(json.dumps({**row, "id": f"{row['id']}-{i // len(rows)}", "actions": actions}) + "\n")
    (root / "dev.scruples-dilemmas.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows[:40]))
    return root


def bench_eval(model, tokenizer, data_dir: Path, batch_size: int, peak: float) -> dict:
    """moral_dilemmas through HFLM + simple_evaluate: documents/s of the request phase and its FLOP rate."""
    import lm_eval
    import torch
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from moral_tasks.lm_eval_plugin import TASKS_DIR

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    tm = TaskManager(include_defaults=False, include_path=str(TASKS_DIR),
                     metadata={"data_dir": str(data_dir), "bootstrap_resamples": 0, "best_samples": 1})

    def evaluate(limit):
        with torch.no_grad():
            return lm_eval.simple_evaluate(model=lm, tasks=["moral_dilemmas"], task_manager=tm, limit=limit,
                                           bootstrap_iters=0, log_samples=False)

    evaluate(batch_size)  # warm-up: kernels, allocator, tokenizer
    shapes, real_tokens, request_s = [], [], []

    def count_shape(_module, args, kwargs):
        ids = args[0] if args else kwargs["input_ids"]
        shapes.append(tuple(ids.shape))

    hook = lm.model.register_forward_pre_hook(count_shape, with_kwargs=True)
    loglikelihood = lm.loglikelihood

    def timed(requests, **kwargs):
        # The tokens each forward row really holds: context + continuation minus the last token
        # (one row per context: the options are single tokens and share it, see lm-eval's logits cache).
        rows = {}
        for req in requests:
            ctx, cont = req.args
            ctx_enc, cont_enc = lm._encode_pair(ctx, cont)
            rows[ctx] = max(rows.get(ctx, 0), len(ctx_enc) + len(cont_enc) - 1)
        real_tokens.extend(rows.values())
        _sync(lm.device)
        start = time.perf_counter()
        out = loglikelihood(requests, **kwargs)
        _sync(lm.device)
        request_s.append(time.perf_counter() - start)
        return out

    lm.loglikelihood = timed
    start = time.perf_counter()
    out = evaluate(None)
    total_s = time.perf_counter() - start
    hook.remove()
    seconds = sum(request_s)
    cfg = lm.model.config
    useful = sum(forward_flops(cfg, 1, t) for t in real_tokens)
    padded = sum(forward_flops(cfg, b, t) for b, t in shapes)
    n = out["n-samples"]["moral_dilemmas"]["effective"]
    if len(real_tokens) != n:  # repeated prompts are scored once by lm-eval: documents/s would be inflated
        raise RuntimeError(f"{len(real_tokens)} distinct prompts for {n} documents: the figures would count "
                           "documents that lm-eval served from its cache")
    result = {
        "docs": n,
        "docs_per_s": round(n / seconds, 2),
        "request_s": round(seconds, 3),
        "total_s": round(total_s, 3),
        "batch_size": batch_size,
        "forward_passes": len(shapes),
        "tokens_per_doc": round(sum(real_tokens) / len(real_tokens), 1),
        "padded_tokens_per_doc": round(sum(b * t for b, t in shapes) / n, 1),
        "forward_gflop_per_doc": round(useful / n / 1e9, 3),
        "achieved_tflops": round(useful / seconds / 1e12, 3),
        "roofline_ratio": round(useful / seconds / peak, 4),
        "roofline_ratio_padded": round(padded / seconds / peak, 4),
        "roofline_docs_per_s": round(peak / (useful / n), 1),
        "xentropy": out["results"]["moral_dilemmas"]["xentropy,none"],
    }
    del lm, out
    gc.collect()
    return result


# =========================================================================== training steps

def bench_steps(model, batch: dict, steps: int, autocast: bool) -> dict:
    """Time and peak memory of our answer-position step and the full-logits step, on a model with LoRA."""
    from train_speed import MemoryProbe, make_step

    from loss_plugins import get_loss
    from trainers.trainer import answer_logits

    device = batch["input_ids"].device
    # Both sides start from the same LoRA weights, so that their first losses can be compared.
    start_weights = {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}
    out = {}
    for side in ("ours", "naive"):
        model.load_state_dict(start_weights, strict=False)
        step = make_step(model, batch, get_loss("soft_cross_entropy")(), side, autocast, answer_logits)
        first_loss = step()  # warm-up
        times = []
        for _ in range(steps):
            _sync(device)
            start = time.perf_counter()
            step()
            _sync(device)
            times.append(time.perf_counter() - start)
        probe = MemoryProbe(device)
        probe.start()
        step()
        memory = probe.stop()
        out[side] = {"step_s": round(statistics.median(times), 4), "step_times_s": [round(t, 4) for t in times],
                     "first_loss": first_loss, **{k: v for k, v in memory.items() if k != "peak_mem_kind"}}
        out["peak_mem_kind"] = memory["peak_mem_kind"]
        del step
        gc.collect()
        if device.type == "cuda":
            import torch

            torch.cuda.empty_cache()
    out["ratio_step_s"] = round(out["naive"]["step_s"] / out["ours"]["step_s"], 2)
    if device.type == "cuda":  # CPU RSS in one process after other work says little (see train_speed.py)
        out["ratio_peak_increase"] = round(out["naive"]["peak_increase_mb"] / out["ours"]["peak_increase_mb"], 2)
    return out


def training_batch(vocab: int, batch_size: int, seq_len: int, device) -> dict:
    from train_speed import _make_batch

    from trainers.trainer import VoteCollator

    spec = argparse.Namespace(seed=0, batch_size=batch_size, seq_len=seq_len)
    return {k: v.to(device) for k, v in _make_batch(spec, vocab, 2, VoteCollator).items()}


def add_lora(model):
    from peft import LoraConfig, get_peft_model
    from train_speed import LORA

    model = get_peft_model(model, LoraConfig(**LORA))
    model.train()
    return model


def quantize_nf4(model) -> int:
    """Replace the decoder's linear layers by bitsandbytes NF4 layers in place, as BitsAndBytesConfig(nf4) loads them.

    The LM head stays in 16 bits (transformers never quantizes it). Layers are quantized one at a time
    from the bf16 weights already on the GPU. Returns the number of layers replaced.
    """
    import bitsandbytes as bnb
    import torch

    replaced = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, torch.nn.Linear) and f"{name}.{child_name}".lstrip(".") != "lm_head":
                q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                      compute_dtype=torch.bfloat16, quant_type="nf4", compress_statistics=False,
                                      device="meta")
                q.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, quant_type="nf4",
                                              compress_statistics=False)
                q = q.to(child.weight.device)  # quantizes
                setattr(module, child_name, q)
                replaced += 1
    model.is_loaded_in_4bit = True  # what from_pretrained(quantization_config=...) sets; PEFT reads it
    return replaced


# =========================================================================== run

def run(args) -> dict:
    import torch

    dry = args.dry_run
    preset = DRY_RUN if dry else FULL_RUN
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    device = torch.device("cpu" if dry else (args.device or "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_bench: error: no CUDA device (use --dry-run for the CPU check)")
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    autocast = dtype == torch.bfloat16  # as Trainer with bf16=True
    shape = TINY if dry else LLAMA3_8B
    started = time.perf_counter()
    result: dict = {
        "dry_run": dry,
        "device": (f"cuda: {torch.cuda.get_device_name(device)}" if device.type == "cuda"
                   else f"cpu: {platform.machine()}, {torch.get_num_threads()} torch threads"),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "versions": {name: _local_version(name) for name in ("torch", "transformers", "peft", "lm_eval", "trl",
                                                              "datasets", "accelerate", "bitsandbytes")},
        "shape": {**shape, "name": "tiny (tests/fixtures/tiny-llama)" if dry else "Llama-3-8B"},
        "dtype": str(dtype).removeprefix("torch."),
        "tokenizer": f"{TOKENIZER.relative_to(REPO)} (2,048 tokens: prompts run ~30% longer than with Llama-3's)",
    }
    peak = matmul_rate(device, dtype, args.matmul_n)
    result["matmul_tflops_measured"] = round(peak / 1e12, 3)
    result["matmul"] = f"{args.matmul_n}^3 {result['dtype']} product on random data, median of 10 after 3 warm-ups"
    gpu = result["device"]
    for key, rate in DATASHEET_BF16_FLOPS.items():
        if key in gpu:
            result["datasheet_bf16_tflops"] = rate / 1e12

    model = build_model(shape, device, dtype)
    result["model_params"] = sum(p.numel() for p in model.parameters())
    errors = []

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            result["eval"] = bench_eval(model, tokenizer, dilemmas_dir(Path(tmp), args.eval_docs),
                                        args.eval_batch_size, peak)
    except Exception as exc:  # report and go on: the other parts are independent
        result["eval"] = {"error": f"{type(exc).__name__}: {exc}"}
        errors.append("eval")

    batch = training_batch(shape["vocab_size"], args.train_batch_size, args.seq_len, device)
    result["train_batch"] = {"batch_size": args.train_batch_size, "seq_len": args.seq_len,
                             "lora": "r=16, alpha=32, all-linear (lm_head frozen)", "loss": "soft_cross_entropy",
                             "optimizer": "AdamW on the LoRA parameters", "gradient_checkpointing": False,
                             "autocast_bf16": autocast, "timed_steps": args.steps}
    try:
        model = add_lora(model)
        result["lora"] = bench_steps(model, batch, args.steps, autocast)
        model = model.unload()  # the base again, for QLoRA
    except Exception as exc:
        result["lora"] = {"error": f"{type(exc).__name__}: {exc}"}
        errors.append("lora")

    result["qlora"] = qlora_part(model, batch, args, device)
    if "error" in result["qlora"]:
        errors.append("qlora")
    result["errors"] = errors
    result["total_wall_s"] = round(time.perf_counter() - started, 1)
    return result


def qlora_part(model, batch: dict, args, device) -> dict:
    if args.skip_qlora:
        return {"skipped": "--skip-qlora"}
    if device.type != "cuda":
        return {"skipped": "QLoRA runs on CUDA only here (bitsandbytes' CPU 4-bit path is for tests, not timing)"}
    try:
        import bitsandbytes  # noqa: F401
    except Exception as exc:
        left_out = REPO / ".whl" / "LEFT_OUT.txt"
        why = left_out.read_text().strip() if left_out.is_file() else "not carried"
        return {"skipped": f"bitsandbytes is not importable ({type(exc).__name__}: {exc}); {why}"}
    try:
        from peft import prepare_model_for_kbit_training

        start = time.perf_counter()
        replaced = quantize_nf4(model)
        quantize_s = time.perf_counter() - start
        # What `moral-ambiguity train --load-in-4bit` does after loading.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        return {"quantized_layers": replaced, "quantize_s": round(quantize_s, 2),
                **bench_steps(add_lora(model), batch, args.steps, autocast=True)}
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gpu_bench", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="download the wheels the GPU image lacks")
    prep.add_argument("--wheels", type=Path, default=REPO / ".whl")
    prep.add_argument("--python", default=sys.executable, help="the Python whose pip downloads (and whose versions are pinned)")
    r = sub.add_parser("run", help="measure (on a GPU, or --dry-run on CPU) and print JSON")
    r.add_argument("--dry-run", action="store_true", help="tiny shapes on CPU: checks the whole script in seconds")
    r.add_argument("--device", help="cuda or cuda:N (default cuda)")
    r.add_argument("--eval-docs", type=int)
    r.add_argument("--eval-batch-size", type=int)
    r.add_argument("--train-batch-size", type=int)
    r.add_argument("--seq-len", type=int)
    r.add_argument("--steps", type=int, help="timed training steps per side (after one warm-up)")
    r.add_argument("--matmul-n", type=int)
    r.add_argument("--skip-qlora", action="store_true")
    r.add_argument("--output", type=Path, help="also write the JSON here")
    args = p.parse_args(argv)
    if args.command == "prepare":
        return prepare(args.wheels, args.python)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
