"""moral_distribution: option probabilities vs human vote counts (moral-ambiguity).

The numbers are those of the lm-eval tasks ``moral_dilemmas`` /
``moral_anecdotes`` / ``moral_anecdotes_binary``: both call
``moral_tasks.metrics.compute_metrics``.
"""

import datasets
import evaluate

from moral_tasks.metrics import METRICS, compute_metrics, probs_to_logq

_DESCRIPTION = "How well a model's distribution over answer options matches the distribution of human votes: " + "; ".join(
    f"{m.name}: {m.description}" for m in METRICS
)
_KWARGS_DESCRIPTION = """
Args:
    predictions: list of lists, the model's probabilities over the K options (renormalised here).
    references: list of lists, human vote counts over the same K options (non-negative, at least one vote).
    fixed_concentration: Dirichlet scale s for `dirichlet_nll_fixed` (default: K).
Returns:
    dict: a float per metric, and the booleans `temperature_at_bound` and
    `dirichlet_concentration_at_bound` (true when that fit ran to its search bound;
    a warning is logged too, e.g. for a model worse than uniform).
Example:
    >>> metric = evaluate.load(moral_tasks.hf_evaluate.MODULE_PATH)
    >>> metric.compute(predictions=[[0.7, 0.3], [0.2, 0.8]], references=[[4, 1], [1, 4]])["acc"]
    1.0
"""
_CITATION = """\
@inproceedings{lourie2021scruples,
  title={Scruples: A Corpus of Community Ethical Judgments on 32,000 Real-Life Anecdotes},
  author={Lourie, Nicholas and Le Bras, Ronan and Choi, Yejin},
  booktitle={AAAI}, year={2021}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MoralDistribution(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float64")),
                    "references": datasets.Sequence(datasets.Value("float64")),
                }
            ),
        )

    def _compute(self, predictions, references, fixed_concentration=None):
        return compute_metrics(probs_to_logq(predictions), references, fixed_concentration)
