"""How model distributions are scored against human votes.

:mod:`.core` defines every metric (the single source of truth); :mod:`.best`
the BEST oracle ceiling; :mod:`.intervals` bootstrap intervals; :mod:`.reference`
the reference rows (uniform, prior, human); :mod:`.hf_evaluate` the same metrics
as a Hugging Face ``evaluate`` module.
"""

from .core import *  # noqa: F401,F403  (the metric functions are this package's public face)
from .core import __all__  # noqa: F401
