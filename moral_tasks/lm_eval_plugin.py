"""Make lm-eval see our tasks and model types without ``--include_path`` or imports.

Called by the startup hook once ``lm_eval.tasks.manager`` (tasks),
``lm_eval.api.registry`` (model types), ``lm_eval.models.huggingface``
(model identity in results) or ``lm_eval.utils`` (the printed table) has been
imported, and usable directly from Python (``install()``, ``install_models()``,
``install_model_identity()``, ``install_table()``).
"""

from __future__ import annotations

import functools
import inspect
import logging
from pathlib import Path

TASKS_DIR = Path(__file__).parent / "tasks"


def _with_our_tasks(include_path):
    paths = [] if include_path is None else list(include_path) if isinstance(include_path, (list, tuple)) else [include_path]
    if not any(Path(p).resolve() == TASKS_DIR.resolve() for p in paths):
        # First, so that a user's own include_path can still override our tasks.
        paths.insert(0, str(TASKS_DIR))
    return paths


def install(manager_module=None) -> None:
    if manager_module is None:
        import lm_eval.tasks.manager as manager_module

    cls = manager_module.TaskManager
    if getattr(cls, "_moral_ambiguity_installed", False):
        return
    original = cls.__init__
    signature = inspect.signature(original)

    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        if bound.arguments.get("include_defaults", True):
            bound.arguments["include_path"] = _with_our_tasks(bound.arguments.get("include_path"))
        original(*bound.args, **bound.kwargs)

    cls.__init__ = __init__
    cls._moral_ambiguity_installed = True
    install_task_index_cache(manager_module)


def install_task_index_cache(manager_module=None) -> None:
    """Cache lm-eval's index of its own task YAMLs on disk (:mod:`moral_tasks.task_index_cache`)."""
    if manager_module is None:
        import lm_eval.tasks.manager as manager_module
    import sys

    from .task_index_cache import install as install_cache

    # manager.py lives in lm-eval's task folder (``lm_eval.tasks`` is still being imported here); the lm_eval
    # package itself was imported first and knows its version.
    install_cache(manager_module.TaskIndex, Path(manager_module.__file__).parent, sys.modules["lm_eval"].__version__)


def install_models(registry_module=None) -> None:
    """Register our model types as lazy placeholders (imported only when used)."""
    if registry_module is None:
        import lm_eval.api.registry as registry_module
    # Built-ins load only while the registry is empty: load them first, or `--model hf` breaks.
    import lm_eval.models  # noqa: F401

    from .models import MODELS

    for name, target in MODELS.items():
        if name not in registry_module.model_registry:
            registry_module.model_registry.register(name, target=target)


def install_model_identity(huggingface_module=None) -> None:
    """Add ``model_identity`` (see :mod:`moral_tasks.model_identity`) to every ``--model hf`` result.

    lm-eval merges ``HFLM.get_model_info()`` into ``results["config"]``, so the
    identity lands in the results JSON next to ``model_args``.
    """
    if huggingface_module is None:
        import lm_eval.models.huggingface as huggingface_module

    cls = huggingface_module.HFLM
    if getattr(cls, "_moral_ambiguity_identity", False):
        return
    original = cls.get_model_info

    @functools.wraps(original)
    def get_model_info(self) -> dict:
        from .model_identity import hf_identity

        info = original(self)
        try:
            info["model_identity"] = hf_identity(self)
        except Exception as exc:  # called after every document is scored: never lose the run over it
            logging.getLogger(__name__).warning("moral-ambiguity: could not record the model identity: %r", exc)
            info["model_identity"] = {"error": repr(exc)}
        return info

    cls.get_model_info = get_model_info
    cls._moral_ambiguity_identity = True


def install_table(utils_module=None) -> None:
    """Print our tasks' rows of lm_eval's table in short form (the results JSON keeps every value whole).

    lm-eval prints every value as ``str(value)`` in one column, so one list of warnings or a
    full-precision interval made every row of the table hundreds of characters wide.
    """
    if utils_module is None:
        import lm_eval.utils as utils_module

    original = utils_module.make_table
    if getattr(original, "_moral_ambiguity_table", False):
        return

    @functools.wraps(original)
    def make_table(result_dict, column: str = "results", sort_results: bool = False):
        try:
            shown = _short_rows(result_dict, column)
        except Exception:  # only the display is ours: never lose lm-eval's table over it
            shown = result_dict
        return original(shown, column, sort_results)

    make_table._moral_ambiguity_table = True
    utils_module.make_table = make_table


def _short_rows(result_dict, column: str):
    rows = result_dict.get(column) if isinstance(result_dict, dict) else None
    if not isinstance(rows, dict):
        return result_dict
    # Our rows are the ones that report the samples format (moral_tasks.scoring.score_records).
    short = {task: {key: _short(key.partition(",")[0], value) for key, value in row.items()}
             if isinstance(row, dict) and "record_format,none" in row else row for task, row in rows.items()}
    return {**result_dict, column: short}


def _short(metric: str, value):
    if metric == "warnings" and isinstance(value, list):
        return f"{len(value)} (see the log or results JSON)" if value else "none"
    if metric == "no_readout" and isinstance(value, dict):
        return value.get("documents")
    if isinstance(value, list) and value and all(isinstance(v, (int, float)) or v is None for v in value):
        return "[" + ", ".join("None" if v is None else f"{v:.4g}" for v in value) + "]"
    if isinstance(value, dict):
        return "(see the results JSON)"
    return value
