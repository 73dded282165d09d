"""Startup hook, imported from ``moral_ambiguity_lm_eval.pth`` in every Python process.

lm-eval 0.4.13 has no task-plugin discovery, so ``lm_eval --tasks
moral_dilemmas`` would not find our tasks.  This hook waits, at no cost, for
``lm_eval.tasks.manager`` to be imported and then adds our task folder to every
``TaskManager``'s include path (see :mod:`moral_tasks.lm_eval_plugin`).

Rules it keeps: it imports nothing heavy (only ``sys`` and ``importlib``), it
does nothing until lm-eval is imported, any failure turns into a warning, and
``MORAL_AMBIGUITY_DISABLE_HOOK=1`` switches it off (the .pth file checks that
before importing this module).
"""

import importlib.abc
import sys

_TARGET = "lm_eval.tasks.manager"


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, inner):
        self._inner = inner

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        try:
            from moral_tasks.lm_eval_plugin import install

            install(module)
        except Exception as exc:  # never break lm-eval because of us
            import warnings

            warnings.warn(f"moral-ambiguity: could not register tasks with lm-eval ({exc!r})", stacklevel=2)


class _LmEvalFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != _TARGET:
            return None
        sys.meta_path.remove(self)  # fire once; also keeps the lookup below from recursing
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _PatchingLoader(spec.loader)
                return spec
        return None


def _install_finder():
    if _TARGET in sys.modules:  # lm-eval already imported (e.g. the hook was imported late)
        from moral_tasks.lm_eval_plugin import install

        install(sys.modules[_TARGET])
    elif not any(isinstance(f, _LmEvalFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _LmEvalFinder())


_install_finder()
