"""Several processes give the numbers of one: data-parallel evaluation and DDP training, on CPU (gloo).

Both tests start real processes with ``ACCELERATE_USE_CPU=1 accelerate launch --config_file
examples/accelerate/ddp_cpu.yaml`` (the documented recipe; the same as ``--multi_gpu --num_processes 2``):
accelerate then starts two processes joined by a gloo process group, the CPU stand-in for one
process per GPU. This file is also the script those processes run
(``python tests/test_multiprocess.py eval ...``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # conftest, also when run as the launched script

from conftest import BIN, offline_env, run  # noqa: E402

HERE = Path(__file__).resolve()
DDP_CPU_CONFIG = HERE.parent.parent / "examples" / "accelerate" / "ddp_cpu.yaml"




# (tasks, --limit) pairs of the evaluation. An odd limit splits unevenly (4 + 3 documents), so
# lm-eval pads the smaller rank.
# The _full variants report BEST and every interval.
EVAL_RUNS = ((("moral_dilemmas_full", "moral_anecdotes_full"), 7), (("moral_dilemmas_debiased_full",), 8))
LIMITS = {task: limit for tasks, limit in EVAL_RUNS for task in tasks}


def launch(nproc: int, *args) -> list:
    """The command that runs this file as 2 gloo processes (the example accelerate config), or as 1 process."""
    if nproc == 1:
        return [BIN / "python", HERE, *args]
    assert nproc == 2, "examples/accelerate/ddp_cpu.yaml starts 2 processes"
    return [BIN / "accelerate", "launch", "--config_file", DDP_CPU_CONFIG, "--main_process_port", str(_free_port()),
            HERE, *args]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def multiprocess_env(**extra) -> dict:
    return offline_env(ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1", **extra)


# ---------------------------------------------------------------- data-parallel evaluation

def eval_worker(model: str, out: str) -> None:
    """Evaluate EVAL_RUNS with lm-eval's HF backend; rank 0 writes results and per-document log-likelihoods."""
    import lm_eval
    from accelerate import PartialState
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from moral_tasks.data import SAMPLE_DIR
    from moral_tasks.lm_eval_plugin import TASKS_DIR

    class RankedHFLM(HFLM):
        """HFLM with the rank and world size accelerate gives it: this stands in for the GPU split.

        On GPUs, HFLM's constructor takes ``rank = accelerator.local_process_index`` and
        ``world_size = accelerator.num_processes`` when it counts more than one GPU; on CPU it
        counts none and every process would score every document. Setting the same two values
        here makes lm-eval split the documents, pad the shorter rank and gather the per-document
        results to rank 0 exactly as it does on GPUs.
        """

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            accelerator = getattr(self, "accelerator", None)  # set by HFLM when num_processes > 1
            if accelerator is not None:
                self._rank, self._world_size = accelerator.local_process_index, accelerator.num_processes

    lm = RankedHFLM(pretrained=model, dtype="float32", batch_size=1, device="cpu")
    # After HFLM: its Accelerator reads ACCELERATE_USE_CPU, a bare PartialState() would not.
    state = PartialState()
    assert (lm.rank, lm.world_size) == (state.process_index, int(os.environ.get("WORLD_SIZE", 1)))
    scored: dict[str, set] = {}  # documents this process scored, per task
    loglikelihood = lm.loglikelihood

    def logged(requests, **kwargs):
        for req in requests:
            scored.setdefault(req.task_name, set()).add(req.doc_id)
        return loglikelihood(requests, **kwargs)

    lm.loglikelihood = logged
    tm = TaskManager(include_defaults=False, include_path=str(TASKS_DIR),
                     metadata={"data_dir": str(SAMPLE_DIR), "bootstrap_resamples": 200, "best_samples": 200})
    combined: dict = {"world_size": lm.world_size, "results": {}, "n-samples": {}, "logliks": {}}
    for tasks, limit in EVAL_RUNS:
        res = lm_eval.simple_evaluate(model=lm, tasks=list(tasks), task_manager=tm, limit=limit, bootstrap_iters=0,
                                      log_samples=True)
        if res is None:  # ranks other than 0
            continue
        combined["results"].update(res["results"])
        combined["n-samples"].update(res["n-samples"])
        for task in tasks:
            combined["logliks"][task] = {f'{s["doc_id"]}': [float(r[0]) for r in s["filtered_resps"]]
                                         for s in res["samples"][task]}
    Path(f"{out}.rank{state.process_index}").write_text(json.dumps({t: sorted(ids) for t, ids in scored.items()}))
    if state.is_main_process:
        Path(out).write_text(json.dumps(combined, sort_keys=True))


