"""One training step of ``VoteTrainer``'s computation vs a naive full-logits trainer.

"ours":  ``trainers.trainer.answer_logits`` (forward with ``logits_to_keep=1`` and
         position ids from the left-padded mask) -> loss plugin -> backward -> AdamW step.
"naive": ``model(input_ids, attention_mask)`` (the default forward a ``compute_loss_func``
         trainer runs: B x T x V logits) -> the answer position's logits taken from the
         full logits -> the same loss -> backward -> AdamW step.

Both sides use the same random Llama (untied embeddings, Llama-3's 128,256-token vocabulary
by default) or a local ``--model`` folder, the same LoRA (r=16, alpha=32, all-linear, as
``moral-ambiguity train`` does by default) and the same left-padded batch built by
``trainers.trainer.VoteCollator``. Each side runs in its own processes (this script
re-invokes itself with ``--side``), so peak-memory numbers cannot mix: one process times
the steps, another measures the peak memory of one step (see "memory probes" below).

    python benchmarks/train_speed.py --quick                         # CPU, < 2 min
    python benchmarks/train_speed.py --device cuda --output train_speed.json

See benchmarks/README.md for what every JSON field means.
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
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MARK = "TRAIN_SPEED_JSON "  # prefix of the one result line a side process prints

# Defaults: a Llama-3.2-1B-shaped body (hidden 2048, 16 layers) with untied embeddings
# like Llama-3-8B. --quick shrinks only the body; vocabulary and sequence length stay.
FULL = dict(batch_size=8, seq_len=512, vocab=128256, hidden_size=2048, layers=16, steps=5)
QUICK = dict(batch_size=8, seq_len=512, vocab=128256, hidden_size=256, layers=2, steps=3)
N_OPTIONS = 5  # answer options per example (moral_anecdotes has 5, moral_dilemmas 2)
LORA = dict(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")


# --------------------------------------------------------------------------- memory probes
#
# Time and memory are measured in separate processes. On CPU the memory process runs with glibc
# set to mmap every block of 128 KiB or more and to hand it back on free (CPU_MALLOC_ENV), so that
# peak RSS tracks the tensors a step holds. With glibc's defaults, freed blocks of up to 32 MiB
# stay in its heap, and RSS shows the fragmentation left by earlier steps instead: the quick run's
# 'ours' read ~500 MB that way instead of ~250 MB. The same setting makes every step fault in
# fresh pages, which slowed 'ours' by ~60% on 2 cores, so the timing process keeps the defaults.
CPU_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


def _proc_status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_cpu_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process; Linux >= 4.0 only."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _ru_maxrss_mb() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


class MemoryProbe:
    """Peak memory of the steps run between start() and stop() on one device."""

    def __init__(self, device):
        import torch

        self.torch = torch
        self.cuda = device.type == "cuda"

    def start(self):
        gc.collect()
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
            self.baseline_mb = self.torch.cuda.memory_allocated() / 2**20
            self.kind = ("cuda_max_memory_allocated: torch.cuda.max_memory_allocated() during one steady-state "
                         "training step: peak bytes held in tensors, model weights, LoRA, optimizer state and "
                         "batch included (those are baseline_mem_mb); peak_increase_mb = peak - baseline")
            return
        malloc = {k: os.environ[k] for k in CPU_MALLOC_ENV if k in os.environ}
        rss = _proc_status_kb("VmRSS")
        self.reset_ok = rss is not None and _reset_cpu_peak()
        if self.reset_ok:
            self.baseline_mb = rss / 1024
            self.kind = ("cpu_peak_rss_increase: process peak RSS (VmHWM, reset via /proc/self/clear_refs) during "
                         "one steady-state training step minus the RSS just before it (baseline_mem_mb: model, "
                         "LoRA, optimizer state, batch); "
                         + (f"glibc malloc {malloc}: blocks >= 128 KiB are mmap'ed and returned on free, so RSS "
                            "tracks live memory" if malloc else "default malloc: may include heap fragmentation"))
        else:  # no resettable peak mark (not Linux): report the process's lifetime peak RSS
            self.baseline_mb = None
            self.kind = "cpu_ru_maxrss_total: getrusage ru_maxrss, the lifetime peak RSS of the process (not an increase)"

    def stop(self) -> dict:
        if self.cuda:
            self.torch.cuda.synchronize()
            total = self.torch.cuda.max_memory_allocated() / 2**20
            return {"peak_mem_mb": round(total, 1), "peak_increase_mb": round(total - self.baseline_mb, 1),
                    "baseline_mem_mb": round(self.baseline_mb, 1), "peak_mem_kind": self.kind}
        if not self.reset_ok:
            peak = _ru_maxrss_mb()
            return {"peak_mem_mb": round(peak, 1), "peak_increase_mb": None, "baseline_mem_mb": None,
                    "peak_rss_mb": round(peak, 1), "peak_mem_kind": self.kind}
        peak = (_proc_status_kb("VmHWM") or 0) / 1024
        inc = max(0.0, peak - self.baseline_mb)
        return {"peak_mem_mb": round(inc, 1), "peak_increase_mb": round(inc, 1),
                "baseline_mem_mb": round(self.baseline_mb, 1), "peak_rss_mb": round(peak, 1),
                "peak_mem_kind": self.kind}


# --------------------------------------------------------------------------- one side

def _import_trainer():
    sys.path.insert(0, str(REPO))  # measure this checkout, installed or not
    from loss_plugins import get_loss
    from trainers.trainer import VoteCollator, answer_logits

    return get_loss, VoteCollator, answer_logits


def _build_model(args, device, dtype):
    import torch

    torch.manual_seed(args.seed)
    if args.model:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype, local_files_only=True).to(device)
    else:
        from transformers import LlamaConfig, LlamaForCausalLM

        heads = max(1, args.hidden_size // 64)
        config = LlamaConfig(
            vocab_size=args.vocab,
            hidden_size=args.hidden_size,
            intermediate_size=args.intermediate_size or 4 * args.hidden_size,
            num_hidden_layers=args.layers,
            num_attention_heads=heads,
            num_key_value_heads=max(1, heads // 4),  # grouped-query attention, 4:1 as in Llama-3
            max_position_embeddings=max(args.seq_len, 2048),
            rope_theta=500000.0,
            tie_word_embeddings=False,  # untied, like Llama-3-8B
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        )
        with torch.device(device):
            model = LlamaForCausalLM._from_config(config, dtype=dtype)
    model.config.use_cache = False
    base_params = sum(p.numel() for p in model.parameters())

    from peft import LoraConfig, get_peft_model

    model = get_peft_model(model, LoraConfig(**LORA))  # what SFTTrainer does with peft_config
    model.train()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return model, base_params, trainable


def _make_batch(args, vocab, pad_id, VoteCollator):
    """A left-padded batch of width seq_len: row lengths spread from seq_len down to about seq_len / 2."""
    import torch

    g = torch.Generator().manual_seed(args.seed)
    answer_ids = torch.randperm(vocab, generator=g)[:N_OPTIONS].tolist()
    features = []
    for row in range(args.batch_size):
        n = args.seq_len - (row * args.seq_len) // (2 * args.batch_size)
        ids = torch.randint(3, vocab, (n,), generator=g).tolist()
        counts = torch.randint(0, 10, (N_OPTIONS,), generator=g).float()
        counts[row % N_OPTIONS] += 1  # every row has at least one vote
        features.append({"input_ids": ids, "answer_ids": answer_ids, "counts": counts.tolist()})
    batch = VoteCollator(pad_id)(features)
    assert batch["input_ids"].shape == (args.batch_size, args.seq_len)
    return batch


def make_step(model, batch: dict, loss_fn, side: str, autocast: bool, answer_logits):
    """One training step of ``side`` ("ours" or "naive") as a function returning the loss (synchronises)."""
    import torch

    device_type = batch["input_ids"].device.type
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def compute_loss():
        # Returns only the loss, as Trainer.compute_loss does: model outputs are dropped before backward.
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=autocast):
            if side == "ours":
                logits = answer_logits(model, batch)  # the real code path: logits_to_keep=1
            else:
                out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])  # B x T x V
                logits = out.logits[:, -1, :].gather(-1, batch["answer_ids"])
            return loss_fn(logits, batch["counts"])

    def step() -> float:
        loss = compute_loss()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()  # synchronises the device

    return step


def run_side(args) -> dict:
    import torch

    get_loss, VoteCollator, answer_logits = _import_trainer()
    device = torch.device(args.device)
    if args.dtype == "auto":
        dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    else:
        dtype = getattr(torch, args.dtype)
    # As Trainer with bf16=True: bf16 weights from _load_model plus autocast (LoRA weights stay fp32).
    autocast = dtype == torch.bfloat16

    model, base_params, trainable = _build_model(args, device, dtype)
    cfg = model.get_base_model().config
    pad_id = cfg.pad_token_id if cfg.pad_token_id is not None else 0
    batch = {k: v.to(device) for k, v in _make_batch(args, cfg.vocab_size, pad_id, VoteCollator).items()}
    step = make_step(model, batch, get_loss(args.loss)(), args.side, autocast, answer_logits)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    first_loss = step()  # warm-up, neither timed nor measured
    for _ in range(args.warmup - 1):
        step()
    if args.measure == "memory":
        probe = MemoryProbe(device)
        probe.start()
        step()
        return probe.stop()
    times = []
    for _ in range(args.steps):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)

    if device.type == "cuda":
        device_name = f"cuda: {torch.cuda.get_device_name(device)}"
    else:
        device_name = f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"
    return {
        "step_s": round(statistics.median(times), 4),
        "step_times_s": [round(t, 4) for t in times],
        "first_loss": first_loss,
        "_meta": {
            "vocab": cfg.vocab_size,
            "hidden_size": cfg.hidden_size,
            "layers": cfg.num_hidden_layers,
            "model_params": base_params,
            "trainable_params": trainable,
            "device": device_name,
            "dtype": str(dtype).removeprefix("torch."),
            "autocast_bf16": autocast,
            "torch": torch.__version__,
        },
    }


# --------------------------------------------------------------------------- driver

def _side_argv(args, side: str, measure: str) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--side", side, "--measure", measure, "--device", args.device,
            "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len), "--vocab", str(args.vocab),
            "--hidden-size", str(args.hidden_size), "--layers", str(args.layers), "--steps", str(args.steps),
            "--warmup", str(args.warmup), "--loss", args.loss, "--dtype", args.dtype, "--seed", str(args.seed)]
    if args.intermediate_size:
        argv += ["--intermediate-size", str(args.intermediate_size)]
    if args.model:
        argv += ["--model", args.model]
    return argv


def _run_child(args, side: str, measure: str) -> dict:
    env = dict(os.environ)
    if measure == "memory" and not args.device.startswith("cuda"):
        env.update({k: v for k, v in CPU_MALLOC_ENV.items() if k not in env})
    t0 = time.perf_counter()
    proc = subprocess.run(_side_argv(args, side, measure), stdout=subprocess.PIPE, text=True, env=env)  # stderr passes
    wall = round(time.perf_counter() - t0, 1)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARK):
            return {**json.loads(line[len(MARK):]), f"{measure}_process_wall_s": wall}
    why = f"killed by signal {-proc.returncode} (out of memory?)" if proc.returncode < 0 else f"exit code {proc.returncode}"
    return {"error": f"the {side} {measure} process printed no result: {why}", f"{measure}_process_wall_s": wall}


def _run_side(args, side: str) -> dict:
    timing = _run_child(args, side, "time")
    memory = _run_child(args, side, "memory")
    errors = [r.pop("error") for r in (timing, memory) if "error" in r]
    out = {**timing, **memory}
    if errors:
        out["error"] = "; ".join(errors)
    return out


def _ratio(a, b):
    return round(a / b, 2) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b > 0 else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help=f"reduced body for a CPU run under two minutes: {QUICK} (vocabulary and seq_len kept)")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda if available)")
    p.add_argument("--output", help="also write the JSON result to this file")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seq-len", type=int)
    p.add_argument("--vocab", type=int)
    p.add_argument("--hidden-size", type=int)
    p.add_argument("--layers", type=int)
    p.add_argument("--intermediate-size", type=int, help="default: 4 x hidden size")
    p.add_argument("--steps", type=int, help="timed steps after the warm-up; the median is reported")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up steps (default 1, at least 1)")
    p.add_argument("--loss", default="soft_cross_entropy", help="a registered loss name or module:Class")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                   help="auto: bfloat16 on a bf16 GPU, else float32 (as moral-ambiguity train); "
                        "bfloat16 also runs under autocast, as Trainer with bf16=True")
    p.add_argument("--model", help="a LOCAL model folder instead of the random Llama (vocab/hidden/layers ignored)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--side", choices=["ours", "naive"], help=argparse.SUPPRESS)
    p.add_argument("--measure", choices=["time", "memory"], default="time", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    defaults = QUICK if args.quick else FULL
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)

    args.warmup = max(1, args.warmup)
    if args.side:  # child process: measure one side, print one JSON line
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        print(MARK + json.dumps(run_side(args)), flush=True)
        return 0

    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"

    t0 = time.perf_counter()
    sides = {side: _run_side(args, side) for side in ("ours", "naive")}
    meta = next((s.pop("_meta") for s in sides.values() if "_meta" in s), {})
    for s in sides.values():
        s.pop("_meta", None)
    ours, naive = sides["ours"], sides["naive"]
    result = {
        "ours": ours,
        "naive": naive,
        "vocab": meta.get("vocab", args.vocab),
        "seq_len": args.seq_len,
        "batch_size": args.batch_size,
        "hidden_size": meta.get("hidden_size", args.hidden_size),
        "layers": meta.get("layers", args.layers),
        "model": args.model or "random LlamaForCausalLM (untied embeddings, torch.manual_seed)",
        "model_params": meta.get("model_params"),
        "trainable_params": meta.get("trainable_params"),
        "lora": LORA,
        "answer_options": N_OPTIONS,
        "device": meta.get("device", args.device),
        "dtype": meta.get("dtype"),
        "autocast_bf16": meta.get("autocast_bf16"),
        "torch": meta.get("torch"),
        "loss": args.loss,
        "optimizer": "torch.optim.AdamW(lr=1e-4) on the LoRA parameters",
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "memory_step": "peak_mem_mb is measured in a separate process, on one step after the warm-up",
        "peak_mem_kind": ours.get("peak_mem_kind") or naive.get("peak_mem_kind"),
        "ratio_peak_mem": _ratio(naive.get("peak_mem_mb"), ours.get("peak_mem_mb")),
        "ratio_peak_increase": _ratio(naive.get("peak_increase_mb"), ours.get("peak_increase_mb")),
        "ratio_step_s": _ratio(naive.get("step_s"), ours.get("step_s")),
        "quick": args.quick,
        "total_wall_s": round(time.perf_counter() - t0, 1),
    }
    for s in sides.values():
        s.pop("peak_mem_kind", None)
    if not args.model:  # what differs from the full configuration (for --quick: what was reduced)
        changed = {k: {"used": getattr(args, k), "full": v} for k, v in FULL.items() if getattr(args, k) != v}
        if changed:
            result["reduced" if args.quick else "changed"] = changed
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0 if "error" not in ours and "error" not in naive else 1


if __name__ == "__main__":
    sys.exit(main())
