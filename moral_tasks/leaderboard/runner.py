"""Run every (entry, task) that has no cached result, through the real ``lm_eval`` executable.

A run is cached under ``OUTPUT/runs/<key>/`` where the key hashes everything
that changes the numbers: the entry (model type, model_args, chat template,
system instruction, limit), the task and its metadata, the SHA-256 of the data
file, a fingerprint of local model / adapter folders, and the prompt and
package versions. A rerun with nothing changed runs nothing; a run that fails
leaves the finished ones in place and is reported, not raised: the board is
written for everything that succeeded.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from moral_tasks import __version__
from moral_tasks.data import locate, sha256_file
from moral_tasks.prompts import PROMPT_VERSION

from .config import Board, Entry, task_spec

DONE = "run.json"
# model_args whose local folders hold weights: their contents are part of the run key.
# (Not e.g. an API model's cache_dir, which changes with every run.)
MODEL_FOLDER_ARGS = ("pretrained", "peft", "delta", "tokenizer", "lora_local_path")


def _data_fingerprint(task: str, metadata: dict) -> str:
    spec = task_spec(task)
    path, source = locate(spec.dataset, metadata.get("split", "test"), metadata.get("data_dir"))
    return f"{source}:{sha256_file(path)}"


def _folder_fingerprint(value: str) -> str | None:
    """Names, sizes and modification times of a local model or adapter folder (cheap, catches retraining)."""
    folder = Path(value)
    if not folder.is_dir():
        return None
    stats = sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                   for p in folder.rglob("*") if p.is_file() and "checkpoint-" not in str(p))
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()


def run_key(entry: Entry, task: str, metadata: dict) -> str:
    spec = {
        "entry": {k: v for k, v in asdict(entry).items() if k not in ("name", "base")},
        "task": task,
        "metadata": metadata,
        "data": _data_fingerprint(task, metadata),
        "folders": {k: _folder_fingerprint(v) for k, v in entry.args().items() if k in MODEL_FOLDER_ARGS},
        "prompt_version": PROMPT_VERSION,
        "moral_ambiguity": __version__,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]


def lm_eval_command(entry: Entry, task: str, metadata: dict, output_path: Path) -> list[str]:
    cmd = [str(Path(sys.executable).parent / "lm_eval"), "--model", entry.model, "--tasks", task,
           "--log_samples", "--output_path", str(output_path)]
    if entry.model_args:
        cmd += ["--model_args", entry.model_args]
    if metadata:
        cmd += ["--metadata", json.dumps(metadata)]
    if entry.apply_chat_template:
        cmd.append("--apply_chat_template")
    for flag, value in (("--system_instruction", entry.system_instruction), ("--batch_size", entry.batch_size),
                        ("--device", entry.device), ("--limit", entry.limit)):
        if value is not None:
            cmd += [flag, str(value)]
    return cmd


RunKey = tuple[str, str]  # (entry name, task)


def run_board(board: Board, output: Path, console=None) -> tuple[dict[RunKey, Path], dict[RunKey, str]]:
    """Run what is missing; return the run folder of every (entry, task) that has a result, and the
    error of every one that failed (one line, naming its log)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = console or Console(stderr=True)
    planned = {}
    for entry in board.entries:
        for task in board.tasks:
            planned[(entry.name, task)] = (entry, output / "runs" / run_key(entry, task, board.metadata))
    pending = [(name, task) for (name, task), (_, folder) in planned.items() if not (folder / DONE).exists()]
    console.print(f"leaderboard: {len(planned) - len(pending)} of {len(planned)} runs cached, {len(pending)} to run")
    failures = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=not pending) as progress:
        bar = progress.add_task("running", total=len(pending))
        for name, task in pending:
            entry, folder = planned[(name, task)]
            progress.update(bar, description=f"{name} / {task}")
            if missing := missing_local_path(entry):
                failures[(name, task)] = missing
                progress.advance(bar)
                continue
            folder.mkdir(parents=True, exist_ok=True)
            cmd = lm_eval_command(entry, task, board.metadata, folder / "lm_eval")
            started = time.time()
            with open(folder / "lm_eval.log", "w") as logfile:
                proc = subprocess.run(cmd, stdout=logfile, stderr=subprocess.STDOUT, env=os.environ.copy())
            if proc.returncode != 0:
                failures[(name, task)] = (f"lm_eval exited {proc.returncode}: {_last_error(folder / 'lm_eval.log')} "
                                          f"(log: {folder / 'lm_eval.log'})")
            else:
                (folder / DONE).write_text(json.dumps({"entry": asdict(entry), "task": task, "metadata": board.metadata,
                                                       "seconds": round(time.time() - started, 1)}, indent=2))
            progress.advance(bar)
    done = {key: folder for key, (_, folder) in planned.items() if key not in failures}
    return done, failures


def missing_local_path(entry: Entry) -> str | None:
    """A model_args folder written as a local path (/..., ./..., ../..., ~/...) that does not exist: said at once,
    rather than after lm_eval has started and taken it for a hub id."""
    for key, value in entry.args().items():
        local = value.startswith(("/", "./", "../", "~"))
        if key in MODEL_FOLDER_ARGS and local and not Path(value).expanduser().exists():
            return f"model_args {key}={value}: no such file or folder"
    return None


def _last_error(log: Path) -> str:
    """The last line of a failed run's log that names an error (Python's last traceback line, usually)."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "error" in line]
    return (errors or lines or ["no output"])[-1][:300]