def _numbers(value, path=""):
    """Every number in a results dict, as (path, value) pairs; strings kept as they are."""
    if isinstance(value, dict):
        for k in sorted(value):
            yield from _numbers(value[k], f"{path}/{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _numbers(v, f"{path}[{i}]")
    else:
        yield path, value


def _run_eval(nproc: int, model, tmp_path: Path) -> dict:
    out = tmp_path / f"eval-{nproc}.json"
    run(launch(nproc, "eval", "--model", model, "--out", out), cwd=tmp_path, env=multiprocess_env(), timeout=300)
    result = json.loads(out.read_text())
    result["scored_by_rank"] = [json.loads(Path(f"{out}.rank{r}").read_text()) for r in range(nproc)]
    return result


@pytest.mark.slow
def test_two_process_evaluation_equals_one_process(tiny_model, tmp_path):
    one = _run_eval(1, tiny_model, tmp_path)
    two = _run_eval(2, tiny_model, tmp_path)
    assert (one["world_size"], two["world_size"]) == (1, 2)
    # The split was real: each document was scored by exactly one of the two processes ...
    for task, limit in LIMITS.items():
        first, second = (set(ranks.get(task, [])) for ranks in two["scored_by_rank"])
        assert first and second and not first & second and first | second == set(range(limit)), task
    # ... and complete, with the 1-process log-likelihoods.
    assert two["n-samples"] == one["n-samples"]
    for task in one["logliks"]:
        assert len(one["logliks"][task]) == LIMITS[task]
        assert two["logliks"][task] == one["logliks"][task], task
    # Every number of every task, intervals and BEST included, is the 1-process number.
    flat_one, flat_two = dict(_numbers(one["results"])), dict(_numbers(two["results"]))
    assert flat_two.keys() == flat_one.keys()
    assert any("_ci95" in k for k in flat_one) and any("best_xentropy" in k for k in flat_one)
    differ = {k: (flat_one[k], flat_two[k]) for k in flat_one
              if flat_one[k] != flat_two[k] and not _both_nan(flat_one[k], flat_two[k])}
    assert not differ, f"{len(differ)} numbers differ (1 process, 2 processes): {differ}"


def _both_nan(a, b) -> bool:
    return isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)


# ---------------------------------------------------------------- DDP training

def train_argv(model, out, data_dir, steps: int, eval_steps: int, limit_eval: int) -> list[str]:
    """``moral-ambiguity train`` arguments of the DDP test: the one place that spells the trainer's flags."""
    return ["train", "--model_name_or_path", str(model), "--task", "moral_dilemmas", "--loss", "soft_cross_entropy",
            "--output_dir", str(out), "--data_dir", str(data_dir), "--per_device_train_batch_size", "4",
            "--per_device_eval_batch_size", "4", "--seed", "0", "--max_steps", str(steps),
            "--eval_steps", str(eval_steps), "--learning_rate", "3e-3", "--eval_split", "dev",
            "--limit_eval", str(limit_eval)]


def train_worker(write_log: str, argv: list[str]) -> None:
    """Run ``moral-ambiguity train`` and log, per rank, every file this process writes.

    An audit hook sees every ``open`` made from Python (JSON configs, the card, the tokenizer's
    config); ``torch.save`` and safetensors write from C++ and Rust, so those two functions are
    wrapped to log their paths (before the libraries that call them are imported).
    """
    import safetensors.torch
    import torch

    rank = os.environ.get("RANK", "0")
    writes: list[str] = []
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND

    def hook(event, args):
        if event == "open" and isinstance(args[0], (str, os.PathLike)):
            mode, flags = args[1], args[2]
            if (mode is not None and any(c in mode for c in "wax+")) or (mode is None and flags & write_flags):
                writes.append(os.fspath(args[0]))

    def logged(save, path_arg: int):
        def wrapper(*args, **kwargs):
            path = args[path_arg] if len(args) > path_arg else kwargs.get("f", kwargs.get("filename"))
            if isinstance(path, (str, os.PathLike)):
                writes.append(os.fspath(path))
            return save(*args, **kwargs)
        return wrapper

    torch.save = logged(torch.save, 1)
    safetensors.torch.save_file = logged(safetensors.torch.save_file, 1)
    sys.addaudithook(hook)
    from moral_tasks.cli.main import main as cli

    code = cli(argv)
    Path(f"{write_log}.rank{rank}").write_text(json.dumps(writes))
    sys.exit(code)


