"""``moral-ambiguity leaderboard``: base models, adapters, API models and encoders side by side.

* :mod:`.config`: the board YAML, validated as a whole;
* :mod:`.runner`: runs what has no cached result yet (the real ``lm_eval``);
* :mod:`.collect`: reads lm-eval results and samples (exact task names, records via :mod:`moral_tasks.records`);
* :mod:`.report`: reference rows per task, gap closed, paired tests with Holm, summary, provenance;
* :mod:`.tables`: CSV, Markdown and LaTeX;
* :mod:`.html`: the self-contained HTML page with plots; :mod:`.screenshot`: its PNG in headless Chromium.
"""
