"""Several processes give the numbers of one: data-parallel evaluation and DDP training, on CPU (gloo).

Both tests start real processes with ``accelerate launch --multi_gpu --num_processes 2`` and
``ACCELERATE_USE_CPU=1``: accelerate then starts two processes joined by a gloo process group,
the CPU stand-in for one process per GPU. This file is also the script those processes run
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
# (tasks, --limit) pairs of the evaluation. An odd limit splits unevenly (4 + 3 documents), so
# lm-eval pads the smaller rank; the debiased task's two presentation orders of a dilemma are
# consecutive documents, so they land on different ranks.
EVAL_RUNS = ((("moral_dilemmas", "moral_anecdotes"), 7), (("moral_dilemmas_debiased",), 8))
LIMITS = {task: limit for tasks, limit in EVAL_RUNS for task in tasks}


def launch(nproc: int, *args) -> list:
    """The command that runs this file as ``nproc`` gloo processes (one process: plain python)."""
    if nproc == 1:
        return [BIN / "python", HERE, *args]
    return [BIN / "accelerate", "launch", "--multi_gpu", "--num_processes", str(nproc), "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()), HERE, *args]


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
    return json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.xfail(strict=False, reason="canonical order lands with the harness branch: on main the intervals "
                   "and BEST depend on the order lm-eval gathers records in (rank by rank)")
def test_two_process_evaluation_equals_one_process(tiny_model, tmp_path):
    one = _run_eval(1, tiny_model, tmp_path)
    two = _run_eval(2, tiny_model, tmp_path)
    assert (one["world_size"], two["world_size"]) == (1, 2)
    # The split was real and complete: every document scored once, with the same log-likelihoods.
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


# ---------------------------------------------------------------- script entry (the launched processes)

def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("eval")
    e.add_argument("--model", required=True)
    e.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if args.cmd == "eval":
        eval_worker(args.model, args.out)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main(sys.argv[1:])
