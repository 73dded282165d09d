"""A disk cache of lm-eval's index of its own ~14,700 task YAMLs.

Every ``TaskManager`` (each ``lm_eval`` run, each ``simple_evaluate`` given task names) parses
all of lm-eval's task YAMLs before it looks at the one task asked for: 8.6 s on a 2-core CPU
with lm-eval 0.4.13, against 1.0 s to load this cache (measured in one process,
``TaskIndex.build`` vs ``pickle.loads`` plus the fingerprint walk). Only lm-eval's installed task
folder is cached; our tasks and a user's ``--include_path`` are small and always read afresh.

The cache is keyed by lm-eval's version, the folder and a fingerprint of every file in it
(count, total size, newest modification time), so an edited, added or removed YAML, or another
lm-eval, rebuilds it. Anything wrong with the cache file (truncated, unreadable, another format)
means a fresh build, never an error. ``MORAL_AMBIGUITY_TASK_INDEX_CACHE=0`` switches it off.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import tempfile
from pathlib import Path

from .data.files import cache_dir

ENV_SWITCH = "MORAL_AMBIGUITY_TASK_INDEX_CACHE"
FORMAT = 1
log = logging.getLogger(__name__)


def index_cache_dir() -> Path:
    return cache_dir().parent / "lm-eval-task-index"


def fingerprint(root: Path) -> tuple[int, int, int]:
    """(files, total bytes, newest mtime in ns) of everything under ``root`` but bytecode, which Python may
    write there at any time (a first import of a task's utils.py) and the index never reads."""
    files = size = newest = 0
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in names:
            if name.endswith(".pyc"):
                continue
            stat = os.stat(os.path.join(folder, name))
            files, size, newest = files + 1, size + stat.st_size, max(newest, stat.st_mtime_ns)
    return files, size, newest


def cached_build(build, root: Path, resolve_includes: bool, version: str, folder: Path | None = None) -> dict:
    """``build([root])`` from the cache when its key and fingerprint still hold, else built and stored."""
    root = Path(root).resolve()
    folder = folder or index_cache_dir()
    key = hashlib.sha256(f"{FORMAT}|{version}|{root}|{resolve_includes}".encode()).hexdigest()[:24]
    path = folder / f"{key}.pickle"
    stamp = fingerprint(root)
    try:
        with open(path, "rb") as fh:
            stored_stamp, index = pickle.load(fh)
        if stored_stamp == stamp:
            return index
    except FileNotFoundError:
        pass
    except Exception as err:  # a damaged cache costs a rebuild, never a run
        log.debug("task index cache %s unreadable (%s): rebuilding", path, err)
    index = build([root], resolve_includes=resolve_includes)
    _store(path, (stamp, index))
    return index


def _store(path: Path, value) -> None:
    """Write atomically; a cache that cannot be written is skipped, and leaves no partial file behind."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("wb", dir=path.parent, delete=False, suffix=".tmp") as fh:
            tmp = fh.name
            pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except (OSError, pickle.PicklingError) as err:
        log.debug("task index cache %s not written (%s)", path, err)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def install(task_index_cls, lm_eval_tasks_dir: Path, version: str) -> None:
    """Serve ``TaskIndex.build``'s pass over ``lm_eval_tasks_dir`` from the cache; other folders as before."""
    if getattr(task_index_cls, "_moral_ambiguity_cached", False) or os.environ.get(ENV_SWITCH) == "0":
        return
    original = task_index_cls.build
    lm_eval_tasks_dir = Path(lm_eval_tasks_dir).resolve()

    def build(paths, *, resolve_includes=True):
        # lm-eval's own merge: later folders override earlier ones, with its warning.
        index: dict = {}
        for root in paths:
            if Path(root).resolve() == lm_eval_tasks_dir:
                part = cached_build(original, root, resolve_includes, version)
            else:
                part = original([root], resolve_includes=resolve_includes)
            for name, entry in part.items():
                if name in index:
                    logging.getLogger("lm_eval.tasks._index").warning(
                        "Task '%s' from %s overrides existing task from %s", name, entry.yaml_path,
                        index[name].yaml_path)
                index[name] = entry
        return index

    task_index_cls.build = staticmethod(build)
    task_index_cls._moral_ambiguity_cached = True
