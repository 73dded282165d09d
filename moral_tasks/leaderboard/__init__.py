"""``moral-ambiguity leaderboard``: base models, adapters, API models and encoders side by side.

* :mod:`.config`: the board YAML;
* :mod:`.runner`: runs what has no cached result yet (the real ``lm_eval``);
* :mod:`.collect`: reads lm-eval results and samples, robust to its quirks;
* :mod:`.report`: reference rows, gap closed, paired comparisons, CSV and Markdown;
* :mod:`.html`: the self-contained HTML page with plots.
"""
