"""The API model types' error and the one-line report of it from the ``lm_eval`` command line.

``lm_eval`` has no handler for its model's errors: an uncaught exception prints a
Python traceback. Our errors are user errors (wrong key, server down, corrupt
cache), so the model type installs an ``excepthook`` that prints them as one line.
"""

from __future__ import annotations

import sys

MESSAGE_LIMIT = 300


class APIModelError(RuntimeError):
    """A failure that must stop the run rather than produce scores."""


def redact(text: str, secret: str | None, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` without ``secret``, on one line, then cut to ``limit`` characters (in that order:
    cutting first could leave a prefix of the key that no longer matches)."""
    if secret:
        text = text.replace(secret, "***")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _one_line_hook(previous):
    def hook(exc_type, exc, tb):
        if issubclass(exc_type, APIModelError):
            print(f"{sys.argv and sys.argv[0].rsplit('/', 1)[-1] or 'lm_eval'}: error: {exc}", file=sys.stderr)
            return
        previous(exc_type, exc, tb)

    hook.moral_ambiguity = True
    return hook


def install_excepthook() -> None:
    """Report an uncaught :class:`APIModelError` as ``lm_eval: error: ...`` (exit status 1)."""
    if not getattr(sys.excepthook, "moral_ambiguity", False):
        sys.excepthook = _one_line_hook(sys.excepthook)
