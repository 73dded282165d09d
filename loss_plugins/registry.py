"""Loss registry: built-ins by name, third-party losses by entry point or ``module:Class``.

Third-party packages declare::

    [project.entry-points."moral_ambiguity.losses"]
    my_loss = "my_pkg.losses:MyLoss"

Entry points are listed without being imported; a plugin is imported only when
asked for by name, so a broken plugin can never take the built-ins down, and
when it is asked for, the error names it and where it came from.
"""

from __future__ import annotations

import importlib
import inspect
from importlib.metadata import EntryPoint, entry_points

ENTRY_POINT_GROUP = "moral_ambiguity.losses"
_BUILTINS: dict[str, type] = {}


class LossPluginError(LookupError):
    pass


def register_loss(name: str):
    """Class decorator: make a loss available as ``get_loss(name)``."""

    def decorate(cls):
        if name in _BUILTINS and _BUILTINS[name] is not cls:
            raise ValueError(f"loss {name!r} is already registered by {_BUILTINS[name].__module__}")
        _BUILTINS[name] = cls
        cls.name = name
        return cls

    return decorate


def _plugins() -> dict[str, EntryPoint]:
    found = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in _BUILTINS:  # a built-in name cannot be hijacked
            found.setdefault(ep.name, ep)
    return found


def list_losses() -> list[str]:
    """Names of the built-in and installed plugin losses (plugins are not imported)."""
    return sorted(set(_BUILTINS) | set(_plugins()))


def _import_object(spec: str, origin: str):
    module_name, _, attr = spec.partition(":")
    try:
        obj = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as exc:
        raise LossPluginError(f"loss plugin {origin} could not be loaded: {type(exc).__name__}: {exc}") from exc
    return obj


def get_loss(name: str) -> type:
    """The loss class called ``name``, or given as ``module:Class``; instantiate it to use it."""
    if name in _BUILTINS:
        return _BUILTINS[name]
    if ":" in name:
        cls = _import_object(name, f"{name!r}")
    else:
        plugins = _plugins()
        if name not in plugins:
            raise LossPluginError(f"unknown loss {name!r}; available: {', '.join(list_losses())} (or module:Class)")
        ep = plugins[name]
        dist = getattr(ep, "dist", None)
        origin = f"{name!r} ({ep.value}, entry point of {dist.name if dist else 'an installed package'})"
        cls = _import_object(ep.value, origin)
    if not is_loss_class(cls):
        raise LossPluginError(
            f"loss {name!r} is not a loss class but {_describe(cls)}; a loss is a class whose instances are called "
            "as loss(logits, counts) (see loss_plugins.VoteLoss)"
        )
    return cls


def is_loss_class(obj) -> bool:
    """A class whose instances are callable, checked without calling or instantiating anything."""
    return inspect.isclass(obj) and any("__call__" in vars(k) for k in obj.__mro__ if k is not object)


def _describe(obj) -> str:
    if inspect.isclass(obj):
        return f"the class {obj.__qualname__}, whose instances cannot be called"
    if inspect.ismodule(obj):
        return f"the module {obj.__name__}"
    named = getattr(obj, "__qualname__", None)
    return f"a {type(obj).__name__} ({named or repr(obj)[:60]})"


def make_loss(name: str):
    """An instance of the loss ``name``: a one-line :class:`LossPluginError` for anything that is not a loss."""
    cls = get_loss(name)
    try:
        return cls()
    except Exception as exc:
        raise LossPluginError(f"loss {name!r} could not be created: {type(exc).__name__}: {exc}") from exc