@pytest.fixture(scope="module")
def ddp_run(tiny_model, tmp_path_factory):
    from moral_tasks.data import SAMPLE_DIR

    root = tmp_path_factory.mktemp("ddp")
    out, log = root / "adapter", root / "writes"
    # 13 dev documents over 2 ranks x batch 4: the last evaluation batch is padded, and
    # gather_for_metrics must drop the duplicates.
    argv = train_argv(tiny_model, out, SAMPLE_DIR, steps=4, eval_steps=4, limit_eval=13) + ["--keep_checkpoints"]
    proc = run(launch(2, "train", "--write-log", log, "--", *argv), cwd=root, env=multiprocess_env(), timeout=300)
    writes = {rank: [Path(p).resolve() for p in json.loads((root / f"writes.rank{rank}").read_text())]
              for rank in (0, 1)}
    return out, writes, proc.stdout + proc.stderr


@pytest.mark.slow
def test_ddp_training_writes_one_adapter_from_rank_zero_only(ddp_run):
    from moral_tasks.cards import CARD_NAME

    out, writes, log = ddp_run
    card = json.loads((out / CARD_NAME).read_text())
    assert card["steps"] == 4
    # One run over both processes' batches, logged once (by rank 0).
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["epoch"] == pytest.approx(4 * 2 * 4 / 40), "each step takes a batch of 4 from each of 2 processes"
    assert log.count("'train_runtime'") == 1
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["adapter_model.safetensors"]
    mine = {rank: [p.relative_to(out) for p in paths if p.is_relative_to(out.resolve())] for rank, paths in writes.items()}
    top = {rank: [str(p) for p in paths if len(p.parts) == 1] for rank, paths in mine.items()}
    # Rank 0 writes the adapter and the card of the output folder once each, and the tokenizer.
    for name in ("adapter_model.safetensors", "adapter_config.json", CARD_NAME):
        assert top[0].count(name) == 1, (name, top[0])
    assert "tokenizer_config.json" in top[0]
    # Rank 1 writes nothing there but its own random-number state in each checkpoint (transformers
    # saves one rng_state_<rank>.pth per process, so that a resumed run draws what this one would have).
    others = [str(p) for p in mine[1] if not (p.parts[0].startswith("checkpoint-") and p.name == "rng_state_1.pth")]
    assert others == [], f"rank 1 wrote {others}"
    assert any(p.name == "rng_state_1.pth" for p in mine[1]), "rank 1 took no part in checkpointing"


@pytest.mark.slow
def test_ddp_adapter_loads_in_lm_eval_with_the_card_dev_metrics(ddp_run, tiny_model):
    """The adapter loads with ``peft=``; lm_eval's dev metrics are the card's (gathered from 2 ranks)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from moral_tasks.cards import CARD_NAME
    from moral_tasks.data import SAMPLE_DIR
    from moral_tasks.lm_eval_plugin import TASKS_DIR

    out, _, _ = ddp_run
    card = json.loads((out / CARD_NAME).read_text())
    tm = TaskManager(include_defaults=False, include_path=str(TASKS_DIR),
                     metadata={"data_dir": str(SAMPLE_DIR), "split": "dev", "bootstrap_resamples": 0, "best_samples": 1})
    res = lm_eval.simple_evaluate(model="hf", model_args={"pretrained": str(tiny_model), "peft": str(out),
                                                          "dtype": "float32"},
                                  tasks=["moral_dilemmas_full"], task_manager=tm, limit=13, bootstrap_iters=0,
                                  batch_size=4, device="cpu", log_samples=False)
    row = res["results"]["moral_dilemmas_full"]
    assert res["n-samples"]["moral_dilemmas_full"]["effective"] == 13
    shared = [name for name in card["final_dev_metrics"] if f"{name},none" in row]
    assert {"xentropy", "acc", "jsd", "calibrated_xentropy_insample"} <= set(shared)
    for name in shared:
        assert card["final_dev_metrics"][name] == pytest.approx(row[f"{name},none"], rel=1e-4, abs=1e-5), name


# ---------------------------------------------------------------- script entry (the launched processes)

def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("eval")
    e.add_argument("--model", required=True)
    e.add_argument("--out", required=True)
    t = sub.add_parser("train")
    t.add_argument("--write-log", required=True)
    t.add_argument("argv", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    if args.cmd == "eval":
        eval_worker(args.model, args.out)
    else:
        train_worker(args.write_log, args.argv[1:] if args.argv[:1] == ["--"] else args.argv)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main(sys.argv[1:])
