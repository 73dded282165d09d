"""moral-ambiguity: distributional moral-judgment tasks for lm-evaluation-harness.

Kept import-free on purpose: the startup hook imports ``moral_tasks._startup``
in every Python process, so this package must cost nothing to import.
"""

__version__ = "0.1.0"
