"""Startup hook, imported from ``moral_ambiguity_lm_eval.pth`` in every Python process.

lm-eval 0.4.13 has no plugin discovery, so ``lm_eval --tasks moral_dilemmas``
would not find our tasks, nor ``--model hf-encoder-classifier`` our model
types. This hook waits, at no cost, for ``lm_eval.tasks.manager`` and
``lm_eval.api.registry`` to be imported, then adds our task folder to every
``TaskManager``'s include path and registers our model types; once
``lm_eval.models.huggingface`` is imported, it adds the model identity to
``--model hf`` results; once ``lm_eval.utils`` is, it shortens our rows of
the printed table (see :mod:`moral_tasks.lm_eval_plugin`).

Rules it keeps: it imports nothing heavy (only ``sys`` and ``importlib``), it
does nothing until lm-eval is imported, any failure turns into a warning, and
``MORAL_AMBIGUITY_DISABLE_HOOK=1`` switches it off (the .pth file checks that
before importing this module).
"""

import importlib.abc
import sys

# module -> the function of moral_tasks.lm_eval_plugin to call once it has run
_TARGETS = {"lm_eval.tasks.manager": "install", "lm_eval.api.registry": "install_models",
            "lm_eval.models.huggingface": "install_model_identity", "lm_eval.utils": "install_table"}


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, inner, installer: str):
        self._inner = inner
        self._installer = installer

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        try:
            from moral_tasks import lm_eval_plugin

            getattr(lm_eval_plugin, self._installer)(module)
        except Exception as exc:  # never break lm-eval because of us
            import warnings

            warnings.warn(f"moral-ambiguity: could not register with lm-eval ({exc!r})", stacklevel=2)


class _LmEvalFinder(importlib.abc.MetaPathFinder):
    def __init__(self, pending):
        self.pending = dict(pending)

    def find_spec(self, fullname, path, target=None):
        installer = self.pending.pop(fullname, None)
        if installer is None:
            return None
        if not self.pending:
            sys.meta_path.remove(self)
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None) if finder is not self else None
            spec = find(fullname, path, target) if find else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _PatchingLoader(spec.loader, installer)
                return spec
        return None


def _install_finder():
    pending = {}
    for name, installer in _TARGETS.items():
        if name in sys.modules:  # lm-eval already imported (e.g. the hook was imported late)
            from moral_tasks import lm_eval_plugin

            getattr(lm_eval_plugin, installer)(sys.modules[name])
        else:
            pending[name] = installer
    if pending and not any(isinstance(f, _LmEvalFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _LmEvalFinder(pending))


_install_finder()
