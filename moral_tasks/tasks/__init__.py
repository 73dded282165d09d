"""lm-eval task YAMLs of moral-ambiguity (the ``lm_eval.tasks`` entry point names this folder)."""
