"""The metrics as a Hugging Face ``evaluate`` module, loadable offline::

    import evaluate
    from moral_tasks.metrics.hf_evaluate import MODULE_PATH
    metric = evaluate.load(MODULE_PATH)
    metric.compute(predictions=[[0.7, 0.3]], references=[[4, 1]])
"""

from pathlib import Path

MODULE_PATH = str(Path(__file__).parent / "moral_distribution")
