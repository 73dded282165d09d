"""The board file (YAML): which models (entries) on which tasks, validated as a whole.

```yaml
title: SmolLM2 and its adapters     # optional
tasks: [moral_dilemmas, moral_anecdotes]
metadata: {split: test}             # optional: lm_eval --metadata for every run
entries:
  - {name: mistral-base, model: hf, model_args: "pretrained=mistralai/Mistral-7B-Instruct-v0.3"}
  - {name: mistral-dm, model: hf, model_args: "pretrained=mistralai/Mistral-7B-Instruct-v0.3,peft=adapters/dm"}
  - {name: gpt-4o, model: openai-chat-logprobs, model_args: "model=gpt-4o"}
compare: [[mistral-dm, gpt-4o]]     # optional: paired bootstrap tests
```

Every key is checked: an unknown or misspelt key (``metdata:``), a value of the
wrong type or a ``data_dir`` that does not exist is an error naming the file,
the line and the key, never a silent default.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from moral_tasks.data import SPLITS

TASKS_DIR = Path(__file__).resolve().parents[1] / "tasks"
TOP_KEYS = {"title": str, "tasks": list, "metadata": dict, "entries": list, "compare": list}
# lm_eval --metadata keys our task loaders read (moral_tasks.harness), with their types.
METADATA_KEYS = {"split": str, "data_dir": str, "dirichlet_concentration": (int, float), "bootstrap_resamples": int,
                 "bootstrap_seed": int, "best_samples": int,
                 # the generation readouts' (moral_tasks.readouts.readout.readout_settings)
                 "samples": int, "smoothing": (int, float)}
ENTRY_KEYS = {"name": str, "model": str, "model_args": str, "base": str, "apply_chat_template": bool,
              "system_instruction": str, "batch_size": (str, int), "device": str, "limit": int}
REQUIRED_ENTRY_KEYS = ("name", "model")


class ConfigError(ValueError):
    pass


@functools.cache
def known_tasks() -> tuple[str, ...]:
    """Task names of our lm-eval YAMLs (read as text: their ``!function`` tags need lm-eval's loader)."""
    names = []
    for path in sorted(TASKS_DIR.rglob("*.yaml")):
        names += re.findall(r"^task:\s*([A-Za-z0-9_\-]+)\s*$", path.read_text(), flags=re.M)
    return tuple(sorted(set(names)))


def task_spec(task: str):
    """The TaskSpec behind a task name: the longest spec name it starts with (variants such as
    ``moral_dilemmas_debiased`` share their base task's data and labels)."""
    from moral_tasks.prompts import TASKS

    matches = [name for name in TASKS if task == name or task.startswith(name + "_")]
    if not matches:
        raise ConfigError(f"task {task!r} is not one of ours (known: {list(known_tasks())})")
    return TASKS[max(matches, key=len)]


@dataclass
class Entry:
    name: str
    model: str
    model_args: str = ""
    base: str | None = None
    apply_chat_template: bool = False
    system_instruction: str | None = None
    batch_size: str | int | None = None
    device: str | None = None
    limit: int | None = None

    def args(self) -> dict[str, str]:
        return dict(part.split("=", 1) for part in self.model_args.split(",") if "=" in part)


@dataclass
class Board:
    tasks: list[str]
    entries: list[Entry]
    metadata: dict = field(default_factory=dict)
    compare: list[tuple[str, str]] = field(default_factory=list)
    source: str = ""
    title: str | None = None


def base_of(entry: Entry, entries: list[Entry]) -> str | None:
    args = entry.args()
    if "peft" not in args:
        return None
    without = {k: v for k, v in args.items() if k != "peft"}
    for other in entries:
        if other is not entry and other.model == entry.model and other.args() == without:
            return other.name
    return None


def _type_name(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {str: "a string", int: "a whole number", float: "a number", bool: "true or false", list: "a list",
             dict: "a mapping"}
    return " or ".join(names[k] for k in kinds)


def _is(value, kind) -> bool:
    # YAML's true/false are ints to Python: a bool is never a number here.
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)


class _Where:
    """File:line of every key in the YAML, from the composed node tree."""

    def __init__(self, path: Path, text: str):
        self.path, self.lines = path, {}
        self._walk(yaml.compose(text), ())

    def _walk(self, node, at: tuple):
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                self.lines[at + (key.value,)] = key.start_mark.line + 1
                self._walk(value, at + (key.value,))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.lines[at + (i,)] = item.start_mark.line + 1
                self._walk(item, at + (i,))

    def __call__(self, *at) -> str:
        line = next((self.lines[at[:n]] for n in range(len(at), 0, -1) if at[:n] in self.lines), None)
        return f"{self.path}:{line}" if line else str(self.path)


def _label(at: tuple) -> str:
    return "".join(f"[{k}]" if isinstance(k, int) else (f".{k}" if i else k) for i, k in enumerate(at))


def _check_mapping(raw: dict, keys: dict, at: tuple, where: _Where, suffix: str = "") -> None:
    for key, value in raw.items():
        if key not in keys:
            close = [k for k in keys if _close(str(key), k)]
            hint = f" (did you mean {close[0]!r}?)" if close else f"; known keys: {', '.join(sorted(keys))}"
            raise ConfigError(f"{where(*at, key)}: unknown key {_label(at + (key,))!r}{suffix}{hint}")
        if value is not None and not _is(value, keys[key]):
            raise ConfigError(f"{where(*at, key)}: {_label(at + (key,))}{suffix} must be {_type_name(keys[key])}, "
                              f"got {value!r:.60}")


def _close(a: str, b: str) -> bool:
    import difflib

    return difflib.SequenceMatcher(None, a, b).ratio() >= 0.75


# lm-eval model types of ours that only score options and cannot write a reply.
NO_GENERATION = ("hf-encoder-classifier",)


def _check_generation(tasks: list[str], entries: list[Entry], where) -> None:
    from moral_tasks.prompts import get_task

    generated = [t for t in tasks if get_task(t).readout != "logprob"]
    for i, entry in enumerate(entries):
        if generated and entry.model in NO_GENERATION:
            raise ConfigError(f"{where('entries', i, 'model')}: entries[{i}] ({entry.name}): model type {entry.model} "
                              f"cannot generate, so it cannot run the generation readout(s) {generated}; "
                              "put them on a board without it")


def load_board(path: str | Path) -> Board:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None
    try:
        raw = yaml.safe_load(text)
        where = _Where(path, text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{at}: invalid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with 'tasks' and 'entries'")
    _check_mapping(raw, TOP_KEYS, (), where)

    tasks = raw.get("tasks")
    if not tasks:
        raise ConfigError(f"{where('tasks')}: 'tasks' must be a non-empty list of {list(known_tasks())}")
    for i, task in enumerate(tasks):
        if task not in known_tasks():
            raise ConfigError(f"{where('tasks', i)}: unknown task {task!r} in 'tasks'; known: {list(known_tasks())}")
    if len(set(tasks)) != len(tasks):
        raise ConfigError(f"{where('tasks')}: a task is listed twice in 'tasks'")

    metadata = dict(raw.get("metadata") or {})
    _check_mapping(metadata, METADATA_KEYS, ("metadata",), where)
    splits = sorted({s for t in tasks for s in SPLITS[task_spec(t).dataset]})
    if "split" in metadata and not all(metadata["split"] in SPLITS[task_spec(t).dataset] for t in tasks):
        raise ConfigError(f"{where('metadata', 'split')}: metadata.split {metadata['split']!r} is not a split of "
                          f"every task's data ({', '.join(splits)})")
    if metadata.get("data_dir") is not None and not Path(metadata["data_dir"]).expanduser().is_dir():
        raise ConfigError(f"{where('metadata', 'data_dir')}: metadata.data_dir {metadata['data_dir']!r} "
                          "is not a directory")

    entries = []
    for i, item in enumerate(raw.get("entries") or []):
        at = ("entries", i)
        if not isinstance(item, dict):
            raise ConfigError(f"{where(*at)}: entries[{i}] must be a mapping with at least 'name' and 'model'")
        name = f" ({item['name']})" if isinstance(item.get("name"), str) else ""
        missing = [k for k in REQUIRED_ENTRY_KEYS if item.get(k) is None]
        if missing:
            raise ConfigError(f"{where(*at)}: entries[{i}]{name} needs at least 'name' and 'model' "
                              f"(missing {', '.join(missing)})")
        _check_mapping(item, ENTRY_KEYS, at, where, suffix=name)
        if "api_key" in (item.get("model_args") or ""):
            raise ConfigError(f"{where(*at, 'model_args')}: entries[{i}]{name}: put API keys in the environment, "
                              "not in model_args")
        entries.append(Entry(**{k: v for k, v in item.items() if v is not None}))
    if not entries:
        raise ConfigError(f"{where('entries')}: 'entries' is missing or empty")
    _check_generation(tasks, entries, where)
    names = [e.name for e in entries]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ConfigError(f"{where('entries', names.index(duplicated[0]), 'name')}: duplicate entry names {duplicated}")
    for i, entry in enumerate(entries):
        if entry.base is None:
            entry.base = base_of(entry, entries)
        elif entry.base not in names or entry.base == entry.name:
            raise ConfigError(f"{where('entries', i, 'base')}: entry {entry.name} has base {entry.base!r}, "
                              "which is not another entry")
    compare = []
    for i, pair in enumerate(raw.get("compare") or []):
        if not (isinstance(pair, list) and len(pair) == 2 and all(p in names for p in pair) and pair[0] != pair[1]):
            raise ConfigError(f"{where('compare', i)}: compare item {pair!r} must be two different entry names")
        compare.append(tuple(pair))
    return Board(list(tasks), entries, metadata, compare, str(path), raw.get("title"))
