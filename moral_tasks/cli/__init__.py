"""The ``moral-ambiguity`` console script (:mod:`.main`) and its small commands."""
