"""The board YAML: which models (entries) on which tasks.

```yaml
tasks: [moral_dilemmas, moral_anecdotes]
metadata: {split: test}            # optional: lm_eval --metadata for every run
entries:
  - {name: mistral-base, model: hf, model_args: "pretrained=mistralai/Mistral-7B-Instruct-v0.3"}
  - {name: mistral-dm, model: hf, model_args: "pretrained=mistralai/Mistral-7B-Instruct-v0.3,peft=adapters/dm"}
  - {name: gpt-4o, model: openai-chat-logprobs, model_args: "model=gpt-4o"}
compare: [[mistral-dm, gpt-4o]]    # optional: paired bootstrap tests
```

Optional entry keys: ``base`` (the entry an adapter is compared with for "gap
closed"; by default the entry with the same ``model_args`` minus ``peft=``),
``apply_chat_template``, ``system_instruction``, ``batch_size``, ``device``,
``limit``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from moral_tasks.harness import DEBIASED
from moral_tasks.prompts import TASKS
ENTRY_KEYS = {"name", "model", "model_args", "base", "apply_chat_template", "system_instruction", "batch_size",
              "device", "limit"}


class ConfigError(ValueError):
    pass


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


def _base_of(entry: Entry, entries: list[Entry]) -> str | None:
    args = entry.args()
    if "peft" not in args:
        return None
    without = {k: v for k, v in args.items() if k != "peft"}
    for other in entries:
        if other is not entry and other.model == entry.model and other.args() == without:
            return other.name
    return None


def load_board(path: str | Path) -> Board:
    path = Path(path)
    where = str(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: invalid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with 'tasks' and 'entries'")
    tasks = raw.get("tasks")
    known = [*TASKS, DEBIASED]
    if not isinstance(tasks, list) or not tasks or not all(t in known for t in tasks):
        raise ConfigError(f"{where}: 'tasks' must be a non-empty list of {known}, got {tasks!r}")
    entries = []
    for i, item in enumerate(raw.get("entries") or []):
        label = f"{where}: entries[{i}]"
        if not isinstance(item, dict) or not {"name", "model"} <= set(item):
            raise ConfigError(f"{label}: needs at least 'name' and 'model'")
        if set(item) - ENTRY_KEYS:
            raise ConfigError(f"{label} ({item['name']}): unknown keys {sorted(set(item) - ENTRY_KEYS)}")
        if "api_key" in str(item.get("model_args", "")):
            raise ConfigError(f"{label} ({item['name']}): put API keys in the environment, not in model_args")
        entries.append(Entry(**{k: item[k] for k in item}))
    if not entries:
        raise ConfigError(f"{where}: 'entries' is empty")
    names = [e.name for e in entries]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ConfigError(f"{where}: duplicate entry names {duplicated}")
    for entry in entries:
        if entry.base is None:
            entry.base = _base_of(entry, entries)
        elif entry.base not in names:
            raise ConfigError(f"{where}: entry {entry.name} has base {entry.base!r}, which is not an entry")
    compare = []
    for pair in raw.get("compare") or []:
        if not (isinstance(pair, list) and len(pair) == 2 and all(p in names for p in pair)):
            raise ConfigError(f"{where}: compare item {pair!r} must be two entry names")
        compare.append(tuple(pair))
    return Board(tasks, entries, dict(raw.get("metadata") or {}), compare, where)
