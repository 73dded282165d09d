"""Which checkpoints can be resumed from, and their removal after a successful run.

transformers writes a checkpoint's weights first and ``trainer_state.json``
last (``Trainer._save_checkpoint``), and ``get_last_checkpoint`` takes the
highest-numbered folder whatever it holds: a run killed while saving leaves a
folder that makes ``--resume`` fail. Here a checkpoint counts only when its
trainer state parses and its weights file has a readable header.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"
WEIGHT_FILES = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json",
                "adapter_model.bin", "pytorch_model.bin")


def checkpoints(output_dir: str | Path) -> list[Path]:
    """``checkpoint-N`` folders, highest step first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def incomplete_reason(checkpoint: Path) -> str | None:
    """Why ``checkpoint`` cannot be resumed from, or None when it can."""
    try:
        json.loads((checkpoint / STATE_FILE).read_text())
    except FileNotFoundError:
        return f"no {STATE_FILE}"
    except (OSError, ValueError) as exc:
        return f"unreadable {STATE_FILE} ({type(exc).__name__})"
    weights = [checkpoint / name for name in WEIGHT_FILES if (checkpoint / name).is_file()]
    if not weights:
        return "no weights file"
    for path in weights:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            try:
                with safe_open(str(path), framework="pt") as fh:
                    fh.keys()
            except Exception as exc:  # safetensors raises its own error types for truncated files
                return f"unreadable {path.name} ({type(exc).__name__})"
    return None


def last_complete_checkpoint(output_dir: str | Path, warn: bool = True) -> Path | None:
    """The highest-numbered complete checkpoint; incomplete ones above it are skipped with a warning."""
    for checkpoint in checkpoints(output_dir):
        reason = incomplete_reason(checkpoint)
        if reason is None:
            return checkpoint
        if warn:
            log.warning("skipping incomplete checkpoint %s (%s; interrupted while saving?)", checkpoint, reason)
    return None


def remove_checkpoints(output_dir: str | Path) -> None:
    for checkpoint in checkpoints(output_dir):
        shutil.rmtree(checkpoint)
